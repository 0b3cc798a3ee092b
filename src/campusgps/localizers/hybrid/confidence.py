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
# the re-ranker's evidence for the answer: its probability, its logit margin over the best place >= 30 m away,
# and whether no other place competes
RERANK_EVIDENCE = ("rerank_probability", "rerank_margin", "rerank_alone")
CONFIDENCE_FEATURES = tuple(HYBRID_FEATURES) + RERANK_EVIDENCE
# The held-out photos are scored against their own noisy GPS labels (median error 15 m vs 9 m against the
# true positions of the queries, seed 1): a held-out answer counts as right within LABEL_RIGHT_M of the
# label, chosen on seed 1 among 20/22/25/28 m (confidence AUC 0.83->0.84, share >= 0.8: 0.30->0.38).
LABEL_RIGHT_M = 28.0
# radius: 8 confidence bins, per-bin coverage levels allocated (pooled 0.9 on the held-out photos, every bin
# >= 0.85): seed 1 queries, coverage 0.91 (thirds >= 0.85), median radius / median error 16.6 -> 5.3
RADIUS_BINS = 8
MIN_BIN_TARGET: float | None = 0.85


def _capture(key: str, value) -> None:
    if CAPTURE is not None:
        CAPTURE.setdefault(key, []).append(value)


def rerank_evidence(center, cands, z, min_sep_m: float = MIN_SEP_M, k_alt: int = 2):
    """``(x, places, answer_weight)`` from the re-ranker's candidate spots and logits: its probability for
    the chosen spot, the logit margin over the best candidate >= ``min_sep_m`` away (0 when there is none),
    and up to ``k_alt`` further places in score order (>= ``min_sep_m`` from the answer and each other),
    weighted by their probabilities. None when the re-ranker did not answer."""
    if cands is None or z is None or not len(z):
        return None
    p = 1.0 / (1.0 + np.exp(-z))
    order = np.argsort(-z, kind="stable")
    d = np.hypot(*(cands.pos - np.asarray(center, np.float64)).T)
    far = z[d >= min_sep_m]
    margin = float(z.max() - far.max()) if len(far) else 0.0
    places, chosen = [], [np.asarray(center, np.float64)]
    for k in order:
        if len(places) < k_alt and min(np.hypot(*(cands.pos[k] - c)) for c in chosen) >= min_sep_m:
            chosen.append(cands.pos[k])
            places.append((cands.pos[k].copy(), float(p[k])))
    return np.array([float(p.max()), margin, float(len(far) == 0)]), places, float(p.max())


def answer_evidence(loc, sims, idx, inl, nkp: int, bright: float, retrieval_center, params: dict | None = None,
                    geo=None):
    """Answer one verified shortlist like ``predict`` does and describe it (``HYBRID_FEATURES`` then
    ``RERANK_EVIDENCE``, all 0 without the re-ranker). Alternatives come from the re-ranker's ordering when it
    answered, else from the density of the shortlist's candidate weights.

    Returns ``(center, verified: bool, x, places, answer_weight)``."""
    h = {**loc.hybrid, **(params or {})}
    mi = loc._min_inliers(nkp, h["min_inliers"], h.get("low_kp_factor"))
    r, cands, z = loc._answer(sims, idx, inl, geo, nkp, params)
    center = np.asarray(r.fused.center if r else retrieval_center, dtype=np.float64)
    spot, pos = loc._spots()
    x, places, aw = hybrid_evidence(center, sims, idx, inl, mi, spot, pos, nkp, bright, retrieval_center)
    rr = rerank_evidence(center, cands, z) if r is not None else None
    if rr is None:
        return center, r is not None, np.concatenate([x, np.zeros(len(RERANK_EVIDENCE))]), places, aw
    return center, True, np.concatenate([x, rr[0]]), rr[1], rr[2]  # alternatives: the re-ranker's order


def fit_hybrid_confidence(loc, records, brights, retr, truth, groups=None, params: dict | None = None
                          ) -> ConfidenceModel | None:
    """Fit the confidence model on held-out photos. ``records[j] = (sims, idx, inliers, n_keypoints, geometry)`` of the
    verified shortlist (``loc.cfg.shortlist`` first entries are used), ``retr[j]`` the retrieval answer,
    ``truth[j]`` the photo's label (east/north)."""
    SL = loc.cfg.shortlist
    X, err, alt_rows = [], [], []
    for j, (s, i, inl, nkp, geo) in enumerate(records):
        c, _, x, places, aw = answer_evidence(loc, s[:SL], i[:SL], inl, nkp, brights[j], retr[j], params, geo)
        X.append(x)
        err.append(float(np.hypot(*(c - truth[j]))))
        for rank, (p, w) in enumerate(places, start=1):
            alt_rows.append((j, w, aw, rank, float(np.hypot(*(p - truth[j])))))
    if len(X) < 10:
        return None
    X, err = np.asarray(X), np.asarray(err)
    _capture("held_out_raw", {"records": records, "brights": brights, "retr": retr, "truth": truth,
                              "groups": groups})
    _capture("held_out", {"X": X, "err": err, "groups": groups, "alt_rows": alt_rows})
    return ConfidenceModel.fit(X, err, CONFIDENCE_FEATURES, groups=groups, target=loc.cfg.radius_target,
                               alt_rows=alt_rows, min_per_bin=max(15, len(X) // (RADIUS_BINS + 1)),
                               label_right_m=LABEL_RIGHT_M, max_bins=RADIUS_BINS, min_bin_target=MIN_BIN_TARGET)


def apply_hybrid_confidence(loc, out, j: int, sims, idx, inl, nkp: int, bright: float, retrieval_center,
                            geo=None) -> None:
    """Set ``out.confidence[j]``, the adaptive ``out.radius_m[j]`` and ``out.alternatives[j]``."""
    model: ConfidenceModel | None = getattr(loc, "confidence_model", None)
    if model is None:
        return
    _, _, x, places, aw = answer_evidence(loc, sims, idx, inl, nkp, bright, retrieval_center, geo=geo)
    c = float(model.confidence(x[None, :len(model.names)])[0])  # older models: fewer (leading) features
    r = float(model.radius([c])[0])
    _capture("query", {"x": x, "places": places, "aw": aw,
                       "raw": (sims, idx, inl, nkp, bright, retrieval_center, geo)})
    out.confidence[j] = c
    if "out_of_area" in out.flags[j]:
        r = max(r, float(out.radius_m[j]))
    out.radius_m[j] = r
    alts = model.alternatives(places, aw, c)
    for a in alts:  # a place's radius: the radius of an answer as unsure as the alternative
        a["radius_m"] = float(model.radius([a["probability"]])[0])
    out.alternatives[j] = alts


__all__ = ["CAPTURE", "CONFIDENCE_FEATURES", "RERANK_EVIDENCE", "ConfidenceModel", "MIN_SEP_M", "answer_evidence",
           "apply_hybrid_confidence", "fit_hybrid_confidence"]
