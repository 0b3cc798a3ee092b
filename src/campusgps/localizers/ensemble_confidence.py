"""Confidence, adaptive radius and alternatives for the ensemble.

The ensemble's evidence for one photo is what its members say and how much they agree: per member the logit
of its own confidence (0 when it has none) and how far its answer lies from the fused answer (log metres),
plus the fused raw radius. A :class:`~campusgps.localizers.confidence.ConfidenceModel` is fitted on the
val photos the ensemble already predicts to calibrate its radius (members never see them: ``exclude_ids``),
never on queries. The radius is the fused raw radius scaled per confidence bin (split conformal).

Alternatives pool the members' answers (weight: their confidence) and the members' own alternatives
(weight: their probability); the places >= 30 m from the answer and from each other are ranked by weighted
density and get probabilities from the model's alternative logistic, fitted on the same val photos.
"""
from __future__ import annotations

import numpy as np

from campusgps.localizers.confidence import ConfidenceModel, _logit, place_candidates
from campusgps.localizers.evidence import MIN_SEP_M


def feature_names(n_members: int) -> list[str]:
    names = []
    for i in range(n_members):
        names += [f"m{i}_confidence_logit", f"m{i}_log_distance_m"]
    return names + ["log_raw_radius_m", "n_dropped"]


def _conf(p, j: int) -> float:
    c = np.nan if p.confidence is None else float(p.confidence[j])
    return c if np.isfinite(c) else 0.5


def evidence(member_pts: np.ndarray, member_preds: list, j: int, center, raw_radius: float, n_dropped: int,
             k_alt: int = 2):
    """Features, candidate places and the evidence weight at the answer for photo ``j``.

    ``member_pts`` (n_members, 2): the members' answers in the ensemble's frame; ``member_preds``: their
    Predictions (alternatives already in the ensemble's frame)."""
    center = np.asarray(center, np.float64).reshape(2)
    x, pts, w = [], [], []
    for m, p in enumerate(member_preds):
        c = _conf(p, j)
        d = float(np.hypot(*(member_pts[m] - center))) if np.isfinite(member_pts[m]).all() else 1e3
        x += [float(_logit(c)), float(np.log1p(d))]
        if np.isfinite(member_pts[m]).all():
            pts.append(member_pts[m])
            w.append(c)
        for a in (p.alternatives[j] if p.alternatives else []):
            if np.isfinite(a.get("east", np.nan)) and np.isfinite(a.get("north", np.nan)):
                pts.append([a["east"], a["north"]])
                w.append(float(a.get("probability", 0.0)))
    x += [float(np.log(max(raw_radius, 1e-3))) if np.isfinite(raw_radius) else 0.0, float(n_dropped)]
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    w = np.asarray(w, np.float64)
    places = place_candidates(pts, w, center, k=k_alt, min_sep_m=MIN_SEP_M)
    near = np.hypot(*(pts - center).T) <= MIN_SEP_M / 2 if len(pts) else np.zeros(0, bool)
    return np.asarray(x, np.float64), places, float(w[near].sum())


def fit_ensemble_confidence(X, errors, raw_radius, places_list, answer_weights, truth, n_members: int,
                            target: float = 0.9) -> ConfidenceModel | None:
    """Fit on the val photos: evidence rows ``X``, errors (m), raw radii, each photo's candidate places and
    answer weight, and true (east, north)."""
    X = np.asarray(X, np.float64)
    if len(X) < 20:
        return None
    alt_rows = []
    for j, places in enumerate(places_list):
        for rank, (p, w) in enumerate(places, start=1):
            alt_rows.append((j, w, answer_weights[j], rank, float(np.hypot(*(p - truth[j])))))
    raw = np.asarray(raw_radius, np.float64)
    raw = np.where(np.isfinite(raw) & (raw > 0), raw, np.nanmedian(raw[raw > 0]) if (raw > 0).any() else 1.0)
    return ConfidenceModel.fit(X, errors, feature_names(n_members), target=target, raw_radius=raw,
                               alt_rows=alt_rows, min_per_bin=max(20, len(X) // 5))


def apply_ensemble_confidence(model: ConfidenceModel, out, j: int, x, places, answer_weight: float,
                              raw_radius: float) -> None:
    c = float(model.confidence(x[None])[0])
    out.confidence[j] = c
    raw = raw_radius if np.isfinite(raw_radius) and raw_radius > 0 else 1.0
    r = float(model.radius([c], [raw])[0])
    out.radius_m[j] = max(r, out.radius_m[j]) if "out_of_area" in out.flags[j] else r
    alts = model.alternatives(places, answer_weight, c, radius_m=r)
    for a in alts:
        a["radius_m"] = float(model.radius([a["probability"]], [raw])[0])
    out.alternatives[j] = alts
