"""Decode photos safely: orientation applied, pixel-count bounded, big JPEGs decoded cheaply (draft mode).

Every failure raises :class:`campusgps.errors.ImageError` with a ``reason`` tag used in ``rejected.csv``:
``not_an_image``, ``truncated``, ``decompression_bomb``, ``unreadable``, ``too_small``.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from campusgps.errors import ImageError

try:  # HEIC/HEIF support (iPhone photos)
    import pillow_heif

    pillow_heif.register_heif_opener()
except Exception:  # pragma: no cover - optional at import time, required by pyproject
    pillow_heif = None

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: far above any phone photo, far below a decompression bomb
ImageFile.LOAD_TRUNCATED_IMAGES = False

ImageSource = Union[str, Path, bytes, np.ndarray, Image.Image]


def open_image(src: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, draft_max_side: int | None = None
               ) -> Image.Image:
    """Open ``src`` (path or bytes) as a PIL image with EXIF orientation applied, fully decoded.

    ``draft_max_side`` lets JPEG decoding subsample by 1/2, 1/4 or 1/8 while staying >= that size,
    which makes 12 MP photos several times cheaper to ingest.
    """
    name = str(src) if isinstance(src, (str, Path)) else "<bytes>"
    try:
        fp = io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(fp)
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"{name}: {w}x{h} = {w * h / 1e6:.0f} MP exceeds the pixel limit "
                                 f"({max_pixels / 1e6:.0f} MP)", reason="decompression_bomb")
            if draft_max_side and im.format in ("JPEG", "MPO") and max(w, h) > 2 * draft_max_side:
                scale = draft_max_side / max(w, h)
                im.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))
            im.load()
            im = _to_8bit(ImageOps.exif_transpose(im))
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name}: file not found", reason="missing")
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (unknown format)", reason="not_an_image")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: decompression bomb ({e})", reason="decompression_bomb")
    except OSError as e:
        msg = str(e).lower()
        reason = "truncated" if ("truncated" in msg or "premature" in msg or "broken data" in msg) else "unreadable"
        raise ImageError(f"{name}: {reason.replace('_', ' ')} image ({e})", reason=reason)
    except Exception as e:  # corrupt headers raise assorted errors inside plugins
        raise ImageError(f"{name}: unreadable image ({type(e).__name__}: {e})", reason="unreadable")
    return im


_HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float single-channel images (thermal cameras, scientific TIFFs) -> 8-bit ``L``.

    The 0.5..99.5 percentile range is stretched to 0..255: a thermal frame holds raw sensor counts in a
    narrow band (e.g. 29 000..29 600 of 65 535), which divided by the maximum would be a flat grey.
    Pillow also cannot shrink these modes with ``reduce`` (thumbnail fails with "image has wrong mode").
    """
    if im.mode not in _HIGH_DEPTH:
        return im
    a = np.asarray(im, dtype=np.float64)
    fin = a[np.isfinite(a)]
    lo, hi = (np.percentile(fin, [0.5, 99.5]) if fin.size else (0.0, 1.0))
    if not hi > lo:
        lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 1.0)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    a = np.nan_to_num((a - lo) * scale, nan=0.0).clip(0, 255).round().astype(np.uint8)
    return Image.fromarray(a, mode="L")


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Any PIL mode (L, LA, P, RGBA, I;16, CMYK, F) -> (H, W, 3) uint8 RGB."""
    im = _to_8bit(im)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def as_rgb_array(image: np.ndarray) -> np.ndarray:
    """Normalise an in-memory array to (H, W, 3) uint8 RGB (grayscale, RGBA, 16-bit and float accepted)."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or min(a.shape[:2]) < 1:
        raise ImageError(f"array of shape {a.shape} is not an image; expected (H, W, 3) RGB", reason="not_an_image")
    if a.dtype == np.uint16:
        a = (a / 257.0).round().astype(np.uint8)
    elif a.dtype.kind == "f":
        a = (np.clip(a, 0, 1) * 255.0 if a.max(initial=0) <= 1.0 else np.clip(a, 0, 255)).round().astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        rgb, alpha = a[:, :, :3].astype(np.float32), a[:, :, 3:4].astype(np.float32) / 255.0
        a = (rgb * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(a)


def load_image(src: ImageSource, max_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Load ``src`` as (H, W, 3) uint8 RGB with orientation applied, optionally shrunk to ``max_side``.

    Accepts a path, raw bytes, a PIL image or a numpy array (returned normalised).
    """
    if isinstance(src, np.ndarray):
        a = as_rgb_array(src)
        if max_side and max(a.shape[:2]) > max_side:
            im = Image.fromarray(a)
            im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
            a = np.asarray(im)
        return a
    im = src if isinstance(src, Image.Image) else open_image(src, max_pixels=max_pixels, draft_max_side=max_side)
    if max_side and max(im.size) > max_side:
        im = im.copy() if im is src else im
        im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return to_rgb_array(im)
