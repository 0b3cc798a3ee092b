"""Retrieval and regression: confidence and binned radius fitted on held-out photos, kept in the bundle."""
import numpy as np
import pytest

from campusgps import Localizer
from conftest import make_toy_dataset


def _check(loc, paths, tmp_path, names):
    assert loc.confidence_model is not None and loc.confidence_model.names == list(names)
    p = loc.predict(paths)
    assert ((p.confidence >= 0) & (p.confidence <= 1)).all()
    if not loc.confidence_model.radius_spec["scaled"]:
        assert np.allclose(p.radius_m, loc.confidence_model.radius(p.confidence))
    q = Localizer.load(loc.save(tmp_path / "m.cgps")).predict(paths)
    np.testing.assert_allclose(q.confidence, p.confidence, rtol=1e-5)
    np.testing.assert_allclose(q.radius_m, p.radius_m, rtol=1e-5)
    return p


def test_retrieval_confidence_from_leave_own_spot_out_mapping_photos(tmp_path):
    from campusgps.localizers.evidence import RETRIEVAL_FEATURES
    from campusgps.localizers.retrieval import RetrievalLocalizer

    ds = make_toy_dataset(tmp_path / "toy", n_spots=12, views=4, size=(96, 72))
    loc = RetrievalLocalizer(backbone="tiny-cnn", finetune="off", thumbnails=False).fit(ds)
    assert loc.info["selection"]["confidence"]["n_held_out"] >= 20
    p = _check(loc, ds.subset("test").paths(), tmp_path, RETRIEVAL_FEATURES)
    for j, alts in enumerate(p.alternatives):
        for a in alts:
            assert np.hypot(a["east"] - p.east[j], a["north"] - p.north[j]) >= 30 and "lat" in a


def test_regression_confidence_from_val_predictions(tmp_path):
    from campusgps.localizers.method_confidence import REGRESSION_FEATURES
    from campusgps.localizers.regression import RegressionLocalizer

    ds = make_toy_dataset(tmp_path / "toy", n_spots=24, views=4, extent_m=20.0)
    loc = RegressionLocalizer(backbone="tiny-cnn", epochs=20, views=1).fit(ds, progress=False)
    assert loc.info["confidence"]["n_held_out"] == int((ds.manifest["split"] == "val").sum())
    p = _check(loc, ds.subset("test").paths(), tmp_path, REGRESSION_FEATURES)
    assert p.alternatives == [[] for _ in range(len(p))]
    # the radius is the per-photo sigma radius scaled per confidence bin: it still varies photo by photo
    assert loc.confidence_model.radius_spec["scaled"] and np.ptp(p.radius_m) > 0
