"""Pooling of convolutional feature maps (the one place GeM is written)."""
from __future__ import annotations

import numpy as np


def gem(maps: np.ndarray, p: float = 3.0, eps: float = 1e-6) -> np.ndarray:
    """Generalised-mean pooling of (N, C, h, w) maps -> (N, C)."""
    x = np.clip(maps.astype(np.float32, copy=False), eps, None)
    return np.power(np.power(x, p).mean(axis=(2, 3)), 1.0 / p).astype(np.float32)


def embed_in_batches(images, batch_size: int, feature_dim: int, pooling: str, desc: str, progress: bool,
                     pool_batch) -> np.ndarray:
    """(N, feature_dim) float32: ``pool_batch(images[s:s + batch_size])`` for each batch, with a progress bar.

    The batching loop of every backbone's ``embed``; ``pooling`` must be gap (global average) or gem (p=3)."""
    from campusgps.errors import UserError
    from campusgps.progress import progress_bar

    if pooling not in ("gap", "gem"):
        raise UserError(f"unknown pooling {pooling!r}; use gap or gem")
    out = np.empty((len(images), feature_dim), np.float32)
    bar = progress_bar(total=len(images), desc=desc, unit="img", enable=progress)
    for s in range(0, len(images), batch_size):
        y = pool_batch(images[s:s + batch_size])
        out[s:s + len(y)] = y
        bar.update(len(y))
    bar.close()
    return out
