"""Ensemble: robust member fusion, members embedded in one bundle."""
import numpy as np

from campusgps import Localizer
from campusgps.localizers.ensemble import fuse_members
from conftest import make_toy_dataset


def test_fuse_members_drops_an_outlier():
    pts = np.array([[0.0, 0.0], [2.0, 0.0], [300.0, 0.0]])
    c, keep, raw = fuse_members(pts, np.array([5.0, 5.0, 8.0]))
    assert keep.tolist() == [True, True, False]
    assert np.allclose(c, [1.0, 0.0]) and raw > 0


def test_ensemble_from_bundles_is_one_file(tmp_path):
    from campusgps.localizers.base import MeanLocalizer
    from campusgps.localizers.ensemble import EnsembleLocalizer
    from campusgps.localizers.retrieval import RetrievalLocalizer

    ds = make_toy_dataset(tmp_path / "toy", n_spots=16, views=4)
    a = RetrievalLocalizer(backbone="tiny-cnn", finetune="off").fit(ds).save(tmp_path / "a.cgps")
    b = MeanLocalizer().fit(ds).save(tmp_path / "b.cgps")
    ens = EnsembleLocalizer(members=[str(a), str(b)], tta=True).fit(ds)
    test = ds.subset("test")
    p = ens.predict(test.paths())
    assert np.isfinite(p.lat).all() and (p.radius_m > 0).all()
    (tmp_path / "a.cgps").unlink()
    (tmp_path / "b.cgps").unlink()
    loaded = Localizer.load(ens.save(tmp_path / "e.cgps"))
    assert [m.method for m in loaded.members] == ["retrieval", "mean"]
    q = loaded.predict(test.paths())
    assert np.allclose(q.lat, p.lat) and np.allclose(q.radius_m, p.radius_m)
    err = np.hypot(q.east - test.en()[:, 0], q.north - test.en()[:, 1])
    mean_err = np.hypot(*(test.en() - ds.subset("train").en().mean(0)).T)
    assert np.median(err) < np.median(mean_err)


def test_ensemble_evidence_pools_member_answers_and_alternatives():
    from campusgps.localizers.base import Prediction
    from campusgps.localizers.ensemble_confidence import evidence, feature_names

    a = Prediction(east=np.zeros(1), north=np.zeros(1), radius_m=np.ones(1), confidence=np.array([0.9]),
                   alternatives=[[{"east": 0.0, "north": 60.0, "probability": 0.05, "radius_m": 9.0}]])
    b = Prediction(east=np.array([100.0]), north=np.zeros(1), radius_m=np.ones(1), confidence=np.array([0.6]))
    x, places, aw = evidence(np.array([[0.0, 0.0], [100.0, 0.0]]), [a, b], 0, [0.0, 0.0], 5.0, 1)
    assert len(x) == len(feature_names(2))
    assert x[1] == 0.0 and np.isclose(x[3], np.log1p(100.0))  # distances of the members' answers
    assert np.isclose(aw, 0.9)
    # two alternatives: member b's answer (weight 0.6) ranks before member a's alternative (0.05)
    assert [tuple(np.round(p)) for p, _ in places] == [(100.0, 0.0), (0.0, 60.0)]


def test_ensemble_has_confidence_radius_and_alternatives(tmp_path):
    from campusgps.localizers.base import MeanLocalizer
    from campusgps.localizers.ensemble import EnsembleLocalizer
    from fake_confident import ConfidentFake

    ds = make_toy_dataset(tmp_path / "toy", n_spots=24, views=5)
    ens = EnsembleLocalizer().fit(ds, members=[ConfidentFake().fit(ds), MeanLocalizer().fit(ds)])
    assert ens.confidence_model is not None, ens.info.get("calibration")
    test = ds.subset("test")
    p = ens.predict(test.paths())
    assert np.isfinite(p.confidence).all() and ((p.confidence > 0) & (p.confidence < 1)).all()
    assert (p.radius_m > 0).all()
    for alts in p.alternatives:
        assert len(alts) <= 2 and all(0 <= a["probability"] <= 1 and a["radius_m"] > 0 for a in alts)
    q = Localizer.load(ens.save(tmp_path / "e.cgps")).predict(test.paths())
    assert np.allclose(q.confidence, p.confidence) and np.allclose(q.radius_m, p.radius_m)
    assert [len(a) for a in q.alternatives] == [len(a) for a in p.alternatives]
