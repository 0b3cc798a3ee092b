"""Per-file work of ``campusgps ingest`` (runs in worker processes): read, check, decode, store one photo."""
from __future__ import annotations

import hashlib
import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from campusgps.errors import ImageError


@dataclass
class Job:
    path: str                     # absolute path
    label: tuple[float, float] | None
    label_source: str             # exif | labels | correction
    dest_dir: str
    max_side: int
    quality: int
    max_pixels: int
    bbox: tuple[float, float, float, float] | None
    max_accuracy_m: float


def _reject(reason: str, message: str, **kw) -> dict:
    return {"ok": False, "reason": reason, "message": message, **kw}


def dhash64(im) -> int:
    """64-bit difference hash of a PIL image (robust to resizing and re-encoding)."""
    from PIL import Image

    g = np.asarray(im.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (g[:, 1:] > g[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


def _header(data: bytes, max_pixels: int):
    """Open the header only (no decode): metadata and the pixel-count check."""
    from PIL import Image, UnidentifiedImageError

    from campusgps.exif.metadata import meta_from_image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageError(f"{w}x{h} = {w * h / 1e6:.1f} MP exceeds the pixel limit "
                                     f"({max_pixels / 1e6:g} MP; raise --max-pixels if this is a real photo)",
                                     reason="decompression_bomb")
                return meta_from_image(im)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image (unknown format)", reason="not_an_image")
    except Image.DecompressionBombError as e:
        raise ImageError(f"decompression bomb ({e})", reason="decompression_bomb")
    except Exception as e:
        raise ImageError(f"unreadable image header ({type(e).__name__}: {e})", reason="unreadable")


def process_file(job: Job) -> dict:
    """Check, decode and store one photo. Returns a dict (``ok`` plus sample fields, or ``reason``)."""
    from PIL import Image

    from campusgps.exif.image import open_image

    try:
        data = Path(job.path).read_bytes()
    except OSError as e:
        return _reject("unreadable", f"cannot read file ({e.strerror or e})")
    sha = hashlib.sha256(data).hexdigest()
    try:
        meta = _header(data, job.max_pixels)
    except ImageError as e:
        return _reject(e.reason, str(e), sha256=sha)
    if job.label is not None:
        lat, lon = job.label
    elif meta.has_gps:
        lat, lon = meta.lat, meta.lon
    else:
        return _reject("no_gps", "no GPS position in EXIF and no row in the labels CSV", sha256=sha)
    if not (math.isfinite(lat) and math.isfinite(lon)) or not (-90 <= lat <= 90 and -180 <= lon <= 180) \
            or (abs(lat) < 1e-9 and abs(lon) < 1e-9):
        return _reject("zero_or_out_of_range", f"unusable position lat={lat}, lon={lon}", sha256=sha)
    if job.bbox is not None:
        a, b, c, d = job.bbox
        if not (a <= lat <= c and b <= lon <= d):
            return _reject("outside_bbox", f"lat={lat:.6f}, lon={lon:.6f} is outside --bbox", sha256=sha)
    acc = meta.accuracy_m if job.label_source == "exif" else None
    if job.max_accuracy_m > 0 and acc is not None and acc > job.max_accuracy_m:
        return _reject("low_accuracy", f"GPS accuracy {acc:.1f} m is worse than {job.max_accuracy_m:g} m",
                       sha256=sha)
    sid = sha[:16]
    dest = Path(job.dest_dir) / f"{sid}.jpg"
    stored = None
    if dest.exists():  # stored by an earlier (perhaps killed) run: written atomically, so complete
        try:
            with Image.open(dest) as prev:
                prev.load()
                stored = prev.copy()
        except Exception:
            stored = None
    if stored is None:
        try:
            im = open_image(data, max_pixels=job.max_pixels, draft_max_side=job.max_side)
        except ImageError as e:
            return _reject(e.reason, str(e).replace("<bytes>: ", ""), sha256=sha)
        if max(im.size) > job.max_side:
            im.thumbnail((job.max_side, job.max_side), Image.Resampling.BILINEAR, reducing_gap=None)
        from campusgps.exif.image import to_rgb_array

        stored = Image.fromarray(to_rgb_array(im))
        tmp = dest.with_name(f".{sid}.{os.getpid()}.tmp")
        stored.save(tmp, "JPEG", quality=job.quality)
        os.replace(tmp, dest)
    return {
        "ok": True, "sha256": sha, "id": sid, "width": stored.size[0], "height": stored.size[1],
        "lat": float(lat), "lon": float(lon),
        "alt": meta.alt, "accuracy_m": acc, "taken_at": meta.taken_at or "", "camera": meta.camera,
        "focal_35mm": meta.focal_35mm, "dhash": dhash64(stored),
    }
