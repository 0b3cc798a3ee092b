"""Select settings on held-out photos, then calibrate ``radius_m``: the one implementation every method uses.

* :func:`choices` - a setting the user fixed (> 0) is the only candidate, 0 means "choose among these".
* :func:`grid_search` - try every candidate setting on held-out photos, keep the lowest (median, mean) error.
* :func:`calibrate_radius` - the radius scale that holds ``target`` of the held-out truths
  (``calibration.fit_radius_scale``, split-conformal), and the coverage it gives there.
* :func:`even_sample` - bound a fit's held-out set to at most ``max_n`` photos, spread evenly.

Used by retrieval (projection, fusion k/tau/bandwidth), hybrid (inlier threshold, power, bandwidth, ...) and
ensemble (calibration only); regression calibrates with ``calibration.calibration_info`` on its val split.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from campusgps.localizers.calibration import fit_radius_scale


def choices(fixed, candidates) -> list:
    """``[fixed]`` when the user set it (> 0), else the candidates to choose among."""
    return [fixed] if fixed > 0 else list(candidates)


def error_score(errors) -> tuple[float, float]:
    """(median, mean) error in metres: what selection minimises, median first."""
    err = np.asarray(errors, dtype=np.float64)
    return float(np.median(err)), float(err.mean())


def grid_search(candidates: Iterable[dict], evaluate: Callable[[dict], tuple]) -> dict:
    """Evaluate every candidate setting; ``evaluate(params) -> (errors, extra)`` on the held-out photos
    (``extra``: anything to keep for the winner, e.g. raw radii; ``extra["row"]`` adds columns to the table).

    Returns ``{"params", "median_m", "mean_m", "errors", "extra", "grid"}``; ties keep the first candidate.
    """
    best, table = None, []
    for params in candidates:
        errors, extra = evaluate(params)
        score = error_score(errors)
        table.append({**params, "median_m": score[0], "mean_m": score[1], **extra.get("row", {})})
        if best is None or score < best[0]:
            best = (score, params, errors, extra)
    (med, mean), params, errors, extra = best
    return {"params": params, "median_m": med, "mean_m": mean, "errors": np.asarray(errors), "extra": extra,
            "grid": table}


def calibrate_radius(raw_radius, errors, target: float, min_n: int = 1) -> tuple[float, float | None]:
    """(radius scale, coverage on these photos). Rows with a non-finite radius or error are ignored;
    with fewer than ``min_n`` usable rows the scale is 1 (raw radius kept)."""
    raw = np.asarray(raw_radius, dtype=np.float64)
    err = np.asarray(errors, dtype=np.float64)
    ok = np.isfinite(raw) & np.isfinite(err)
    scale = float(fit_radius_scale(raw[ok], err[ok], target=target)) if ok.sum() >= max(1, min_n) else 1.0
    cov = float(np.mean(err[ok] <= scale * raw[ok])) if ok.any() else None
    return scale, cov


def even_sample(n: int, max_n: int) -> np.ndarray:
    """Indices of at most ``max_n`` of ``n`` photos, evenly spread (all of them when n <= max_n)."""
    if n <= max_n:
        return np.arange(n)
    return np.linspace(0, n - 1, max_n).round().astype(int)
