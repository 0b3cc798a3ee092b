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


def _geometric_medians(pts: np.ndarray, w: np.ndarray, valid: np.ndarray, iters: int = 64,
                       tol: float = 1e-4) -> np.ndarray:
    """``weighted_geometric_median`` of every row at once: ``pts`` (M, K, 2), weights ``w`` (M, K) of the
    entries marked ``valid`` (each row has one). Each row stops where the one-row algorithm would."""
    w = np.where(valid, w, 0.0)
    w = np.where((w.sum(1) <= 0)[:, None], valid.astype(np.float64), w)  # no weight: all count alike
    y = (pts * w[..., None]).sum(1) / w.sum(1)[:, None]
    single = valid.sum(1) == 1
    y[single] = pts[single][valid[single]]
    active = ~single
    for _ in range(iters):
        a = np.nonzero(active)[0]
        if not len(a):
            break
        P, W, V, Y = pts[a], w[a], valid[a], y[a]
        d = np.hypot(*(P - Y[:, None, :]).transpose(2, 0, 1))
        near = (d < 1e-9) & V
        inv = np.where(near | ~V, 0.0, W / np.where(near | ~V, 1.0, d))
        isum = inv.sum(1)
        t = (P * inv[..., None]).sum(1) / np.where(isum > 0, isum, 1.0)[:, None]
        # on a data point (Vardi & Zhang): step towards t by at most the point's own weight
        r = np.hypot(*((P - Y[:, None, :]) * inv[..., None]).sum(1).T)
        wz = np.where(near, W, 0.0).sum(1)
        eta = np.where(r > 0, np.minimum(1.0, wz / np.where(r > 0, r, 1.0)), 1.0)
        on_point = near.any(1)
        y_new = np.where(on_point[:, None], (1 - eta)[:, None] * t + eta[:, None] * Y, t)
        stuck = on_point & (isum == 0)  # a data point holding all the weight: that is the median
        y_new[stuck] = Y[stuck]
        done = stuck | (np.hypot(*(y_new - Y).T) < tol)
        y[a] = y_new
        active[a[done]] = False
    return y


def fuse_many(points: np.ndarray, weights: np.ndarray, valid: np.ndarray, bandwidth_m: float,
              agree_m: float | None = None, method: str = "mode") -> np.ndarray:
    """The centres ``robust_fuse`` gives, for many candidate sets at once (a grid search evaluates
    thousands): ``points`` (M, K, 2) and ``weights`` (M, K), of which the entries marked ``valid`` are
    candidates (every row needs one). The same algorithm and, row by row, the same stopping rules."""
    pts = np.asarray(points, dtype=np.float64)
    valid = np.asarray(valid, bool)
    w = np.where(valid, np.clip(np.asarray(weights, dtype=np.float64), 0, None), 0.0)
    bad = ~np.isfinite(w).all(1) | (w.sum(1) <= 0)
    w[bad] = valid[bad]
    rows = np.arange(len(pts))
    agree_m = 2.5 * bandwidth_m if agree_m is None else agree_m
    if method == "top1":
        return pts[rows, np.argmax(np.where(valid, w, -1.0), axis=1)].copy()
    if method == "mean":
        return (pts * w[..., None]).sum(1) / w.sum(1)[:, None]
    if method == "median":
        c = _geometric_medians(pts, w, valid)
    elif method == "mode":
        d2 = ((pts[:, :, None, :] - pts[:, None, :, :]) ** 2).sum(-1)
        dens = (np.exp(-0.5 * d2 / bandwidth_m ** 2) * w[:, None, :]).sum(2) - 0.5 * w
        c = pts[rows, np.argmax(np.where(valid, dens, -np.inf), axis=1)].copy()
        active = np.ones(len(pts), bool)
        for _ in range(20):  # mean-shift from the densest candidate, each row until it converges
            a = np.nonzero(active)[0]
            if not len(a):
                break
            k = w[a] * np.exp(-0.5 * ((pts[a] - c[a][:, None, :]) ** 2).sum(2) / bandwidth_m ** 2)
            ks = k.sum(1)
            dead = ks <= 0
            c_new = (pts[a] * k[..., None]).sum(1) / np.where(dead, 1.0, ks)[:, None]
            step = np.hypot(*(c_new - c[a]).T)
            c[a[~dead]] = c_new[~dead]
            active[a[dead | (step < 1e-3)]] = False
    else:
        raise ValueError(f"unknown fusion method {method!r}; use mode, median, mean or top1")
    dist = np.where(valid, np.hypot(*(pts - c[:, None, :]).transpose(2, 0, 1)), np.inf)
    agree = dist <= agree_m
    none = ~agree.any(1)
    agree[none] = dist[none] <= dist[none].min(1, keepdims=True) + 1e-9
    return _geometric_medians(pts, w, agree)


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
