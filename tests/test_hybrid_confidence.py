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
    from campusgps.localizers.evidence import HYBRID_FEATURES

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
