"""From a query's ranked neighbours to a position: similarity weights + robust fusion, the raw radius, and
the choice of k / temperature / bandwidth on held-out photos (``selection.grid_search``)."""
from __future__ import annotations

import numpy as np

from campusgps.localizers.fusion import fuse_many, robust_fuse
from campusgps.localizers.selection import choices, grid_search


def fuse_one(ref_en: np.ndarray, sims: np.ndarray, idx: np.ndarray, k: int, tau: float, bw: float, method: str):
    """Fuse the top-``k`` neighbours (weights exp((s - s_top) / tau)). Returns (Fused, sims, rows) of the
    neighbours used."""
    sims, idx = sims[:k], idx[:k]
    ok = idx >= 0
    sims, idx = sims[ok], idx[ok]
    pts = ref_en[idx]
    w = np.exp((sims - sims.max()) / max(tau, 1e-6))
    f = robust_fuse(pts, w, bandwidth_m=bw, method=method)
    return f, sims, idx


def fuse_with(ref_en: np.ndarray, sims: np.ndarray, idx: np.ndarray, fusion: dict):
    """:func:`fuse_one` with a model's chosen settings (``fusion``: k, tau, bandwidth_m, method)."""
    return fuse_one(ref_en, sims, idx, fusion["k"], fusion["tau"], fusion["bandwidth_m"], fusion["method"])


def raw_radius(f, bw: float) -> float:
    """Uncalibrated radius: spread of the agreeing neighbours (+ a quarter bandwidth), wider when few agree."""
    return float(np.sqrt(f.spread_m ** 2 + (0.25 * bw) ** 2) / max(f.support, 0.2) ** 0.5)


def _candidates(cfg):
    for k in choices(cfg.k, [1, 3, 5, 10, 20]):
        taus = choices(cfg.tau, [0.02, 0.05, 0.15])
        bws = choices(cfg.bandwidth_m, [4.0, 8.0, 16.0])
        for tau in (taus if k > 1 else taus[:1]):
            for bw in (bws if k > 1 else bws[:1]):
                yield {"k": k, "tau": tau, "bandwidth_m": bw}


def fuse_centres(ref_en: np.ndarray, S: np.ndarray, I: np.ndarray, k: int, tau: float, bw: float,
                 method: str) -> np.ndarray:
    """:func:`fuse_one`'s centre for every row of a search (S, I) at once (``fusion.fuse_many``); rows
    without any neighbour give NaN."""
    sims, idx = np.asarray(S, np.float64)[:, :k], np.asarray(I)[:, :k]
    valid = idx >= 0
    out = np.full((len(idx), 2), np.nan)
    has = valid.any(1)
    if not has.any():
        return out
    sims, idx, valid = sims[has], idx[has], valid[has]
    top = np.where(valid, sims, -np.inf).max(1, keepdims=True)
    w = np.where(valid, np.exp((np.where(valid, sims, 0.0) - top) / max(tau, 1e-6)), 0.0)
    out[has] = fuse_many(ref_en[np.maximum(idx, 0)], w, valid, bw, method=method)
    return out


def select_fusion(ref_en: np.ndarray, S: np.ndarray, I: np.ndarray, truth_en: np.ndarray, cfg) -> dict:
    """Choose k, tau, bandwidth minimising the median (then mean) error on held-out queries."""
    def evaluate(p):
        c = fuse_centres(ref_en, S, I, p["k"], p["tau"], p["bandwidth_m"], cfg.fusion)
        return np.hypot(*(c - truth_en).T), {}

    r = grid_search(_candidates(cfg), evaluate)
    return {**r["params"], "val_median_m": r["median_m"], "val_mean_m": r["mean_m"], "grid": r["grid"]}
