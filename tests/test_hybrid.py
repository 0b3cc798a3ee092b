"""Hybrid localizer: local-feature verification, fallbacks, round trip."""
import numpy as np
import pytest

from campusgps import Localizer
from conftest import make_toy_dataset


def _scene(seed=0, size=(320, 240)):
    rng = np.random.default_rng(seed)
    img = np.full((size[1], size[0], 3), 90, np.uint8)
    import cv2

    for _ in range(60):  # textured blobs and boxes: plenty of SIFT corners
        x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(5, 40)), y + int(rng.integers(5, 40))), c, -1)
        else:
            cv2.circle(img, (x, y), int(rng.integers(3, 20)), c, -1)
    return img


def test_local_features_verify_same_scene_not_another():
    import cv2

    from campusgps.localizers.hybrid.local_features import extract_local_features, match_many, verify_pair

    a = _scene(0)
    H = np.array([[0.95, 0.05, 10], [-0.04, 0.97, 5], [0, 0, 1]], np.float64)
    b = cv2.warpPerspective(a, H, (320, 240), borderValue=(90, 90, 90))
    c = _scene(1)
    fa, fb, fc = (extract_local_features(x, max_keypoints=500) for x in (a, b, c))
    assert len(fa) > 50 and fa.desc.dtype == np.uint8
    mb, mc = match_many(fa.desc, [fb.desc, fc.desc])
    inl_b, _ = verify_pair(fa.xy, fb.xy, mb, fa.size, fb.size)
    inl_c, _ = verify_pair(fa.xy, fc.xy, mc, fa.size, fc.size)
    assert inl_b >= 30 and inl_c < 15
    assert len(extract_local_features(np.zeros((100, 100, 3), np.uint8))) == 0
    assert len(extract_local_features(np.full((8, 8, 3), 200, np.uint8))) == 0


def _matches_by_definition(q, r, ratio):
    """Lowe ratio + mutual nearest neighbour, one reference at a time, straight from the definition."""
    from campusgps.localizers.hybrid.local_features import descriptors_float

    if len(q) < 2 or len(r) < 2:
        return set()
    s = descriptors_float(q) @ descriptors_float(r).T
    out = set()
    for i in range(len(q)):
        order = np.argsort(-s[i])
        b, sec = order[0], order[1]
        d1, d2 = np.sqrt(max(2 - 2 * s[i, b], 0)), np.sqrt(max(2 - 2 * s[i, sec], 0))
        if d1 < ratio * d2 and np.argmax(s[:, b]) == i:
            out.add((i, int(b)))
    return out


def test_shortlist_matcher_finds_exactly_the_mutual_ratio_matches():
    """The one-GEMM matcher pads references of different sizes (one empty, one with a single keypoint); its
    pairs must be exactly those of the per-reference definition, for every reference."""
    from campusgps.localizers.hybrid.local_features import match_many

    rng = np.random.default_rng(3)
    base = rng.integers(0, 60, (300, 128)).astype(np.uint8)
    q = base[:200].copy()
    q[::3] = rng.integers(0, 60, (len(q[::3]), 128))  # a third of the query's descriptors are unrelated
    twins = np.clip(q[1:60:3].astype(int) + rng.integers(-1, 2, (20, 128)), 0, 255).astype(np.uint8)
    q = np.concatenate([q, twins])  # near-twins: same best reference keypoint, only one of them mutual
    refs = [base[50:250], base[rng.permutation(300)[:120]], np.zeros((0, 128), np.uint8), base[:1],
            rng.integers(0, 60, (80, 128)).astype(np.uint8)]
    for ratio in (0.85, 0.95):
        got = match_many(q, refs, ratio=ratio)
        assert len(got) == len(refs)
        for r, m in zip(refs, got):
            assert {tuple(map(int, x)) for x in m} == _matches_by_definition(q, r, ratio)
        assert len(got[0]) > 50 and len(got[2]) == len(got[3]) == 0
        assert len(match_many(q, refs[:1], ratio=ratio, mutual=False)[0]) > len(got[0])  # the twins


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    from campusgps.localizers.hybrid import HybridLocalizer

    ds = make_toy_dataset(tmp_path_factory.mktemp("hyb") / "toy", n_spots=12, views=4, size=(160, 120))
    return HybridLocalizer(backbone="tiny-cnn", finetune="off", shortlist=10).fit(ds), ds


def test_hybrid_round_trip_and_fallbacks(hybrid, tmp_path):
    loc, ds = hybrid
    test = ds.subset("test")
    p = loc.predict(test.paths())
    assert np.isfinite(p.lat).all() and (p.radius_m > 0).all()
    assert all("inliers" in d for d in p.neighbors[0])
    loaded = Localizer.load(loc.save(tmp_path / "h.cgps"))
    assert loaded.method == "hybrid" and len(loaded.lf) == len(loaded.ref_ids)
    q = loaded.predict(test.paths())
    assert np.allclose(q.lat, p.lat) and np.allclose(q.lon, p.lon)
    blank = loaded.predict([np.zeros((120, 160, 3), np.uint8), np.full((6, 6, 3), 255, np.uint8)])
    for flags in blank.flags:
        assert "no_local_features" in flags and "fallback_retrieval" in flags
    assert np.isfinite(blank.lat).all()
    assert "hybrid" in loc.info["selection"]


def test_hybrid_spot_fusion_selection_and_index_add(hybrid, tmp_path):
    loc, ds = hybrid
    sel = loc.info["selection"]["hybrid"]
    assert sel["selected_on"].startswith("mapped") and loc.hybrid["level"] == "spot"
    assert len(loc.ref_spot) == len(loc.ref_en) == len(loc.ref_time)
    loaded = Localizer.load(loc.save(tmp_path / "h.cgps"))
    assert np.array_equal(loaded._spots()[0], loc._spots()[0])
    # photos added later get local features and spots without refitting
    extra = make_toy_dataset(tmp_path / "extra", n_spots=2, views=3, size=(160, 120), seed=5)
    n = loaded.add_references(extra)
    assert n == len(extra) and len(loaded.lf) == len(loaded.ref_spot) == len(loaded.ref_en)
    p = loaded.predict(extra.paths()[:2])
    assert np.isfinite(p.lat).all()


def test_hybrid_trains_on_a_dataset_without_val_split(tmp_path):
    """No val split: retrieval holds out training photos for calibration, then indexes them too. The
    hybrid's local features must follow the same references (this used to fail: 'out of sync')."""
    from campusgps.localizers.hybrid import HybridLocalizer

    ds = make_toy_dataset(tmp_path / "toy", n_spots=12, views=4, size=(160, 120))
    ds.manifest.loc[ds.manifest["split"] == "val", "split"] = "train"
    ds.save()
    loc = HybridLocalizer(backbone="tiny-cnn", finetune="off", shortlist=10, thumbnails=False).fit(ds)
    n_train = int((ds.manifest["split"] == "train").sum())
    assert len(loc.ref_ids) == len(set(loc.ref_ids)) == n_train
    assert len(loc.lf) == n_train
    p = loc.predict(ds.subset("test").paths()[:4])
    assert np.isfinite(p.lat).all()


def test_hybrid_dark_enhance_setting_round_trips(hybrid, tmp_path):
    import copy
    import dataclasses

    loc, _ = hybrid
    assert loc.cfg.dark_enhance == "off"  # the default (CLAHE on dim queries lost on the unseen campus)
    on = copy.copy(loc)
    on.cfg = dataclasses.replace(loc.cfg, dark_enhance="clahe", dim_lum_min=20.0, dim_lum_max=70.0)
    on.config = dataclasses.asdict(on.cfg)  # what bundles store
    loaded = Localizer.load(on.save(tmp_path / "on.cgps"))
    assert (loaded.cfg.dark_enhance, loaded.cfg.dim_lum_min, loaded.cfg.dim_lum_max) == ("clahe", 20.0, 70.0)
    assert loc.cfg.dark_enhance == "off"


def test_agreement_radius_decides_which_verified_spots_are_averaged():
    """Three verified spots: two near the place (0 m and 6 m) and one 20 m away. With a 10 m bandwidth the
    default agreement (2.5 bandwidths = 25 m) averages all three, pulling the answer towards the far spot;
    agreement 1 bandwidth (10 m) averages the two near ones only."""
    from campusgps.localizers.hybrid.verification import AGREE_BANDWIDTHS, fuse_verified

    pos = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 20.0]])
    spot = np.arange(3)
    idx, inl = np.array([0, 1, 2]), np.array([60, 50, 40])
    wide = fuse_verified(pos, lambda: (spot, pos), idx, inl, 10, 1.0, 10.0)
    narrow = fuse_verified(pos, lambda: (spot, pos), idx, inl, 10, 1.0, 10.0, agree=1.0)
    assert AGREE_BANDWIDTHS == 2.5 and wide.agree.tolist() == [True, True, True]
    assert narrow.agree.tolist() == [True, True, False]
    assert wide.fused.center[1] > 5 and abs(narrow.fused.center[1]) < 1e-9
    np.testing.assert_allclose(narrow.fused.center, [6.0 * 50 / 110, 0.0])
