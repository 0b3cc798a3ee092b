"""Confidence, adaptive radius and alternatives for the hybrid localizer.

Two hooks used by ``HybridLocalizer``:

* :func:`fit_hybrid_confidence` at the end of its settings selection: the held-out mapping photos (each
  searched with its own spot left out, verified once) are fused again with the chosen settings, described by
  :func:`campusgps.localizers.evidence.hybrid_evidence` and scored against their own labels; a
  :class:`~campusgps.localizers.confidence.ConfidenceModel` is fitted on them (never on queries).
* :func:`apply_hybrid_confidence` per query in ``_predict_arrays``: sets ``confidence``, replaces
  ``radius_m`` by the model's binned conformal radius and adds up to two alternatives.

``CAPTURE``: when a dict, both hooks append their evidence to it (benchmarks/confidence.py uses it to tune
and to report; nothing in normal use sets it).
"""
from __future__ import annotations

import numpy as np

from campusgps.localizers.confidence import ConfidenceModel
from campusgps.localizers.evidence import HYBRID_FEATURES, MIN_SEP_M, hybrid_evidence

CAPTURE: dict | None = None


def _capture(key: str, value) -> None:
    if CAPTURE is not None:
        CAPTURE.setdefault(key, []).append(value)


def answer_evidence(loc, sims, idx, inl, nkp: int, bright: float, retrieval_center, params: dict | None = None):
    """Fuse one verified shortlist like ``predict`` does and describe it.

    Returns ``(center, verified: bool, x, places, answer_weight)``."""
    h = {**loc.hybrid, **(params or {})}
    mi = loc._min_inliers(nkp, h["min_inliers"], h.get("low_kp_factor"))
    r = None
    if nkp >= 8:
        r = loc._fuse_verified(sims, idx, inl, mi, h["power"], h["bandwidth_m"], agg=h.get("agg", "max"),
                               level=h.get("level", loc.cfg.fusion_level))
    center = np.asarray(r.fused.center if r else retrieval_center, dtype=np.float64)
    spot, pos = loc._spots()
    x, places, aw = hybrid_evidence(center, sims, idx, inl, mi, spot, pos, nkp, bright, retrieval_center)
    return center, r is not None, x, places, aw


def fit_hybrid_confidence(loc, records, brights, retr, truth, groups=None, params: dict | None = None
                          ) -> ConfidenceModel | None:
    """Fit the confidence model on held-out photos. ``records[j] = (sims, idx, inliers, n_keypoints)`` of the
    verified shortlist (``loc.cfg.shortlist`` first entries are used), ``retr[j]`` the retrieval answer,
    ``truth[j]`` the photo's label (east/north)."""
    SL = loc.cfg.shortlist
    X, err, alt_rows = [], [], []
    for j, (s, i, inl, nkp) in enumerate(records):
        c, _, x, places, aw = answer_evidence(loc, s[:SL], i[:SL], inl, nkp, brights[j], retr[j], params)
        X.append(x)
        err.append(float(np.hypot(*(c - truth[j]))))
        for rank, (p, w) in enumerate(places, start=1):
            alt_rows.append((j, w, aw, rank, float(np.hypot(*(p - truth[j])))))
    if len(X) < 10:
        return None
    X, err = np.asarray(X), np.asarray(err)
    _capture("held_out", {"X": X, "err": err, "groups": groups, "alt_rows": alt_rows})
    return ConfidenceModel.fit(X, err, HYBRID_FEATURES, groups=groups, target=loc.cfg.radius_target,
                               alt_rows=alt_rows, min_per_bin=max(20, len(X) // 6))


def apply_hybrid_confidence(loc, out, j: int, sims, idx, inl, nkp: int, bright: float, retrieval_center) -> None:
    """Set ``out.confidence[j]``, the adaptive ``out.radius_m[j]`` and ``out.alternatives[j]``."""
    model: ConfidenceModel | None = getattr(loc, "confidence_model", None)
    if model is None:
        return
    _, _, x, places, aw = answer_evidence(loc, sims, idx, inl, nkp, bright, retrieval_center)
    c = float(model.confidence(x[None])[0])
    r = float(model.radius([c])[0])
    _capture("query", {"x": x, "places": places, "aw": aw})
    out.confidence[j] = c
    if "out_of_area" in out.flags[j]:
        r = max(r, float(out.radius_m[j]))
    out.radius_m[j] = r
    alts = model.alternatives(places, aw, c)
    for a in alts:  # a place's radius: the radius of an answer as unsure as the alternative
        a["radius_m"] = float(model.radius([a["probability"]])[0])
    out.alternatives[j] = alts


__all__ = ["CAPTURE", "ConfidenceModel", "MIN_SEP_M", "answer_evidence", "apply_hybrid_confidence",
           "fit_hybrid_confidence"]
