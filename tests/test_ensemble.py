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
