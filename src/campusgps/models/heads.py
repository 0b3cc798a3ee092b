"""Regression heads: features -> position (east/north, normalised by the training extent) [+ log sigma].

Two kinds (``head_spec(..., cells=K)``):

* direct (``cells=0``): the MLP regresses east/north.
* cells  (``cells=K``): the MLP classifies the photo into K cells (k-means centres of the training positions,
  a buffer of the head) and the position is the probability-weighted mean of the cell centres -- during
  training over all cells (``soft``; differentiable, so distance losses still apply), at prediction time
  (``cell_predict="local"``, the default) only over the cells near the most likely one, so a photo that
  looks like two places is put at the likelier one instead of half-way between them. On the simulated
  small campus this halves the median error of direct regression (benchmarks/regression.py).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

ACTIVATIONS = ("gelu", "silu")
CELL_PREDICT = ("local", "soft")


def _make_head_class():
    import torch
    import torch.nn as nn

    class RegressionHead(nn.Module):
        """LayerNorm -> [Linear -> GELU/SiLU -> Dropout] x len(hidden) -> Linear(2 or K [+1]).

        ``forward(x)`` -> ``(mu, log_sigma)`` for a direct head, ``(mu, log_sigma, logits)`` for a cells head:
        ``mu`` (N, 2) normalised east/north, ``log_sigma`` (N,) (normalised units) or None without a sigma
        output, ``logits`` (N, K). Inputs with a spatial layout are average-pooled first.
        """

        def __init__(self, in_dim: int, hidden: Sequence[int] = (512, 256), dropout: float = 0.2,
                     activation: str = "gelu", predict_sigma: bool = True, cells: int = 0,
                     cell_bandwidth: float = 0.1, cell_predict: str = "local", cell_radius: float = 2.0):
            super().__init__()
            if activation not in ACTIVATIONS:
                raise ValueError(f"activation must be one of {ACTIVATIONS}")
            if cell_predict not in CELL_PREDICT:
                raise ValueError(f"cell_predict must be one of {CELL_PREDICT}")
            act = nn.GELU if activation == "gelu" else nn.SiLU
            layers: list[nn.Module] = [nn.LayerNorm(in_dim)]
            d = in_dim
            for h in hidden:
                layers += [nn.Linear(d, h), act(), nn.Dropout(dropout)]
                d = h
            self.body = nn.Sequential(*layers)
            self.n_cells = int(cells)
            self.predict_sigma = predict_sigma
            self.cell_bandwidth = float(cell_bandwidth)   # normalised units (soft-target kernel width)
            self.cell_predict = cell_predict
            self.cell_radius = float(cell_radius)         # "local": cells within this many bandwidths vote
            n_pos = self.n_cells if self.n_cells else 2
            self.out = nn.Linear(d, n_pos + (1 if predict_sigma else 0))
            if self.n_cells:
                self.register_buffer("centres", torch.zeros(self.n_cells, 2))
            with torch.no_grad():  # start near the centroid (direct) / uniform over cells, moderate sigma
                self.out.weight.mul_(0.1)
                self.out.bias.zero_()

        def set_centres(self, centres) -> None:
            with torch.no_grad():
                self.centres.copy_(torch.as_tensor(np.asarray(centres), dtype=torch.float32))

        def cell_targets(self, target):
            """Soft class targets: a Gaussian kernel (``cell_bandwidth``) of the distance to every centre."""
            d2 = ((target.float()[:, None] - self.centres[None]) ** 2).sum(-1)
            return torch.softmax(-d2 / (2 * self.cell_bandwidth ** 2), dim=1)

        def forward(self, x):
            if x.dim() > 2:
                x = x.float().mean(dim=tuple(range(2, x.dim())))
            y = self.out(self.body(x))
            log_sigma = y[:, -1].clamp(-8.0, 4.0) if self.predict_sigma else None
            if not self.n_cells:
                return y[:, :2], log_sigma
            logits = y[:, :self.n_cells]
            p = torch.softmax(logits.float(), dim=1)
            if not self.training and self.cell_predict == "local":
                # only the cells within cell_radius bandwidths of the most likely cell vote
                top = self.centres[p.argmax(1)]
                r = self.cell_radius * self.cell_bandwidth
                near = ((top[:, None] - self.centres[None]) ** 2).sum(-1) <= r * r
                p = p * near
                p = p / p.sum(1, keepdim=True).clamp_min(1e-12)
            return p @ self.centres, log_sigma, logits

    return RegressionHead


_CLS = None


def RegressionHead(*args, **kw):
    """Factory (keeps torch out of module import time)."""
    global _CLS
    if _CLS is None:
        _CLS = _make_head_class()
    return _CLS(*args, **kw)


def head_spec(in_dim: int, hidden, dropout: float, activation: str, predict_sigma: bool, centres=None,
              cell_bandwidth: float = 0.1, cell_predict: str = "local") -> dict:
    """JSON-able description of a head; ``centres`` ((K, 2) normalised positions) makes it a cells head."""
    spec = {"in_dim": int(in_dim), "hidden": [int(h) for h in hidden], "dropout": float(dropout),
            "activation": activation, "predict_sigma": bool(predict_sigma)}
    if centres is not None and len(centres):
        c = np.asarray(centres, np.float32)
        spec.update(cells=int(len(c)), centres=[[float(a), float(b)] for a, b in c],
                    cell_bandwidth=float(cell_bandwidth), cell_predict=str(cell_predict))
    return spec


def head_from_spec(spec: dict):
    head = RegressionHead(spec["in_dim"], spec["hidden"], spec["dropout"], spec["activation"], spec["predict_sigma"],
                          cells=spec.get("cells", 0), cell_bandwidth=spec.get("cell_bandwidth", 0.1),
                          cell_predict=spec.get("cell_predict", "local"))
    if spec.get("cells"):
        head.set_centres(np.asarray(spec["centres"], np.float32))
    return head


def kmeans_centres(points: np.ndarray, k: int, seed: int = 0, iters: int = 30) -> np.ndarray:
    """k-means (Lloyd, k-means++ start) of (N, 2) positions -> (min(k, #distinct), 2) float32 centres."""
    x = np.asarray(points, np.float64)
    uniq = np.unique(np.round(x, 9), axis=0)
    k = int(max(1, min(k, len(uniq))))
    rng = np.random.default_rng(seed)
    c = [uniq[rng.integers(len(uniq))]]
    d2 = ((x - c[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else None
        c.append(x[rng.choice(len(x), p=p)])
        d2 = np.minimum(d2, ((x - c[-1]) ** 2).sum(1))
    c = np.array(c)
    for _ in range(iters):
        a = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        new = np.array([x[a == j].mean(0) if (a == j).any() else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return c.astype(np.float32)


def cell_bandwidth(centres: np.ndarray, mult: float = 1.0) -> float:
    """``mult`` x the median distance from a centre to its nearest other centre (normalised units)."""
    c = np.asarray(centres, np.float64)
    if len(c) < 2:
        return 1.0
    d = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1)) + np.eye(len(c)) * 1e9
    return float(max(mult * np.median(d.min(1)), 1e-6))
