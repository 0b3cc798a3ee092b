"""Robustness: the same test photos, degraded the way real phone photos are, located again.

Each perturbation is applied to the decoded image a model would see; the error is reported next to the
error of the clean image on the same subset (``ratio`` = perturbed median / clean median). To stay cheap
only a seeded subset (``max_images``, default 100) is used.
"""
from __future__ import annotations

import io
import time
from typing import Callable

import numpy as np

from campusgps.evaluation.metrics import summarize


def _rotate(img: np.ndarray, deg: float = 12.0) -> np.ndarray:
    """Camera roll: rotate, then crop the centre so no empty corners show, back to the original size."""
    from PIL import Image

    h, w = img.shape[:2]
    im = Image.fromarray(img).rotate(deg, resample=Image.BILINEAR, expand=False)
    a = np.radians(abs(deg))
    # largest axis-aligned rectangle of the same aspect inside the rotated image
    s = 1.0 / (np.cos(a) + max(w / h, h / w) * np.sin(a))
    cw, ch = max(1, int(w * s)), max(1, int(h * s))
    left, top = (w - cw) // 2, (h - ch) // 2
    return np.asarray(im.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BILINEAR))


def _perspective(img: np.ndarray, amount: float = 0.12) -> np.ndarray:
    """Camera tilted sideways: the right edge shrinks vertically (a keystone), borders replicated."""
    import cv2

    h, w = img.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dy, dx = amount * h, amount * w * 0.5
    dst = np.float32([[dx * 0.3, 0], [w - dx, dy], [w - dx, h - dy], [dx * 0.3, h]])
    m = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _darken(img: np.ndarray, gain: float = 0.35, gamma: float = 1.4) -> np.ndarray:
    """Dusk exposure: lower gain, crushed shadows, a little sensor noise."""
    x = (img.astype(np.float32) / 255.0) ** gamma * gain
    rng = np.random.default_rng(int(img[::7, ::7].sum()) % (2**32))
    x = x + rng.normal(0, 0.01, size=x.shape).astype(np.float32)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def _blur(img: np.ndarray, frac: float = 0.012) -> np.ndarray:
    """Motion/focus blur: Gaussian with sigma 1.2 % of the longer side."""
    from PIL import Image, ImageFilter

    r = max(1.0, frac * max(img.shape[:2]))
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=r)))


def _jpeg(img: np.ndarray, quality: int = 12) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def _occlude(img: np.ndarray, frac: float = 0.25) -> np.ndarray:
    """Something in front of the lens (a person, a bus): a flat grey block over 25 % of the frame."""
    h, w = img.shape[:2]
    rng = np.random.default_rng(int(img[::5, ::5].sum()) % (2**32))
    bh, bw = int(h * np.sqrt(frac)), int(w * np.sqrt(frac))
    y = int(rng.integers(0, max(1, h - bh)))
    x = int(rng.integers(0, max(1, w - bw)))
    out = img.copy()
    out[y:y + bh, x:x + bw] = (110, 110, 110)
    return out


PERTURBATIONS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "rotation": ("rolled 12°, centre crop", _rotate),
    "perspective": ("keystone tilt, 12 %", _perspective),
    "darkening": ("gain 0.35, gamma 1.4, noise", _darken),
    "blur": ("Gaussian, σ = 1.2 % of side", _blur),
    "jpeg": ("JPEG quality 12", _jpeg),
    "occlusion": ("grey block over 25 % of frame", _occlude),
}


def pick_subset(n: int, max_images: int, seed: int = 0) -> np.ndarray:
    if n <= max_images:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_images, replace=False))


def run_robustness(localizer, paths: list, ref_lat: np.ndarray, ref_lon: np.ndarray, clean_errors: np.ndarray,
                   max_images: int = 100, seed: int = 0, batch_size: int = 32,
                   perturbations: list[str] | None = None) -> dict:
    """Locate a subset of ``paths`` under each perturbation; errors against ``ref_lat/lon`` (truth or labels).

    ``clean_errors`` are the errors of the unmodified photos (same order as ``paths``), reused rather than
    recomputed. Returns ``{"n", "against", "rows": [{name, description, median_m, ..., ratio}]}``.
    """
    from campusgps.errors import ImageError
    from campusgps.exif import load_image
    from campusgps.geo import haversine_m

    idx = pick_subset(len(paths), max_images, seed)
    idx = idx[np.isfinite(np.asarray(clean_errors, float)[idx])]
    arrays, keep = [], []
    for i in idx:
        try:
            arrays.append(load_image(paths[i], max_side=localizer.input_max_side()))
            keep.append(i)
        except ImageError:
            continue
    keep = np.asarray(keep, dtype=int)
    clean = np.asarray(clean_errors, float)[keep]
    cs = summarize(clean)
    rows = [{"name": "clean", "description": "unmodified photos", "median_m": cs["median_m"], "mean_m": cs["mean_m"],
             "p90_m": cs["p90_m"], "acc_20m": cs["acc_20m"], "ratio": 1.0 if cs["n"] else None, "seconds": 0.0}]
    for name in perturbations or list(PERTURBATIONS):
        desc, fn = PERTURBATIONS[name]
        t0 = time.perf_counter()
        imgs = [fn(a) for a in arrays]
        pred = localizer.predict(imgs, batch_size=batch_size) if imgs else None
        err = (haversine_m(ref_lat[keep], ref_lon[keep], pred.lat, pred.lon) if pred is not None
               else np.zeros(0))
        s = summarize(err)
        ratio = (s["median_m"] / cs["median_m"] if s["median_m"] is not None and cs["median_m"] else None)
        rows.append({"name": name, "description": desc, "median_m": s["median_m"], "mean_m": s["mean_m"],
                     "p90_m": s["p90_m"], "acc_20m": s["acc_20m"],
                     "ratio": round(ratio, 3) if ratio is not None else None,
                     "seconds": round(time.perf_counter() - t0, 2)})
    return {"n": int(len(keep)), "rows": rows}
