"""campusgps.engine: local vs Ray give the same features and answers; rows are never lost or duplicated."""
from __future__ import annotations

import csv
import os
import sys

import numpy as np
import pytest

from campusgps.cli.main import main
from campusgps.engine import RowTracker, get_engine
from campusgps.engine.base import EmbedWorker, EngineError
from campusgps.errors import UserError


def test_row_tracker_drops_duplicates_and_reports_lost_rows():
    t = RowTracker(5)
    assert t.accept([0, 1]).tolist() == [True, True]
    assert t.accept([1, 2, 2]).tolist() == [False, True, False]
    assert t.duplicates == 2
    with pytest.raises(EngineError, match="lost 2 of 5 rows"):
        t.finish()
    t.accept([3, 4])
    t.finish()
    with pytest.raises(EngineError, match="outside"):
        t.accept([7])


def test_ray_missing_exits_2_with_install_hint(monkeypatch, tmp_path, capsys, toy_dataset):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UserError, match=r"pip install 'campusgps\[ray\]'"):
        get_engine("ray")
    from campusgps.localizers.base import MeanLocalizer

    model = MeanLocalizer().fit(toy_dataset).save(tmp_path / "m.cgps")
    rc = main(["predict", str(model), str(toy_dataset.paths()[0]), "--engine", "ray"])
    assert rc == 2 and "campusgps[ray]" in capsys.readouterr().err
    rc = main(["train", str(toy_dataset.root), "--method", "retrieval", "--backbone", "tiny-cnn", "--engine", "ray",
               "--out", str(tmp_path / "r.cgps")])
    assert rc == 2 and "campusgps[ray]" in capsys.readouterr().err and not (tmp_path / "r.cgps").exists()
    rc = main(["train", str(toy_dataset.root), "--method", "retrieval", "--ray-address", "auto",
               "--out", str(tmp_path / "r.cgps")])
    assert rc == 2 and "--ray-address only applies with --engine ray" in capsys.readouterr().err


def test_local_engine_parquet_matches_csv(tmp_path, toy_dataset):
    pq = pytest.importorskip("pyarrow.parquet")
    from campusgps.localizers.base import MeanLocalizer

    model = MeanLocalizer().fit(toy_dataset).save(tmp_path / "m.cgps")
    photos = [str(p) for p in toy_dataset.paths()[:5]] + [str(tmp_path / "nope.jpg")]
    (tmp_path / "nope.jpg").write_bytes(b"not an image")
    assert main(["predict", str(model), *photos, "--out", str(tmp_path / "a.csv"), "--batch-size", "2"]) == 0
    assert main(["predict", str(model), *photos, "--out", str(tmp_path / "a.parquet"), "--batch-size", "2"]) == 0
    rows = list(csv.DictReader((tmp_path / "a.csv").open()))
    t = pq.read_table(tmp_path / "a.parquet").to_pandas()
    assert len(rows) == len(t) == 5 and t["row"].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(t["lat"], [float(r["lat"]) for r in rows], atol=1e-8)


# --------------------------------------------------------------------------------------------- Ray
ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'campusgps[ray]'")


@pytest.fixture(scope="module")
def ray_local():
    from campusgps.engine.ray_engine import _worker_env

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": _worker_env()})
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def campus(tmp_path_factory):
    from conftest import make_toy_dataset

    return make_toy_dataset(tmp_path_factory.mktemp("eng") / "toy", n_spots=12, views=4, extent_m=40.0)


class DyingEmbedWorker(EmbedWorker):
    """Kills its own worker process the first time it sees row ``die_at`` (a marker file makes it once)."""

    marker = ""
    die_at = -1

    def __call__(self, batch):
        if self.die_at in set(np.asarray(batch["row"]).tolist()) and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return super().__call__(batch)


@pytest.mark.slow  # starts Ray: ~20 s start-up plus actor pools on 2 cores
def test_ray_embed_equals_local(ray_local, campus):
    photos = [str(p) for p in campus.paths()]
    f_local, e_local = get_engine("local").embed_photos(photos, backbone="tiny-cnn", batch_size=8)
    eng = get_engine("ray", workers=2)
    f_ray, e_ray = eng.embed_photos(photos, backbone="tiny-cnn", batch_size=8)
    assert f_ray.shape == f_local.shape == (len(photos), f_local.shape[1])
    np.testing.assert_allclose(f_ray, f_local, rtol=1e-4, atol=1e-5)
    assert e_ray == e_local == [None] * len(photos)


@pytest.mark.slow  # starts Ray: ~20 s start-up plus actor pools on 2 cores
def test_killed_worker_loses_and_duplicates_nothing(ray_local, campus, tmp_path):
    photos = [str(p) for p in campus.paths()] * 2  # 96 rows, 12 batches
    marker = tmp_path / "died"
    eng = get_engine("ray", workers=2)
    DyingEmbedWorker.marker, DyingEmbedWorker.die_at = str(marker), 50
    feats, errors = eng.embed_photos(photos, backbone="tiny-cnn", batch_size=8, worker_cls=DyingEmbedWorker)
    assert marker.exists(), "the worker was never killed: the test did not test anything"
    assert np.isfinite(feats).all() and errors == [None] * len(photos)
    half = len(photos) // 2  # the second copy of each photo got the same features: rows kept their place
    np.testing.assert_allclose(feats[:half], feats[half:], rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # starts Ray: ~20 s start-up plus actor pools on 2 cores
def test_predict_ray_equals_local(ray_local, campus, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from campusgps.geo import haversine_m

    model = tmp_path / "r.cgps"
    assert main(["train", str(campus.root), "--method", "retrieval", "--backbone", "tiny-cnn",
                 "--finetune", "off", "--night-views", "0", "--out", str(model)]) == 0
    q = [str(p) for p in campus.paths()]
    assert main(["predict", str(model), *q, "--out", str(tmp_path / "l.csv"), "--batch-size", "8"]) == 0
    assert main(["predict", str(model), *q, "--engine", "ray", "--workers", "2", "--batch-size", "8",
                 "--out", str(tmp_path / "r.parquet")]) == 0
    loc = list(csv.DictReader((tmp_path / "l.csv").open()))
    t = pq.read_table(tmp_path / "r.parquet").to_pandas()
    assert t["row"].tolist() == list(range(len(q))) and t["file"].tolist() == [r["file"] for r in loc]
    d = haversine_m(t["lat"].to_numpy(), t["lon"].to_numpy(),
                    np.array([float(r["lat"]) for r in loc]), np.array([float(r["lon"]) for r in loc]))
    assert (d <= 0.5).mean() >= 0.99, f"ray vs local distances: max {d.max():.3f} m"
    from campusgps.answers import CONFIDENCE_COLUMNS

    for c in CONFIDENCE_COLUMNS:  # the same row builder on both paths: confidence and alternatives too
        want = np.array([float(r[c]) if r[c] else np.nan for r in loc])
        np.testing.assert_allclose(t[c].to_numpy(float), want, rtol=0, atol=1e-3 if c.endswith(("_p", "confidence")) else 1e-5,
                                   equal_nan=True)


def _copy_dataset(src, dst):
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".cache"))  # no shared feature cache
    return str(dst)


def _cached_rows(folder) -> dict:
    """{image sha256: feature row} of one feature-cache table."""
    import json

    shape = json.loads((folder / "meta.json").read_text())["row_shape"]
    keys = (folder / "keys.txt").read_text().split()
    data = np.fromfile(folder / "data.f32", np.float32).reshape(-1, *shape)[:len(keys)]
    return dict(zip(keys, data))


def _predict_csv(model, photos, out):
    assert main(["predict", str(model), *photos, "--out", str(out), "--batch-size", "8"]) == 0
    return list(csv.DictReader(open(out)))


@pytest.mark.slow  # starts Ray: ~20 s start-up plus actor pools on 2 cores
@pytest.mark.parametrize("method,opts,pooling", [
    ("retrieval", ["--finetune", "off", "--night-views", "1"], "gem"),
    ("regression", ["--epochs", "3", "--views", "1"], "gap"),
    ("hybrid", ["--finetune", "off", "--night-views", "1"], "gem"),  # + local features through Ray
])
def test_train_ray_equals_local(ray_local, campus, tmp_path, method, opts, pooling):
    from campusgps.geo import haversine_m
    from campusgps.models.backbones import get_backbone

    a, b = _copy_dataset(campus.root, tmp_path / "a"), _copy_dataset(campus.root, tmp_path / "b")
    common = ["--method", method, "--backbone", "tiny-cnn", *opts]
    assert main(["train", a, *common, "--out", str(tmp_path / "l.cgps")]) == 0
    assert main(["train", b, *common, "--engine", "ray", "--workers", "2", "--out", str(tmp_path / "r.cgps")]) == 0
    key = get_backbone("tiny-cnn").key
    tables = sorted(p.name for p in (tmp_path / "b" / ".cache/features" / key).iterdir())
    assert tables == sorted(p.name for p in (tmp_path / "a" / ".cache/features" / key).iterdir())
    assert any(t.startswith(pooling) and "-v1" in t for t in tables), tables  # augmented views went via Ray
    for t in tables:  # every cached table (plain and augmented views): same features to float tolerance
        xa, xb = (_cached_rows(tmp_path / d / ".cache/features" / key / t) for d in ("a", "b"))
        assert sorted(xa) == sorted(xb) and len(xa) >= len(campus) // 3
        np.testing.assert_allclose(np.stack([xb[k] for k in sorted(xa)]), np.stack([xa[k] for k in sorted(xa)]),
                                   rtol=1e-4, atol=1e-5)
    q = [str(p) for p in campus.paths()]
    la, lb = _predict_csv(tmp_path / "l.cgps", q, tmp_path / "l.csv"), _predict_csv(tmp_path / "r.cgps", q,
                                                                                     tmp_path / "r.csv")
    col = lambda rows, c: np.array([float(r[c]) for r in rows])  # noqa: E731
    assert [r["file"] for r in la] == [r["file"] for r in lb] == q
    d = haversine_m(col(la, "lat"), col(la, "lon"), col(lb, "lat"), col(lb, "lon"))
    if method == "hybrid":  # local features computed by Ray workers: the same keypoints and descriptors
        from campusgps.localizers.bundle import read_bundle

        ta, tb = read_bundle(tmp_path / "l.cgps")[0], read_bundle(tmp_path / "r.cgps")[0]
        for k in ("lf_offsets", "lf_desc", "lf_wh"):
            np.testing.assert_array_equal(ta[k], tb[k])
        np.testing.assert_allclose(ta["lf_xy"], tb["lf_xy"], atol=1e-3)
    assert (d <= 0.5).mean() >= 0.99, f"train ray vs local answers: max {d.max():.3f} m"
