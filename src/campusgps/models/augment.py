"""Augmentation that keeps the photo's position meaningful (numpy + OpenCV; no torchvision).

Allowed: small rotation (+-5 deg), mild perspective (~0.2), colour jitter, night simulation (darken 40-70 %,
lower contrast, blue cast, sensor noise), random erasing, grayscale. Deliberately absent: horizontal flip
(mirrors the campus: left/right buildings swap) and aggressive random-resized-crop (throws away the
context that pins the position) -- both measured to hurt geolocation.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    rotation_deg: float = 5.0        # uniform in +-rotation_deg
    perspective: float = 0.2         # corner displacement as a fraction of the image side (max)
    p_perspective: float = 0.5
    brightness: float = 0.25         # multiplicative jitter +-
    contrast: float = 0.25
    saturation: float = 0.3
    hue_deg: float = 6.0
    p_night: float = 0.2             # darken 40-70 %, lower contrast
    p_erase: float = 0.3             # random erasing of one rectangle (2-15 % of the area)
    p_gray: float = 0.1
    min_scale: float = 0.9           # mild zoom (scale in [min_scale, 1]); NOT a random-resized-crop


class Augmenter:
    """``aug(image, rng) -> image``: uint8 RGB in, uint8 RGB out (same size). ``key`` identifies settings."""

    def __init__(self, config: AugmentConfig | None = None, **overrides):
        cfg = config or AugmentConfig()
        if overrides:
            from dataclasses import replace

            cfg = replace(cfg, **overrides)
        self.config = cfg
        self.key = "aug" + hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:10]

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        import cv2

        rng = rng or np.random.default_rng()
        c = self.config
        img = np.ascontiguousarray(image)
        h, w = img.shape[:2]
        # geometry: one warp combining rotation, mild zoom and perspective; reflect the border
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        ang = np.radians(rng.uniform(-c.rotation_deg, c.rotation_deg))
        scale = 1.0 / rng.uniform(c.min_scale, 1.0)  # zoom in slightly so rotation leaves few borders
        cx, cy = w / 2, h / 2
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]]) * scale
        dst = (src - [cx, cy]) @ rot.T + [cx, cy]
        if c.perspective > 0 and rng.random() < c.p_perspective:
            dst = dst + rng.uniform(-0.5, 0.5, size=(4, 2)) * c.perspective * np.array([w, h])
        m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
        img = cv2.warpPerspective(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

        f = img.astype(np.float32)
        # colour jitter: brightness, contrast, saturation, hue
        f *= rng.uniform(1 - c.brightness, 1 + c.brightness)
        mean = f.mean()
        f = (f - mean) * rng.uniform(1 - c.contrast, 1 + c.contrast) + mean
        gray = f @ np.float32([0.299, 0.587, 0.114])
        f = gray[..., None] + (f - gray[..., None]) * rng.uniform(1 - c.saturation, 1 + c.saturation)
        if c.hue_deg > 0:
            f = np.clip(f, 0, 255)
            hsv = cv2.cvtColor(f.astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
            hsv[..., 0] = (hsv[..., 0] + rng.uniform(-c.hue_deg, c.hue_deg) / 2) % 180  # OpenCV hue: 0..180
            f = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
        if rng.random() < c.p_night:
            f = night(f, rng)
        if rng.random() < c.p_gray:
            g = f @ np.float32([0.299, 0.587, 0.114])
            f = np.repeat(g[..., None], 3, axis=2)
        if rng.random() < c.p_erase:
            area = rng.uniform(0.02, 0.15) * h * w
            ar = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
            eh, ew = int(min(h, np.sqrt(area * ar))), int(min(w, np.sqrt(area / ar)))
            y0, x0 = rng.integers(0, h - eh + 1), rng.integers(0, w - ew + 1)
            f[y0:y0 + eh, x0:x0 + ew] = rng.uniform(0, 255, size=3)
        return np.clip(f, 0, 255).astype(np.uint8)


def night(f: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Simulate a night photo: darken 40-70 %, lower contrast, blue-ish cast, sensor noise."""
    f = np.asarray(f, np.float32)
    dark = rng.uniform(0.3, 0.6)                      # keep 30-60 % of the light
    mean = f.mean()
    f = (f - mean) * rng.uniform(0.5, 0.8) + mean      # lower contrast
    f = f * dark * np.float32([0.85, 0.9, 1.1])
    f += rng.normal(0, 3.0, size=f.shape).astype(np.float32)
    return f
