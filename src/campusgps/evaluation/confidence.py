"""How much a model's confidence, radius and alternatives can be trusted, from plain arrays.

``confidence_report(error_m, confidence, radius_m, alternatives_error_m)`` gives the ``confidence`` block of
metrics.json:

* ``auc``: ROC AUC of ``confidence`` for "error <= 20 m" (0.5 is a coin, 1 a perfect ranking);
* ``reliability`` (5 equal-width bins of confidence: mean confidence vs fraction right) and ``ece``, the
  expected calibration error (bin-size weighted |fraction right - mean confidence|);
* ``risk_coverage``: error P50/P90 of the most confident x % of answers, x = 10, 20, ..., 100;
* ``high_confidence``: share of answers with confidence >= 0.8 and how many of those are right;
* ``radius``: coverage (error <= radius_m) overall and per confidence third, the AUC of ``radius_m`` for
  "error > 20 m" (a useful radius is large exactly when the answer is wrong) and median radius / error;
* ``top3_recall``: fraction whose answer or one of its (up to two) alternatives lies within 20 m.

Rows with a non-finite error or confidence are left out (images a model could not read).
"""
from __future__ import annotations

import numpy as np

RIGHT_M = 20.0
N_BINS = 5
HIGH_CONFIDENCE = 0.8


def _r(x, nd: int = 4):
    return None if x is None or not np.isfinite(x) else float(round(float(x), nd))


def roc_auc(scores, positive) -> float | None:
    """ROC AUC of ``scores`` for the boolean ``positive``; None when only one class is present."""
    from sklearn.metrics import roc_auc_score

    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(positive, dtype=bool).ravel()
    ok = np.isfinite(s)
    s, y = s[ok], y[ok]
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, s))


def reliability(confidence, right, n_bins: int = N_BINS) -> tuple[list[dict], float | None]:
    """Equal-width bins over [0, 1]: per bin ``lo, hi, n, mean_confidence, fraction_right``; plus the ECE."""
    c = np.clip(np.asarray(confidence, dtype=np.float64).ravel(), 0.0, 1.0)
    y = np.asarray(right, dtype=bool).ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(c, edges[1:-1], right=False), 0, n_bins - 1)
    table, ece = [], 0.0
    for b in range(n_bins):
        m = which == b
        row = {"lo": _r(edges[b], 3), "hi": _r(edges[b + 1], 3), "n": int(m.sum()),
               "mean_confidence": None, "fraction_right": None}
        if m.any():
            mc, fr = float(c[m].mean()), float(y[m].mean())
            row.update(mean_confidence=_r(mc), fraction_right=_r(fr))
            ece += m.sum() / len(c) * abs(fr - mc)
        table.append(row)
    return table, (_r(ece) if len(c) else None)


def risk_coverage(error_m, confidence, fractions=None) -> list[dict]:
    """Errors of the most confident answers: for each kept fraction x, P50/P90 error and accuracy@20 m."""
    e = np.asarray(error_m, dtype=np.float64).ravel()
    c = np.asarray(confidence, dtype=np.float64).ravel()
    fractions = np.round(np.arange(0.1, 1.01, 0.1), 2) if fractions is None else fractions
    order = np.argsort(-c, kind="stable")
    out = []
    for x in fractions:
        k = max(1, int(round(float(x) * len(e)))) if len(e) else 0
        top = e[order[:k]]
        out.append({"coverage": float(x), "n": int(k),
                    "p50_m": _r(np.median(top), 3) if k else None,
                    "p90_m": _r(np.percentile(top, 90), 3) if k else None,
                    "acc_20m": _r((top <= RIGHT_M).mean()) if k else None})
    return out


def radius_quality(error_m, radius_m, confidence) -> dict:
    """Coverage overall and within each confidence third (by rank), radius AUC for "wrong", sizes."""
    e = np.asarray(error_m, dtype=np.float64).ravel()
    r = np.asarray(radius_m, dtype=np.float64).ravel()
    c = np.asarray(confidence, dtype=np.float64).ravel()
    ok = np.isfinite(r)
    e, r, c = e[ok], r[ok], c[ok]
    if not len(e):
        return {"n": 0, "coverage": None, "coverage_by_third": [], "auc_wrong": None,
                "median_radius_m": None, "median_error_m": None, "radius_to_error": None}
    order = np.argsort(c, kind="stable")
    thirds = []
    for k, part in enumerate(np.array_split(order, 3)):
        if len(part):
            thirds.append({"third": ("low", "middle", "high")[k], "n": int(len(part)),
                           "confidence_lo": _r(c[part].min()), "confidence_hi": _r(c[part].max()),
                           "coverage": _r((e[part] <= r[part]).mean()),
                           "median_radius_m": _r(np.median(r[part]), 3)})
    med_r, med_e = float(np.median(r)), float(np.median(e))
    return {"n": int(len(e)), "coverage": _r((e <= r).mean()), "coverage_by_third": thirds,
            "auc_wrong": _r(roc_auc(r, e > RIGHT_M)), "median_radius_m": _r(med_r, 3),
            "median_error_m": _r(med_e, 3), "radius_to_error": _r(med_r / med_e if med_e > 0 else np.nan, 3)}


def top_k_recall(error_m, alternatives_error_m=None, right_m: float = RIGHT_M) -> float | None:
    """Fraction of answers where the answer or one of its alternatives is within ``right_m``.

    ``alternatives_error_m``: (N, K) distances of the alternatives to the truth (NaN where none)."""
    e = np.asarray(error_m, dtype=np.float64).ravel()
    if not len(e):
        return None
    hit = e <= right_m
    if alternatives_error_m is not None:
        a = np.asarray(alternatives_error_m, dtype=np.float64).reshape(len(e), -1)
        hit |= (np.nan_to_num(a, nan=np.inf) <= right_m).any(axis=1)
    return float(hit.mean())


def alternatives_errors(alternatives: list[list[dict]], true_en: np.ndarray, to_en=None, k: int = 2) -> np.ndarray:
    """(N, k) distance of each alternative to the truth; alternatives are dicts with east/north (or lat/lon
    converted by ``to_en(lat, lon) -> (east, north)``). NaN where an answer has fewer alternatives."""
    t = np.asarray(true_en, dtype=np.float64).reshape(-1, 2)
    out = np.full((len(t), k), np.nan)
    for i, alts in enumerate(alternatives or []):
        for j, a in enumerate((alts or [])[:k]):
            if "east" in a:
                en = (a["east"], a["north"])
            elif to_en is not None:
                en = to_en(a["lat"], a["lon"])
            else:
                continue
            out[i, j] = float(np.hypot(en[0] - t[i, 0], en[1] - t[i, 1]))
    return out


def confidence_report(error_m, confidence, radius_m=None, alternatives_error_m=None) -> dict:
    """The metrics.json ``confidence`` block (see module docstring)."""
    e = np.asarray(error_m, dtype=np.float64).ravel()
    c = np.asarray(confidence, dtype=np.float64).ravel()
    if c.shape != e.shape:
        raise ValueError(f"error_m and confidence differ in length ({e.size} vs {c.size})")
    ok = np.isfinite(e) & np.isfinite(c)
    alt = None
    if alternatives_error_m is not None:
        alt = np.asarray(alternatives_error_m, dtype=np.float64).reshape(len(e), -1)[ok]
    e, c = e[ok], c[ok]
    right = e <= RIGHT_M
    table, ece = reliability(c, right)
    high = c >= HIGH_CONFIDENCE
    out = {"n": int(len(e)), "right_m": RIGHT_M, "fraction_right": _r(right.mean()) if len(e) else None,
           "mean_confidence": _r(c.mean()) if len(e) else None,
           "auc": _r(roc_auc(c, right)), "ece": ece, "reliability": table,
           "risk_coverage": risk_coverage(e, c),
           "high_confidence": {"threshold": HIGH_CONFIDENCE, "share": _r(high.mean()) if len(e) else None,
                               "fraction_right": _r(right[high].mean()) if high.any() else None},
           "top3_recall": _r(top_k_recall(e, alt))}
    if radius_m is not None:
        r = np.asarray(radius_m, dtype=np.float64).ravel()
        if r.shape != ok.shape:
            raise ValueError(f"error_m and radius_m differ in length ({ok.size} vs {r.size})")
        out["radius"] = radius_quality(e, r[ok], c)
    return out
