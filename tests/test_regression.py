"""Regression localizer: learns positions, save/load round trip, calibrated radius, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from campusgps.errors import BundleError, UserError
from campusgps.localizers.base import Localizer, MeanLocalizer
from campusgps.localizers.calibration import coverage, fit_radius_scale
from campusgps.localizers.regression import RegressionLocalizer

torch.set_num_threads(2)
FAST = dict(backbone="tiny-cnn", epochs=60, views=2, patience=20)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    from conftest import make_toy_dataset

    # 20 m extent: the toy images' phase code does not wrap, so position is learnable from pixels
    return make_toy_dataset(tmp_path_factory.mktemp("reg") / "toy", n_spots=24, views=4, extent_m=20.0)


@pytest.fixture(scope="module")
def trained(ds):
    return RegressionLocalizer(**FAST).fit(ds, progress=False)


def _errors(loc, test):
    p = loc.predict(test.paths())
    return np.hypot(p.east - test.en()[:, 0], p.north - test.en()[:, 1]), p


def test_beats_mean_baseline_on_unseen_spots(ds, trained):
    test = ds.subset("test")
    err, p = _errors(trained, test)
    base, _ = _errors(MeanLocalizer().fit(ds), test)
    assert np.median(err) < 0.5 * np.median(base), (np.median(err), np.median(base))
    assert np.isfinite(p.radius_m).all() and (p.radius_m > 0).all()
    assert trained.info["calibration"]["val_coverage"] >= 0.85


def test_save_load_identical(ds, trained, tmp_path):
    path = trained.save(tmp_path / "m.cgps")
    loaded = Localizer.load(path)
    assert isinstance(loaded, RegressionLocalizer)
    paths = ds.subset("val").paths()
    a, b = trained.predict(paths), loaded.predict(paths)
    np.testing.assert_array_equal(a.lat, b.lat)
    np.testing.assert_array_equal(a.radius_m, b.radius_m)
    ll = loaded.predict_gps(ds.load_image(0))
    assert ll.shape == (2,) and ll.dtype == np.float64
    meta = Localizer.read_metadata(path)
    assert meta["method"] == "regression" and meta["state"]["backbone_key"] == trained.backbone.key
    # the bundle keeps where its training photos were, for the server's offline basemap
    ref = loaded.reference_positions()
    train_ll = np.sort(ds.subset("train").latlon()[:, 0])
    assert ref is not None and len(ref["lat"]) >= len(train_ll) * 0.8
    assert np.all((ref["lat"] >= train_ll.min() - 1e-6) & (ref["lat"] <= train_ll.max() + 1e-6))


def test_corrupt_or_foreign_bundle(ds, trained, tmp_path):
    bad = tmp_path / "garbage.cgps"
    bad.write_bytes(b"not a model at all" * 10)
    with pytest.raises(BundleError, match="not a campusgps model bundle"):
        Localizer.load(bad)
    good = trained.save(tmp_path / "m.cgps")
    cut = tmp_path / "cut.cgps"
    cut.write_bytes(good.read_bytes()[:-500])
    with pytest.raises(BundleError):
        Localizer.load(cut)
    mean = MeanLocalizer().fit(ds).save(tmp_path / "mean.cgps")
    with pytest.raises(BundleError, match="not 'regression'"):
        RegressionLocalizer.load(mean)


def test_odd_images_predict(trained, tmp_path):
    from PIL import Image

    gray = np.full((60, 80), 90, np.uint8)
    rgba = np.zeros((50, 50, 4), np.uint8)
    rgba[..., 3] = 200
    deep = (np.random.default_rng(0).integers(0, 65535, (40, 60, 3))).astype(np.uint16)
    Image.fromarray(np.zeros((2500, 3500, 3), np.uint8)).save(tmp_path / "huge.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    p = trained.predict([gray, rgba, deep, tmp_path / "huge.jpg", tmp_path / "broken.jpg"])
    assert np.isfinite(p.lat[:4]).all()
    assert p.errors[4] and np.isnan(p.lat[4])


def test_no_train_split_and_too_few(ds, tmp_path):
    from campusgps.dataset import Dataset

    unsplit = Dataset(root=ds.root, manifest=ds.manifest.assign(split=""), frame=ds.frame)
    with pytest.raises(UserError, match="campusgps split"):
        RegressionLocalizer(**FAST).fit(unsplit, progress=False)
    few = Dataset(root=ds.root, manifest=ds.manifest.iloc[:3].assign(split="train"), frame=ds.frame)
    with pytest.raises(UserError, match="at least"):
        RegressionLocalizer(**FAST).fit(few, progress=False)
    with pytest.raises(UserError, match="top-N"):
        RegressionLocalizer(**FAST, finetune="partial").fit(ds, progress=False)


def test_top_n_finetune_roundtrip(ds, tmp_path):
    loc = RegressionLocalizer(**{**FAST, "epochs": 25}, finetune="top-1").fit(ds, progress=False)
    path = loc.save(tmp_path / "top.cgps")
    from campusgps.localizers.bundle import read_bundle

    tensors, meta = read_bundle(path)
    assert any(k.startswith("backbone.") for k in tensors) and meta["state"]["finetuned_backbone"]
    test = ds.subset("test")
    a, b = loc.predict(test.paths()), Localizer.load(path).predict(test.paths())
    np.testing.assert_allclose(a.lat, b.lat, rtol=0, atol=1e-9)
    err, _ = _errors(loc, test)
    base, _ = _errors(MeanLocalizer().fit(ds), test)
    assert np.median(err) < np.median(base)


def test_gaussian_nll_radius_varies(ds):
    loc = RegressionLocalizer(**FAST, loss="gaussian-nll").fit(ds, progress=False)
    p = loc.predict(ds.subset("val").paths())
    assert np.isfinite(p.radius_m).all() and np.ptp(p.radius_m) > 0


def test_losses_finite_with_gradients():
    from campusgps.models.losses import LOSSES, position_loss, total_loss

    mu = torch.zeros(4, 2, requires_grad=True)
    ls = torch.zeros(4, requires_grad=True)
    y = torch.zeros(4, 2)
    y[1] = torch.tensor([0.5, -0.2])
    for name in LOSSES:
        loss = total_loss(name, mu, ls, y, scale=30.0)
        g_mu, = torch.autograd.grad(loss, mu)
        assert torch.isfinite(loss) and torch.isfinite(g_mu).all(), name
    d = position_loss("haversine", torch.tensor([[0.1, 0.0]]), None, torch.zeros(1, 2), scale=100.0)
    assert abs(float(d) - 10.0) < 1e-3  # metres
    with pytest.raises(ValueError, match="sigma"):
        position_loss("gaussian-nll", mu, None, y, scale=1.0)


def test_haversine_latlon_matches_numpy():
    from campusgps.geo import haversine_m
    from campusgps.models.losses import haversine_latlon

    a = torch.tensor([[31.2620, 34.8010]], dtype=torch.float64)
    b = torch.tensor([[31.2625, 34.8016]], dtype=torch.float64)
    assert abs(float(haversine_latlon(a, b)) - haversine_m(31.2620, 34.8010, 31.2625, 34.8016)) < 1e-3


def test_fit_radius_scale_gives_target_coverage():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(1, 10, 2000)
    err = np.abs(rng.normal(0, 1, 2000)) * sigma
    s = fit_radius_scale(sigma[:1000], err[:1000], target=0.9)
    assert 0.87 <= coverage(sigma[1000:] * s, err[1000:]) <= 0.93
    assert fit_radius_scale(np.ones(5), np.array([1, 2, 3, 4, 5.0]), 0.9) == 5.0
    assert fit_radius_scale([], [], 0.9) == 1.0


def test_cells_head_default_and_direct_option(ds, trained, tmp_path):
    """Default head classifies into k-means cells of the training positions; --head direct still regresses."""
    spec = trained.spec["head"]
    n_train = int((ds.manifest["split"] == "train").sum())
    assert spec["cells"] == min(256, n_train // 4) and len(spec["centres"]) == spec["cells"]
    # predictions are (local) weighted means of cell centres: never far outside the training area
    p = trained.predict(ds.subset("test").paths())
    en = ds.subset("train").en()
    lo, hi = en.min(0) - 1.0, en.max(0) + 1.0
    assert ((p.east >= lo[0]) & (p.east <= hi[0]) & (p.north >= lo[1]) & (p.north <= hi[1])).all()
    direct = RegressionLocalizer(**{**FAST, "epochs": 30}, head="direct").fit(ds, progress=False)
    assert "cells" not in direct.spec["head"]
    loaded = Localizer.load(direct.save(tmp_path / "d.cgps"))
    np.testing.assert_array_equal(direct.predict(ds.subset("val").paths()).lat,
                                  loaded.predict(ds.subset("val").paths()).lat)
    with pytest.raises(UserError, match="cells"):
        RegressionLocalizer(**FAST, cells=1).fit(ds, progress=False)


def test_cell_predict_soft_vs_local():
    from campusgps.models.heads import RegressionHead

    head = RegressionHead(4, [], 0.0, predict_sigma=False, cells=3, cell_bandwidth=0.1, cell_predict="local")
    head.set_centres(np.array([[-1, 0], [1, 0], [1.05, 0]], np.float32))
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.copy_(torch.tensor([np.log(0.4), np.log(0.3), np.log(0.3)]))
    head.eval()
    with torch.no_grad():
        mu, ls, logits = head(torch.zeros(1, 4))
    # local: the most likely cell is the left one and only cells near it vote -> exactly its centre
    # (soft would put the photo half-way between two places, where it was not taken)
    np.testing.assert_allclose(mu.numpy(), [[-1, 0]], atol=1e-5)
    head.cell_predict = "soft"
    with torch.no_grad():
        mu, _, _ = head(torch.zeros(1, 4))
    np.testing.assert_allclose(mu.numpy(), [[0.4 * -1 + 0.3 * 1 + 0.3 * 1.05, 0]], atol=1e-5)
    assert ls is None and logits.shape == (1, 3)


def test_kmeans_centres_and_bandwidth():
    from campusgps.models.heads import cell_bandwidth, kmeans_centres

    rng = np.random.default_rng(0)
    blobs = np.concatenate([rng.normal(c, 0.01, (30, 2)) for c in ([0, 0], [1, 0], [0, 1])])
    c = kmeans_centres(blobs, 3)
    assert c.shape == (3, 2) and np.sort(np.round(c.sum(1))).tolist() == [0.0, 1.0, 1.0]
    assert 0.9 < cell_bandwidth(c) < 1.1
    assert kmeans_centres(np.zeros((5, 2)), 4).shape == (1, 2)  # no more cells than distinct positions


def test_bundle_with_old_option_name_loads(trained, tmp_path):
    """Bundles saved before radius_coverage was renamed radius_target still load, with the value kept."""
    from campusgps.localizers.bundle import read_bundle, write_bundle

    tensors, meta = read_bundle(trained.save(tmp_path / "new.cgps"))
    cfg = dict(meta["config"])
    cfg["radius_coverage"] = 0.8
    del cfg["radius_target"]
    write_bundle(tmp_path / "old.cgps", tensors, {**meta, "config": cfg})
    old = Localizer.load(tmp_path / "old.cgps")
    assert old.cfg.radius_target == 0.8 and "radius_coverage" not in old.config
