"""Error statistics in metres: the numbers every report, comparison and metrics.json is built from.

``summarize(errors_m)`` gives the contract's keys (``n, mean_m, median_m, p75_m, p90_m, p95_m, p99_m,
max_m, acc_5m, acc_10m, acc_20m, acc_50m``). Non-finite errors (images a model could not read) are not
part of the statistics; they are counted in ``n_failed`` so a report can say so. ``paired_difference``
says whether one model's statistic really differs from another's on the same images (paired bootstrap).
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


def _stat(e: np.ndarray, stat: str) -> np.ndarray:
    """``stat`` of every row of ``e`` (rows = bootstrap resamples): median, mean, pNN or accNN (share <= NN m)."""
    if stat == "median":
        return np.median(e, axis=-1)
    if stat == "mean":
        return e.mean(axis=-1)
    if stat.startswith("p") and stat[1:].isdigit():
        return np.percentile(e, float(stat[1:]), axis=-1)
    if stat.startswith("acc") and stat[3:].isdigit():
        return (e <= float(stat[3:])).mean(axis=-1)
    raise ValueError(f"unknown statistic {stat!r} (median, mean, pNN, accNN)")


def _resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) indices of bootstrap resamples of n images (seeded: the same numbers on every run)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_interval(errors, stat: str = "median", level: float = 0.9, n_boot: int = 2000,
                       seed: int = 0) -> dict:
    """``stat`` of one model's errors with its bootstrap interval over the images: how far the number could
    move on another draw of as many photos (``value``, ``lo``, ``hi``, ``n``; None without images)."""
    e = np.asarray(errors, dtype=np.float64).ravel()
    e = e[np.isfinite(e)]
    if e.size == 0:
        return {"n": 0, "value": None, "lo": None, "hi": None}
    lo, hi = np.quantile(_stat(e[_resamples(e.size, n_boot, seed)], stat), [(1 - level) / 2, (1 + level) / 2])
    return {"n": int(e.size), "value": _r(_stat(e[None], stat)[0]), "lo": _r(lo), "hi": _r(hi)}


def paired_difference(errors_a, errors_b, stat: str = "median", level: float = 0.9, n_boot: int = 2000,
                      seed: int = 0) -> dict:
    """How sure is "B beats A"? ``stat(B) - stat(A)`` over the same images, with a paired bootstrap interval.

    ``errors_a``/``errors_b``: errors of two models on the *same* images, in the same order (images either
    could not place are left out of both). Resampling images (not the two models separately) keeps what
    they share, so a difference smaller than the spread of one 300-photo median can still be told apart
    from noise, or not: ``significant`` is True when the ``level`` interval excludes 0. Returns ``n``,
    ``a``, ``b``, ``diff`` and ``lo``/``hi`` (None without images)."""
    a = np.asarray(errors_a, dtype=np.float64).ravel()
    b = np.asarray(errors_b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired errors need the same images: {a.size} vs {b.size}")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size == 0:
        return {"n": 0, "a": None, "b": None, "diff": None, "lo": None, "hi": None, "significant": False}
    idx = _resamples(a.size, n_boot, seed)
    lo, hi = np.quantile(_stat(b[idx], stat) - _stat(a[idx], stat), [(1 - level) / 2, (1 + level) / 2])
    sa, sb = float(_stat(a[None], stat)[0]), float(_stat(b[None], stat)[0])
    return {"n": int(a.size), "a": _r(sa), "b": _r(sb), "diff": _r(sb - sa), "lo": _r(lo), "hi": _r(hi),
            "significant": bool(lo > 0 or hi < 0)}


def format_difference(d: dict, nd: int = 2, scale: float = 1.0, unit: str = "", mark: bool = False) -> str:
    """``+0.43 [-0.01, +0.88]``: a ``paired_difference`` result (``diff``, ``lo``, ``hi``) scaled and rounded to
    ``nd`` decimals; ``unit`` after the difference; ``mark``: a ``*`` when the interval excludes 0."""
    diff, lo, hi = (d[k] * scale for k in ("diff", "lo", "hi"))
    star = "*" if mark and (lo > 0 or hi < 0) else ""
    return f"{diff:+.{nd}f}{unit} [{lo:+.{nd}f}, {hi:+.{nd}f}]{star}"


def median_interval(errors_m, level: float = 0.9) -> dict | None:
    """metrics.json's ``median_interval``: the median's bootstrap interval over the photos (``lo_m``, ``hi_m``,
    ``level``), or None without photos. Two models whose medians differ by less than this width may not
    differ at all on another draw of photos (``compare`` tests that pairwise)."""
    b = bootstrap_interval(errors_m, "median", level)
    return None if not b["n"] else {"lo_m": b["lo"], "hi_m": b["hi"], "level": level}
