"""Error statistics in metres: the numbers every report, comparison and metrics.json is built from.

``summarize(errors_m)`` gives the contract's keys (``n, mean_m, median_m, p75_m, p90_m, p95_m, p99_m,
max_m, acc_5m, acc_10m, acc_20m, acc_50m``). Non-finite errors (images a model could not read) are not
part of the statistics; they are counted in ``n_failed`` so a report can say so.
"""
from __future__ import annotations

import numpy as np

ACC_THRESHOLDS_M = (5, 10, 20, 50)
PERCENTILES = (75, 90, 95, 99)
SUMMARY_KEYS = ("n", "n_failed", "mean_m", "median_m", *(f"p{p}_m" for p in PERCENTILES), "max_m",
                *(f"acc_{t}m" for t in ACC_THRESHOLDS_M))


def _r(x: float, nd: int = 3) -> float:
    return float(round(float(x), nd))


def summarize(errors_m) -> dict:
    """Distribution of localisation errors (metres) -> dict of the contract's keys.

    ``acc_Xm`` is the fraction (0..1) of located images within X metres. With no finite error every
    statistic is ``None`` and ``n`` is 0.
    """
    e = np.asarray(errors_m, dtype=np.float64).ravel()
    ok = np.isfinite(e)
    good = e[ok]
    out: dict = {"n": int(good.size), "n_failed": int((~ok).sum())}
    if good.size == 0:
        out.update({k: None for k in SUMMARY_KEYS if k not in out})
        return out
    out["mean_m"] = _r(good.mean())
    out["median_m"] = _r(np.median(good))
    for p in PERCENTILES:
        out[f"p{p}_m"] = _r(np.percentile(good, p))
    out["max_m"] = _r(good.max())
    for t in ACC_THRESHOLDS_M:
        out[f"acc_{t}m"] = _r((good <= t).mean(), 4)
    return out


def radius_coverage(errors_m, radius_m) -> dict:
    """How honest the predicted radii are: the fraction of images whose true error lies inside radius_m.

    A calibrated model (radius fitted for 90 % coverage) should show ``coverage`` near 0.9; far lower means
    overconfident radii, far higher means radii too large to be useful (see ``median_radius_m``).
    """
    e = np.asarray(errors_m, dtype=np.float64).ravel()
    r = np.asarray(radius_m, dtype=np.float64).ravel()
    ok = np.isfinite(e) & np.isfinite(r)
    if not ok.any():
        return {"n": 0, "coverage": None, "median_radius_m": None, "mean_radius_m": None}
    return {"n": int(ok.sum()), "coverage": _r((e[ok] <= r[ok]).mean(), 4),
            "median_radius_m": _r(np.median(r[ok])), "mean_radius_m": _r(r[ok].mean())}


def error_cdf(errors_m, max_m: float | None = None, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(x metres, fraction of images with error <= x) for plotting."""
    e = np.sort(np.asarray(errors_m, dtype=np.float64)[np.isfinite(errors_m)])
    if e.size == 0:
        return np.zeros(1), np.zeros(1)
    hi = max_m if max_m is not None else float(e[-1])
    x = np.linspace(0.0, max(hi, 1e-6), points)
    return x, np.searchsorted(e, x, side="right") / e.size


def grouped(errors_m, groups, radius_m=None, extra: dict | None = None) -> dict:
    """``summarize`` per group label (e.g. condition or area), in sorted group order.

    ``extra``: name -> second error array summarised per group under that name (e.g. ``vs_truth``).
    """
    e = np.asarray(errors_m, dtype=np.float64)
    g = np.asarray(groups, dtype=object)
    out: dict = {}
    for key in sorted({str(x) for x in g if x is not None and str(x) not in ("", "nan", "<NA>")}):
        m = np.array([str(x) == key for x in g])
        d = summarize(e[m])
        if radius_m is not None:
            d["radius_coverage"] = radius_coverage(e[m], np.asarray(radius_m)[m])["coverage"]
        for name, arr in (extra or {}).items():
            a = np.asarray(arr, dtype=np.float64)[m]
            d[name] = summarize(a)
            if radius_m is not None:
                d[name]["radius_coverage"] = radius_coverage(a, np.asarray(radius_m)[m])["coverage"]
        out[key] = d
    return out
