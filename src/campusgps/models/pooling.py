"""Pooling of convolutional feature maps (the one place GeM is written)."""
from __future__ import annotations

import numpy as np


def gem(maps: np.ndarray, p: float = 3.0, eps: float = 1e-6) -> np.ndarray:
    """Generalised-mean pooling of (N, C, h, w) maps -> (N, C)."""
    x = np.clip(maps.astype(np.float32, copy=False), eps, None)
    return np.power(np.power(x, p).mean(axis=(2, 3)), 1.0 / p).astype(np.float32)
