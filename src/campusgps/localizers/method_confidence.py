"""Confidence, adaptive radius and alternatives for the retrieval and regression localizers.

* Retrieval (:func:`fit_retrieval_confidence`, :func:`apply_retrieval_confidence`): held-out *mapping*
  photos, each searched among the references with its own spot (photos sharing its GPS fix) left out, fused
  like a query and scored against its own label; evidence from
  :func:`campusgps.localizers.evidence.retrieval_evidence` (similarity near the answer and its margin over
  other places, fusion support/spread, brightness). Alternatives from the shortlist's other places.
* Regression (:func:`fit_regression_confidence`, :func:`apply_regression_confidence`): its network memorises
  the training photos, so the held-out photos are the location-grouped val split it is calibrated on;
  evidence = the predicted sigma (log raw radius) and brightness; the radius is the per-photo sigma radius
  scaled per confidence bin (so it still varies photo by photo when the val split is too small for several
  bins). No alternatives (one answer per photo).
"""
from __future__ import annotations

import numpy as np

from campusgps.localizers.confidence import ConfidenceModel
from campusgps.localizers.evidence import RETRIEVAL_FEATURES, brightness, retrieval_evidence

REGRESSION_FEATURES = ("log_raw_radius_m", "brightness")


def _bright_of(ds, rows) -> np.ndarray:
    return np.array([brightness(ds.load_image(int(i), max_side=96)) for i in rows])


def fit_retrieval_confidence(loc, train, max_photos: int = 400) -> ConfidenceModel | None:
    """Fit ``loc.confidence_model`` on up to ``max_photos`` references of ``train`` (the dataset whose photos
    are indexed) and return it (None, and the model left as it was, with too few photos or spots)."""
    from campusgps.localizers.retrieval.fusion import fuse_with, raw_radius
    from campusgps.localizers.spots import spot_ids

    pos = {r: k for k, r in enumerate(loc.ref_ids)}
    rows = [j for j, r in enumerate(train.manifest["id"].astype(str)) if r in pos]
    if len(rows) < 20:
        return None
    t = np.asarray(getattr(loc, "ref_time", np.full(len(loc.ref_en), np.nan)), np.float64)
    if len(t) != len(loc.ref_en):
        t = np.full(len(loc.ref_en), np.nan)
    spot = spot_ids(loc.ref_en, t, gap_s=20.0, link_m=8.0, fallback_m=1.0)
    if len(np.unique(spot)) < 3:
        return None
    pick = np.asarray(rows)[np.linspace(0, len(rows) - 1, min(max_photos, len(rows))).round().astype(int)]
    ref_of = np.array([pos[str(train.manifest["id"].iloc[j])] for j in pick])
    fu = loc.fusion
    K = max(fu["k"], 10)
    S0, I0 = loc._search(loc.ref_desc[ref_of], min(len(loc.ref_en), K + 60))
    bright = _bright_of(train, pick)
    X, err, raw, alt_rows = [], [], [], []
    for j in range(len(pick)):
        keep = (I0[j] >= 0) & (spot[np.maximum(I0[j], 0)] != spot[ref_of[j]])
        s, i = S0[j][keep][:K], I0[j][keep][:K]
        if not len(i):
            continue
        f, _, _ = fuse_with(loc.ref_en, s, i, fu)
        x, places, aw = retrieval_evidence(f.center, s, i, loc.ref_en, f, bright[j], fu["k"])
        truth = loc.ref_en[ref_of[j]]
        for rank, (p, w) in enumerate(places, start=1):
            alt_rows.append((len(X), w, aw, rank, float(np.hypot(*(p - truth)))))
        X.append(x)
        err.append(float(np.hypot(*(f.center - truth))))
        raw.append(raw_radius(f, fu["bandwidth_m"]))
    if len(X) < 20:
        return None
    groups = spot[ref_of][:len(X)]
    loc.confidence_model = ConfidenceModel.fit(np.asarray(X), np.asarray(err), RETRIEVAL_FEATURES, groups=groups,
                                               target=loc.cfg.radius_target, alt_rows=alt_rows,
                                               min_per_bin=max(30, len(X) // 6))
    return loc.confidence_model


def apply_retrieval_confidence(loc, out, S, I, images) -> None:
    """Confidence, binned radius and alternatives for every answer of ``out`` (from ``_predict_from_search``)."""
    from campusgps.localizers.retrieval.fusion import fuse_with

    model = getattr(loc, "confidence_model", None)
    if model is None:
        return
    fu = loc.fusion
    for j in range(len(out)):
        f, _, _ = fuse_with(loc.ref_en, S[j], I[j], fu)
        x, places, aw = retrieval_evidence(f.center, S[j], I[j], loc.ref_en, f, brightness(images[j]), fu["k"])
        c = float(model.confidence(x[None])[0])
        out.confidence[j] = c
        r = float(model.radius([c])[0])
        out.radius_m[j] = max(r, out.radius_m[j]) if "out_of_area" in out.flags[j] else r
        alts = model.alternatives(places, aw, c)
        for a in alts:
            a["radius_m"] = float(model.radius([a["probability"]])[0])
        out.alternatives[j] = alts


def fit_regression_confidence(raw_radius, errors, val_ds, target: float = 0.9) -> ConfidenceModel | None:
    """Fit on the val photos' predictions: ``raw_radius`` (per-photo sigma radius) and errors (m)."""
    raw = np.asarray(raw_radius, np.float64)
    if len(raw) < 20:
        return None
    X = np.stack([np.log(np.maximum(raw, 1e-3)), _bright_of(val_ds, range(len(val_ds)))], 1)
    return ConfidenceModel.fit(X, errors, REGRESSION_FEATURES, target=target, raw_radius=raw,
                               min_per_bin=max(30, len(raw) // 6))


def apply_regression_confidence(model: ConfidenceModel | None, raw_radius, images, out) -> None:
    if model is None:
        return
    X = np.stack([np.log(np.maximum(np.asarray(raw_radius, np.float64), 1e-3)),
                  np.array([brightness(im) for im in images])], 1)
    c = model.confidence(X)
    out.confidence[:] = c
    out.radius_m[:] = model.radius(c, raw_radius)
