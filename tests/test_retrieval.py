"""Retrieval localizer: beats the mean baseline, robust fusion, round trip, out-of-area, thumbnails."""
import numpy as np
import pytest

from campusgps import Localizer
from campusgps.errors import BundleError
from campusgps.localizers.base import MeanLocalizer
from campusgps.localizers.fusion import per_spot_weights, robust_fuse, weighted_geometric_median
from conftest import make_toy_dataset


@pytest.fixture(scope="module")
def toy16(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("ret") / "toy", n_spots=16, views=4)


@pytest.fixture(scope="module")
def fitted(toy16):
    from campusgps.localizers.retrieval import RetrievalLocalizer

    return RetrievalLocalizer(backbone="tiny-cnn", ft_steps=20).fit(toy16)


def _median_err(p, ds):
    return float(np.median(np.hypot(p.east - ds.en()[:, 0], p.north - ds.en()[:, 1])))


def test_robust_fusion_ignores_far_lookalike():
    rng = np.random.default_rng(0)
    near = rng.normal([10.0, -5.0], 2.0, size=(5, 2))
    far = np.array([[400.0, 300.0]])
    pts = np.concatenate([far, near])
    w = np.array([3.0, 1, 1, 1, 1, 1])  # the look-alike is the single most similar neighbour
    f = robust_fuse(pts, w, bandwidth_m=6.0)
    assert np.hypot(*(f.center - [10, -5])) < 3.0
    assert not f.agree[0] and f.agree[1:].all()
    mean = (pts * w[:, None]).sum(0) / w.sum()
    assert np.hypot(*(mean - [10, -5])) > 100  # what a plain weighted mean would have done
    # geometric median: breakdown point 50%
    gm = weighted_geometric_median(np.array([[0, 0], [1, 0], [0, 1], [1000, 1000]]), np.ones(4))
    assert np.hypot(*gm) < 2
    # one spot's several photos count about once
    w2 = per_spot_weights(np.array([[0, 0], [0.1, 0], [0, 0.1], [20, 20]]), np.ones(4), spot_m=1.0)
    assert w2[:3].sum() < 1.5 and w2[3] == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["mode", "median", "mean", "top1"])
def test_the_fusion_grid_answers_exactly_like_fusing_each_query(method):
    """The fusion settings are chosen by fusing every held-out query at every grid point, all rows at once
    (``fuse_centres``); the choice must rest on the answers ``predict`` gives one query at a time: duplicate
    positions (one spot's photos), look-alikes far away, rows with missing neighbours, a lone neighbour."""
    from campusgps.localizers.retrieval.fusion import fuse_centres, fuse_one

    rng = np.random.default_rng(3)
    ref_en = rng.normal(0, 60, (300, 2))
    ref_en[10:20] = ref_en[10]
    I = np.stack([rng.choice(300, 20, replace=False) for _ in range(120)])
    I[:, :4] = np.where(rng.random((120, 4)) < 0.4, rng.integers(10, 20, (120, 4)), I[:, :4])
    S = -np.sort(-rng.random((120, 20)), axis=1)
    I[5, 3:], I[7, 1:] = -1, -1
    for k, tau, bw in [(1, 0.02, 4.0), (5, 0.05, 8.0), (20, 0.15, 16.0), (20, 0.02, 4.0)]:
        one = np.array([fuse_one(ref_en, S[j], I[j], k, tau, bw, method)[0].center for j in range(len(S))])
        many = fuse_centres(ref_en, S, I, k, tau, bw, method)
        assert np.abs(one - many).max() < 1e-9


def test_retrieval_beats_mean_and_round_trips(fitted, toy16, tmp_path):
    test = toy16.subset("test")
    p = fitted.predict(test.paths())
    mean = MeanLocalizer().fit(toy16).predict(test.paths())
    assert _median_err(p, test) < 0.6 * _median_err(mean, test)
    assert np.isfinite(p.radius_m).all() and (p.radius_m > 0).all()
    nb = p.neighbors[0]
    assert nb and {"id", "east", "north", "score", "file", "lat", "lon"} <= set(nb[0])
    path = fitted.save(tmp_path / "r.cgps")
    loaded = Localizer.load(path)
    q = loaded.predict(test.paths())
    assert np.allclose(q.lat, p.lat) and np.allclose(q.lon, p.lon) and np.allclose(q.radius_m, p.radius_m)
    thumb = loaded.reference_thumbnail(nb[0]["id"])
    assert thumb[:2] == b"\xff\xd8" and len(thumb) < 20000
    assert loaded.reference_thumbnail("nope") is None
    assert len(loaded.reference_positions()["lat"]) == len(loaded.ref_ids)
    sel = loaded.info["selection"]
    assert "whiten_used" in sel and "fusion" in sel and "finetune_used" in sel


def test_out_of_area_noise_is_flagged(fitted, toy16):
    noise = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    p = fitted.predict([noise, toy16.subset("test").paths()[0]])
    assert "out_of_area" in p.flags[0]
    assert p.radius_m[0] >= 1000
    assert "out_of_area" not in p.flags[1]


def test_bundle_from_another_version_is_refused(fitted, tmp_path):
    from campusgps.localizers.bundle import read_bundle, write_bundle

    path = fitted.save(tmp_path / "r.cgps")
    t, meta = read_bundle(path)
    meta["state"]["state_version"] = 999
    write_bundle(tmp_path / "old.cgps", t, meta)
    with pytest.raises(BundleError, match="retrain"):
        Localizer.load(tmp_path / "old.cgps")


def test_empty_index_is_a_clear_error(fitted, tmp_path):
    from campusgps.localizers.retrieval import RetrievalLocalizer

    loc = Localizer.load(fitted.save(tmp_path / "r.cgps"))
    loc._set_refs(np.zeros((0, loc.ref_desc.shape[1]), np.float32), np.zeros((0, 2)))
    loc.thumbs = []
    loc.save(tmp_path / "empty.cgps")
    empty = RetrievalLocalizer.load(tmp_path / "empty.cgps")
    with pytest.raises(BundleError, match="empty reference index"):
        empty.predict([np.zeros((48, 64, 3), np.uint8) + 100])


def test_merge_hits_counts_each_reference_once():
    from campusgps.localizers.retrieval import merge_hits

    S = np.array([[0.9, 0.8, 0.7, 0.95, 0.6]])
    I = np.array([[3, 1, 3, 1, -1]])  # reference 1 hit twice (plain 0.8, night view 0.95), 3 twice
    s, i = merge_hits(S, I, k=4)
    assert i[0].tolist() == [1, 3, -1, -1] and np.allclose(s[0][:2], [0.95, 0.9])
    s, i = merge_hits(S, I, k=2, bad=np.array([False, True, False, False]))
    assert i[0].tolist() == [3, -1]


def test_night_views_are_indexed_merged_and_saved(fitted, toy16, tmp_path):
    from campusgps.localizers.bundle import read_bundle, write_bundle
    from campusgps.localizers.retrieval import RetrievalLocalizer, low_light_view

    img = np.full((32, 32, 3), 200, np.uint8)
    night, dusk = low_light_view(img, "night"), low_light_view(img, "dusk")
    assert night.mean() < 0.5 * img.mean() and night[..., 2].mean() > night[..., 0].mean()
    assert dusk[..., 0].mean() > dusk[..., 2].mean()

    plain = RetrievalLocalizer(backbone="tiny-cnn", finetune="off", night_views=0).fit(toy16)
    assert len(plain.aug_of) == 0  # nothing extra indexed, plain search
    loc = RetrievalLocalizer(backbone="tiny-cnn", finetune="off", night_views=2).fit(toy16)
    assert loc.cfg.night_views == RetrievalLocalizer.Config().night_views == 2  # the default
    assert np.allclose(loc.ref_desc, plain.ref_desc) and loc.ref_ids == plain.ref_ids
    n = len(loc.ref_ids)
    assert loc.aug_desc.shape == (2 * n, loc.ref_desc.shape[1])
    assert np.bincount(loc.aug_of, minlength=n).tolist() == [2] * n  # every reference, train and val
    assert not np.allclose(loc.aug_desc[:n], loc.ref_desc[loc.aug_of[:n]])
    # a reference's own night view is its best hit besides itself: returned once, not twice
    S, I = loc._search(loc.aug_desc[:5], 10)
    for row in I:
        ok = row[row >= 0]
        assert len(ok) == len(set(ok.tolist()))
    assert loc.aug_of[:5].tolist() == I[:, 0].tolist()
    test = toy16.subset("test")
    p = loc.predict(test.paths())
    for nb in p.neighbors:
        assert len({d["id"] for d in nb}) == len(nb)
    # round trip keeps the low-light descriptors and the option
    loaded = Localizer.load(loc.save(tmp_path / "n.cgps"))
    assert loaded.cfg.night_views == 2 and np.array_equal(loaded.aug_of, loc.aug_of)
    assert np.allclose(loaded.aug_desc, loc.aug_desc)
    q = loaded.predict(test.paths())
    assert np.allclose(q.lat, p.lat) and np.allclose(q.radius_m, p.radius_m)
    # query-side gating: queries brighter than night_query_lum search the plain references only
    imgs = [toy16.load_image(i) for i in range(3)]
    plain = loaded._predict_arrays(imgs)
    loaded.cfg.night_query_lum = 1.0  # no toy photo is that dark
    assert not loaded._dark_queries(imgs).any()
    gated = loaded._predict_arrays(imgs)
    aug_index, loaded._aug_index = loaded._aug_index, None
    ref = loaded._predict_arrays(imgs)
    loaded._aug_index = aug_index
    assert np.allclose(gated.east, ref.east) and np.allclose(gated.north, ref.north)
    assert [[d["id"] for d in nb] for nb in gated.neighbors] == [[d["id"] for d in nb] for nb in ref.neighbors]
    loaded.cfg.night_query_lum = 256.0  # every photo is darker than that: same as no gating
    assert np.allclose(loaded._predict_arrays(imgs).east, plain.east)
    loaded.cfg.night_query_lum = 0.0
    # adding mapping photos also indexes their low-light views
    assert loaded.add_references(test) == len(test)
    assert len(loaded.aug_of) == 2 * len(loaded.ref_ids)
    # an older bundle (no low-light tensors, no night_views in its metadata) still loads
    t, meta = read_bundle(loc.save(tmp_path / "n2.cgps"))
    t = {k: v for k, v in t.items() if k not in ("aug_desc", "aug_of")}
    meta["state"].pop("night_views")
    meta["config"].pop("night_views")
    write_bundle(tmp_path / "old.cgps", t, meta)
    old = Localizer.load(tmp_path / "old.cgps")
    assert len(old.aug_of) == 0 and len(old.predict(test.paths()).lat) == len(test)
    old.ref_ids = [r for r in old.ref_ids if r not in set(test.manifest["id"].astype(str))]
    old.ref_desc, old.ref_en = old.ref_desc[:len(old.ref_ids)], old.ref_en[:len(old.ref_ids)]
    assert old.add_references(test) == len(test) and len(old.aug_of) == 0  # stays without low-light views
    again = Localizer.load(old.save(tmp_path / "old2.cgps"))
    assert again._n_night_views() == 0


def test_the_projection_head_never_learns_from_the_photos_that_judge_it(tmp_path, monkeypatch):
    """Without a val split, a random fifth of the mapping photos decides whether the head is kept; the head
    must be trained on the other four fifths, or it would be judged on photos it has seen."""
    from campusgps.localizers.retrieval import RetrievalLocalizer, projection

    ds = make_toy_dataset(tmp_path / "noval", n_spots=16, views=4)
    ds.manifest.loc[ds.manifest["split"] == "val", "split"] = "train"
    ds.save()
    seen = []
    real = projection.finetune_head
    monkeypatch.setattr(projection, "finetune_head", lambda raw, en, base, cfg: (seen.append(len(raw)),
                                                                                 real(raw, en, base, cfg))[1])
    loc = RetrievalLocalizer(backbone="tiny-cnn", ft_steps=5, night_views=0).fit(ds)
    n_train = int((ds.manifest["split"] == "train").sum())
    assert len(loc.ref_ids) == n_train            # the held-out fifth joins the index afterwards ...
    assert len(seen) == 1 and 0.6 * n_train < seen[0] < n_train  # ... but the head never saw it
