"""Robust fusion of candidate positions (numpy only), shared by retrieval, hybrid and ensemble.

A weighted density mode of candidate positions followed by a weighted geometric median of the candidates
that agree with it: one far-away look-alike, however similar, cannot drag the answer (it lands outside the
agreeing set). Everything works in east/north metres of the model's local frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def weighted_geometric_median(points: np.ndarray, weights: np.ndarray | None = None, iters: int = 64,
                              tol: float = 1e-4) -> np.ndarray:
    """Weiszfeld's algorithm: the point minimising sum_i w_i * |p - x_i|. Breakdown point 50%."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        raise ValueError("geometric median of zero points")
    w = np.ones(len(pts)) if weights is None else np.clip(np.asarray(weights, dtype=np.float64), 0, None)
    if w.sum() <= 0:
        w = np.ones(len(pts))
    if len(pts) == 1:
        return pts[0].copy()
    y = (pts * w[:, None]).sum(0) / w.sum()
    for _ in range(iters):
        d = np.hypot(*(pts - y).T)
        near = d < 1e-9
        if near.any():  # y sits on a data point: standard Weiszfeld modification (Vardi & Zhang)
            wz = w[near].sum()
            dn = np.where(near, 1.0, d)
            inv = np.where(near, 0.0, w / dn)
            if inv.sum() == 0:
                return y
            t = (pts * inv[:, None]).sum(0) / inv.sum()
            r = np.hypot(*((pts - y) * inv[:, None]).sum(0))
            eta = min(1.0, wz / r) if r > 0 else 1.0
            y_new = (1 - eta) * t + eta * y
        else:
            inv = w / d
            y_new = (pts * inv[:, None]).sum(0) / inv.sum()
        if np.hypot(*(y_new - y)) < tol:
            return y_new
        y = y_new
    return y


@dataclass
class Fused:
    center: np.ndarray            # (2,) east/north
    agree: np.ndarray             # (N,) bool: candidates that support the answer
    spread_m: float               # weighted RMS distance of agreeing candidates to the centre
    support: float                # fraction of total weight that agrees
    n_agree: int = 0
    extra: dict = field(default_factory=dict)


def robust_fuse(points: np.ndarray, weights: np.ndarray | None = None, bandwidth_m: float = 8.0,
                agree_m: float | None = None, method: str = "mode", median: bool = True) -> Fused:
    """Fuse candidate positions robustly.

    ``method``:
      * ``mode`` (default): the candidate with the highest weighted Gaussian kernel density (bandwidth
        ``bandwidth_m``) seeds a weighted mean-shift; candidates within ``agree_m`` (default 2.5 x bandwidth)
        of the mode agree, and the answer is their weighted geometric median (``median=False``: the mode
        itself, for callers that compute their own answer from ``agree``).
      * ``median``: weighted geometric median of all candidates (agreeing = within ``agree_m`` of it).
      * ``mean``: weighted mean (not robust; for comparison).
      * ``top1``: the highest-weight candidate.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    n = len(pts)
    if n == 0:
        raise ValueError("cannot fuse zero candidate positions")
    w = np.ones(n) if weights is None else np.clip(np.asarray(weights, dtype=np.float64), 0, None)
    if not np.isfinite(w).all() or w.sum() <= 0:
        w = np.ones(n)
    agree_m = 2.5 * bandwidth_m if agree_m is None else agree_m
    if method == "top1":
        c = pts[int(np.argmax(w))].copy()
    elif method == "mean":
        c = (pts * w[:, None]).sum(0) / w.sum()
    elif method == "median":
        c = weighted_geometric_median(pts, w)
    elif method == "mode":
        d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
        # a candidate counts half its own weight: a lone candidate needs corroboration to beat a cluster
        dens = (np.exp(-0.5 * d2 / bandwidth_m ** 2) * w[None, :]).sum(1) - 0.5 * w
        c = pts[int(np.argmax(dens))].copy()
        for _ in range(20):  # mean-shift from the densest candidate
            k = w * np.exp(-0.5 * ((pts - c) ** 2).sum(1) / bandwidth_m ** 2)
            if k.sum() <= 0:
                break
            c_new = (pts * k[:, None]).sum(0) / k.sum()
            if np.hypot(*(c_new - c)) < 1e-3:
                c = c_new
                break
            c = c_new
    else:
        raise ValueError(f"unknown fusion method {method!r}; use mode, median, mean or top1")
    dist = np.hypot(*(pts - c).T)
    agree = dist <= agree_m
    if not agree.any():
        agree = dist <= dist.min() + 1e-9
    if method in ("mode", "median") and median:
        c = weighted_geometric_median(pts[agree], w[agree])
        dist = np.hypot(*(pts - c).T)
    wa = w[agree]
    spread = float(np.sqrt((wa * dist[agree] ** 2).sum() / wa.sum()))
    return Fused(center=c, agree=agree, spread_m=spread, support=float(wa.sum() / w.sum()),
                 n_agree=int(agree.sum()))


def per_spot_weights(points: np.ndarray, weights: np.ndarray, spot_m: float = 1.5) -> np.ndarray:
    """Share weight among candidates whose labels sit on the same spot (within ``spot_m``).

    Several photos from one spot usually share one GPS fix error; counting them as independent would let
    one spot's label noise dominate. Each candidate's weight is divided by the summed kernel of its
    neighbours, so a spot counts roughly once, weighted by its best evidence.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    w = np.asarray(weights, dtype=np.float64)
    if len(pts) <= 1:
        return w.copy()
    d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    k = np.exp(-0.5 * d2 / spot_m ** 2)
    share = (k * w[None, :]).sum(1)
    return w * w / np.maximum(share, 1e-12)
