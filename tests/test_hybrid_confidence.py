"""Hybrid: confidence, adaptive radius and alternatives from held-out mapping photos."""
import json

import numpy as np
import pytest

from campusgps import Localizer
from conftest import make_toy_dataset


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    from campusgps.localizers.hybrid import HybridLocalizer

    ds = make_toy_dataset(tmp_path_factory.mktemp("hybconf") / "toy", n_spots=12, views=4, size=(160, 120))
    return HybridLocalizer(backbone="tiny-cnn", finetune="off", shortlist=10, thumbnails=False).fit(ds), ds


def test_hybrid_predictions_carry_confidence_radius_and_alternatives(hybrid, tmp_path):
    from campusgps.localizers.hybrid.confidence import CONFIDENCE_FEATURES as HYBRID_FEATURES  # + re-ranker's

    loc, ds = hybrid
    model = loc.confidence_model
    assert model is not None and model.names == list(HYBRID_FEATURES)
    assert loc.info["selection"]["confidence"]["n_held_out"] >= 10
    p = loc.predict(ds.subset("test").paths())
    assert ((p.confidence >= 0) & (p.confidence <= 1)).all()
    assert np.allclose(p.radius_m, model.radius(p.confidence))  # the radius follows the confidence bins
    for alts, la, lo in zip(p.alternatives, p.lat, p.lon):
        assert len(alts) <= 2
        for a in alts:
            assert {"lat", "lon", "radius_m", "probability"} <= set(a) and 0 <= a["probability"] <= 1
        pts = [(p_east, p_north) for p_east, p_north in [(a["east"], a["north"]) for a in alts]]
        for k, q in enumerate(pts):
            assert all(np.hypot(q[0] - r[0], q[1] - r[1]) >= 30 for r in pts[:k])
    # the bundle keeps the model as plain JSON numbers and predicts the same after loading
    path = loc.save(tmp_path / "h.cgps")
    meta = Localizer.read_metadata(path)
    stored = meta["state"]["confidence"]
    assert stored["confidence"]["names"] == list(HYBRID_FEATURES)
    json.dumps(stored)
    q = Localizer.load(path).predict(ds.subset("test").paths())
    np.testing.assert_allclose(q.confidence, p.confidence)
    np.testing.assert_allclose(q.radius_m, p.radius_m)


def test_alternatives_are_far_from_the_answer(hybrid):
    loc, ds = hybrid
    p = loc.predict(ds.subset("test").paths())
    for j, alts in enumerate(p.alternatives):
        for a in alts:
            assert np.hypot(a["east"] - p.east[j], a["north"] - p.north[j]) >= 30


def test_blank_image_still_gets_a_confidence_and_radius(hybrid):
    loc, ds = hybrid
    p = loc.predict([np.zeros((120, 160, 3), np.uint8)])
    assert "no_local_features" in p.flags[0]
    assert 0 <= p.confidence[0] <= 1 and np.isfinite(p.radius_m[0]) and p.radius_m[0] > 0


def test_older_bundle_without_confidence_still_predicts(hybrid, tmp_path):
    loc, ds = hybrid
    saved, loc.confidence_model = loc.confidence_model, None
    try:
        p = Localizer.load(loc.save(tmp_path / "old.cgps")).predict(ds.subset("test").paths()[:2])
    finally:
        loc.confidence_model = saved
    assert np.isnan(p.confidence).all() and np.isfinite(p.radius_m).all() and p.alternatives == [[], []]


def test_place_level_evidence_separates_a_tie_from_a_clear_answer():
    """Two places 100 m apart; the answer's place verified by two spots. A look-alike with as many inliers
    at the other place (a tie) gives a lower place ratio and more verifying spots over there."""
    from campusgps.localizers.evidence import HYBRID_FEATURES, hybrid_evidence

    ref_pos = np.array([[0.0, 0.0], [3.0, 0.0], [100.0, 0.0], [104.0, 0.0]])
    ref_spot = np.array([0, 1, 2, 3])
    sims, idx = np.array([0.9, 0.85, 0.8, 0.8]), np.arange(4)

    def feats(inl):
        x, places, aw = hybrid_evidence([1.0, 0.0], sims, idx, np.asarray(inl, float), 10, ref_spot, ref_pos,
                                        400, 0.5, [1.0, 0.0])
        assert len(x) == len(HYBRID_FEATURES) and places and np.hypot(*(places[0][0] - [102, 0])) < 5
        return dict(zip(HYBRID_FEATURES, x))

    clear, tie = feats([80, 40, 12, 0]), feats([80, 40, 70, 60])
    assert clear["log_place_ratio"] > tie["log_place_ratio"] + 1.0
    assert clear["log_inliers_second_spot"] == tie["log_inliers_second_spot"] == np.log1p(40)
    assert clear["log_other_place_spots"] == np.log1p(1) and tie["log_other_place_spots"] == np.log1p(2)


def test_model_fitted_on_fewer_features_still_applies(hybrid):
    """A bundle whose confidence model predates the place-level features uses their leading columns."""
    from campusgps.localizers.confidence import ConfidenceModel

    loc, ds = hybrid
    d = loc.confidence_model.to_dict()
    c = d["confidence"]
    k = len(c["names"]) - 3
    d["confidence"] = {**c, "names": c["names"][:k], "mean": c["mean"][:k], "scale": c["scale"][:k],
                       "coef": c["coef"][:k]}
    old, loc.confidence_model = loc.confidence_model, ConfidenceModel.from_dict(d)
    try:
        p = loc.predict(ds.subset("test").paths()[:3])
        assert np.isfinite(p.confidence).all()
    finally:
        loc.confidence_model = old
