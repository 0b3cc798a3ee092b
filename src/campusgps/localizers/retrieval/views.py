"""Photometric views of a photo: test-time augmentation variants and low-light (night, dusk) renderings.

Low-light renderings of every reference are indexed next to it (``night_views``) so night queries find
their place; ``dark_queries`` decides which queries may search them (``night_query_lum``).
"""
from __future__ import annotations

import numpy as np


def photometric_variants(img: np.ndarray) -> list[np.ndarray]:
    """Identity plus gamma brighten/darken and a contrast stretch (for TTA)."""
    a = img.astype(np.float32) / 255.0
    out = [img]
    for g in (0.7, 1.4):
        out.append(np.clip(255 * a ** g, 0, 255).astype(np.uint8))
    lo, hi = np.percentile(a, 2), np.percentile(a, 98)
    if hi - lo > 1e-3:
        out.append(np.clip(255 * (a - lo) / (hi - lo), 0, 255).astype(np.uint8))
    return out


def low_light_view(img: np.ndarray, kind: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """Deterministic-per-rng photometric 'night' or 'dusk' rendering of a photo (no geometric change).

    night: lower contrast, keep 20-45 % of the light, blue cast, slight blur and sensor noise (the seeds'
    night simulation, darker); dusk: keep 60-80 % of the light, warm (orange) tint, mild contrast loss.
    """
    import cv2

    rng = rng or np.random.default_rng(0)
    f = np.asarray(img, np.float32)
    mean = f.mean()
    if kind == "night":
        f = (f - mean) * rng.uniform(0.55, 0.75) + mean
        f = f * rng.uniform(0.2, 0.45) * np.float32([0.8, 0.9, 1.15])
        f = cv2.GaussianBlur(f, (0, 0), 0.7)
        f += rng.normal(0, 3.0, size=f.shape).astype(np.float32)
    elif kind == "dusk":
        f = (f - mean) * rng.uniform(0.8, 0.95) + mean
        f = f * rng.uniform(0.6, 0.8) * np.float32([1.05, 0.82, 0.65])
        f += rng.normal(0, 2.0, size=f.shape).astype(np.float32)
    else:
        raise ValueError(f"unknown low-light view {kind!r}")
    return np.clip(f, 0, 255).astype(np.uint8)


class LowLightView:
    """Feature-cache augmenter (``aug(image, rng)`` + ``key``) producing :func:`low_light_view` images."""

    def __init__(self, kind: str):
        self.kind = kind
        self.key = f"lowlight-{kind}-1"

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        return low_light_view(image, self.kind, rng)


def low_light_kind(view: int) -> str:
    """Extra reference view v (1-based): odd = night, even = dusk."""
    return "night" if view % 2 == 1 else "dusk"


def mean_luminance(image: np.ndarray) -> float:
    """Mean luminance (Rec. 601 weights, 0-255) of an RGB image."""
    return float((np.asarray(image, np.float32)[..., :3] @ np.float32([0.299, 0.587, 0.114])).mean())


def dark_queries(images: list[np.ndarray], threshold_lum: float) -> np.ndarray:
    """Which images are darker than ``threshold_lum`` (mean luminance, 0-255)."""
    return np.array([mean_luminance(im) < threshold_lum for im in images], bool)
