"""Regression heads: features -> position (east/north, normalised by the training extent) [+ log sigma]."""
from __future__ import annotations

from typing import Sequence

ACTIVATIONS = ("gelu", "silu")


def _make_head_class():
    import torch
    import torch.nn as nn

    class RegressionHead(nn.Module):
        """LayerNorm -> [Linear -> GELU/SiLU -> Dropout] x len(hidden) -> Linear(2 [+1]).

        Output: ``mu`` (N, 2) normalised east/north, and ``log_sigma`` (N,) (normalised units) when
        ``predict_sigma`` else None. Inputs with a spatial layout are average-pooled first.
        """

        def __init__(self, in_dim: int, hidden: Sequence[int] = (512, 256), dropout: float = 0.2,
                     activation: str = "gelu", predict_sigma: bool = True):
            super().__init__()
            if activation not in ACTIVATIONS:
                raise ValueError(f"activation must be one of {ACTIVATIONS}")
            act = nn.GELU if activation == "gelu" else nn.SiLU
            layers: list[nn.Module] = [nn.LayerNorm(in_dim)]
            d = in_dim
            for h in hidden:
                layers += [nn.Linear(d, h), act(), nn.Dropout(dropout)]
                d = h
            self.body = nn.Sequential(*layers)
            self.out = nn.Linear(d, 3 if predict_sigma else 2)
            self.predict_sigma = predict_sigma
            with torch.no_grad():  # start near the centroid with a moderate sigma
                self.out.weight.mul_(0.1)
                self.out.bias.zero_()

        def forward(self, x):
            if x.dim() > 2:
                x = x.float().mean(dim=tuple(range(2, x.dim())))
            y = self.out(self.body(x))
            mu = y[:, :2]
            log_sigma = y[:, 2].clamp(-8.0, 4.0) if self.predict_sigma else None
            return mu, log_sigma

    return RegressionHead


_CLS = None


def RegressionHead(*args, **kw):
    """Factory (keeps torch out of module import time)."""
    global _CLS
    if _CLS is None:
        _CLS = _make_head_class()
    return _CLS(*args, **kw)


def head_spec(in_dim: int, hidden, dropout: float, activation: str, predict_sigma: bool) -> dict:
    return {"in_dim": int(in_dim), "hidden": [int(h) for h in hidden], "dropout": float(dropout),
            "activation": activation, "predict_sigma": bool(predict_sigma)}


def head_from_spec(spec: dict):
    return RegressionHead(spec["in_dim"], spec["hidden"], spec["dropout"], spec["activation"], spec["predict_sigma"])
