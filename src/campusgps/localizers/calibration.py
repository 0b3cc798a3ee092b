"""Calibrated radius: scale each method's raw radius so the truth falls inside it for ~``target`` of photos.

``fit_radius_scale(raw_radius, errors, target=0.9)`` returns the smallest s such that
``errors <= s * raw_radius`` holds for a fraction >= target of the validation photos (with the split-conformal
finite-sample correction, so the guarantee holds on new photos from the same distribution).
A constant ``raw_radius`` (methods without a per-image uncertainty) gives the validation error quantile.
"""
from __future__ import annotations

import math

import numpy as np


def fit_radius_scale(raw_radius, errors, target: float = 0.9) -> float:
    raw = np.asarray(raw_radius, dtype=np.float64).ravel()
    err = np.asarray(errors, dtype=np.float64).ravel()
    if raw.shape != err.shape:
        raise ValueError(f"raw_radius and errors differ in length ({raw.size} vs {err.size})")
    if not 0.0 < target < 1.0:
        raise ValueError(f"target coverage must be in (0, 1), got {target}")
    ok = np.isfinite(raw) & np.isfinite(err) & (raw > 0)
    if not ok.any():
        return 1.0
    ratios = np.sort(err[ok] / raw[ok])
    n = ratios.size
    k = min(n, int(math.ceil((n + 1) * target)))  # conformal rank
    return float(max(ratios[k - 1], 1e-9))


def coverage(radius, errors) -> float:
    """Fraction of photos whose error is within the radius."""
    r = np.asarray(radius, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    ok = np.isfinite(r) & np.isfinite(e)
    return float((e[ok] <= r[ok]).mean()) if ok.any() else float("nan")


def calibration_info(raw_radius, errors, target: float = 0.9) -> dict:
    """Scale plus the coverage it gives on the data it was fitted on (for bundle metadata)."""
    s = fit_radius_scale(raw_radius, errors, target)
    raw = np.asarray(raw_radius, dtype=np.float64)
    return {"radius_scale": s, "target": target, "n": int(np.isfinite(raw).sum()),
            "val_coverage": coverage(raw * s, errors)}
