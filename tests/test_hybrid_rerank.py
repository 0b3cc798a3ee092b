"""Hybrid place re-ranker: viewpoint evidence beats raw inlier counts; keypoint scales in the bundle."""
import numpy as np
import pytest

from campusgps import Localizer
from campusgps.errors import BundleError
from conftest import make_toy_dataset


def _geo(inl, log_scale):
    from campusgps.localizers.hybrid.verification import GEOMETRY

    g = dict(tentative=2.0 * inl, log_scale=log_scale, log_scale_mad=0.1, displacement=0.05, query_cover=0.3,
             homography_share=0.5)
    return [g[n] for n in GEOMETRY]


def _shortlist(right_inl, right_scale, far_inl, far_scale, n_decoys=3, rng=None):
    """Spot 0 (the photo's place, at 0 m) and spot 1 (a look-alike facade 60 m away) plus weak decoys."""
    inl = [right_inl, far_inl] + [int(rng.integers(0, 9)) if rng is not None else 3 for _ in range(n_decoys)]
    scales = [right_scale, far_scale] + [0.0] * n_decoys
    order = np.argsort(-np.asarray(inl), kind="stable")
    idx = np.arange(len(inl))[order]
    geo = np.array([_geo(inl[k], scales[k]) for k in idx])
    sims = np.linspace(0.9, 0.7, len(idx))
    return sims, idx, np.asarray(inl)[order], geo


REF_POS = np.array([[0.0, 0.0], [60.0, 0.0], [150.0, 40.0], [-120.0, 80.0], [40.0, -150.0]])
REF_SPOT = np.arange(len(REF_POS))


def test_reranker_prefers_the_right_viewpoint_over_more_inliers():
    """A look-alike with MORE inliers but matched keypoints at a very different scale (seen from elsewhere)
    is ranked below the right spot; the inlier-weighted density mode (rerank off) picks the look-alike."""
    from campusgps.localizers.hybrid.rerank import Reranker, fuse_around, spot_candidates
    from campusgps.localizers.hybrid.verification import fuse_verified

    rng = np.random.default_rng(0)
    cands, truth = [], []
    for _ in range(80):  # held-out photos: the look-alike often has more inliers, always another viewpoint
        r, f = int(rng.integers(15, 60)), int(rng.integers(15, 90))
        far_scale = float(rng.choice([-1, 1]) * rng.uniform(0.5, 1.0))
        sl = _shortlist(r, rng.normal(0, 0.1), f, far_scale, rng=rng)
        cands.append(spot_candidates(*sl, 600, 10, REF_SPOT, REF_POS))
        truth.append([0.0, 0.0])
    model = Reranker.fit(cands, np.asarray(truth))
    assert model is not None

    sims, idx, inl, geo = _shortlist(35, 0.05, 80, 0.8)
    c = spot_candidates(sims, idx, inl, geo, 600, 10, REF_SPOT, REF_POS)
    assert len(c.spots) == 2
    z = model.scores(c)
    assert c.spots[int(np.argmax(z))] == 0

    def spots():
        return REF_SPOT, REF_POS

    off = fuse_verified(REF_POS, spots, idx, inl, 10, 1.0, 10.0)
    assert np.hypot(*off.fused.center) > 50  # before: the look-alike wins on inliers
    on = fuse_around(REF_POS, spots, idx, inl, 10, 1.0, 10.0, c.pos[int(np.argmax(z))])
    assert np.hypot(*on.fused.center) < 1 and on.ok.sum() == 2 and on.agree.tolist() == [False, True]
    # the model is plain JSON and reads back the same
    again = Reranker.from_dict(model.to_dict())
    np.testing.assert_allclose(again.scores(c), z)


def test_pair_geometry_sees_the_scale_change():
    """A reference seeing the scene at half the size (from twice as far) gives log scale ratio ~ log 2."""
    import cv2

    from campusgps.localizers.hybrid.local_features import extract_local_features, match_many, verify_pair
    from campusgps.localizers.hybrid.verification import GEOMETRY, pair_geometry
    from test_hybrid import _scene

    a = _scene(3, size=(480, 360))
    b = cv2.resize(a, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    b = cv2.copyMakeBorder(b, 90, 90, 120, 120, cv2.BORDER_CONSTANT, value=(90, 90, 90))  # same 480x360 frame
    fa, fb = extract_local_features(a), extract_local_features(b)
    assert fa.scale is not None and len(fa.scale) == len(fa) and (fa.scale > 0).all()
    m = match_many(fa.desc, [fb.desc])[0]
    _, mask = verify_pair(fa.xy, fb.xy, m, fa.size, fb.size)
    g = dict(zip(GEOMETRY, pair_geometry(fa, fb, m, mask)))
    assert abs(g["log_scale"] - np.log(2)) < 0.25
    same = match_many(fa.desc, [fa.desc])[0]
    g0 = dict(zip(GEOMETRY, pair_geometry(fa, fa, same, np.ones(len(same), bool))))
    assert abs(g0["log_scale"]) < 1e-6 and g0["displacement"] < 1e-6


def test_pack_unpack_keeps_keypoint_scales():
    from campusgps.localizers.hybrid.local_features import (extract_local_features, pack_local_features,
                                                            unpack_local_features)
    from test_hybrid import _scene

    lfs = [extract_local_features(_scene(k), max_keypoints=200) for k in range(3)]
    t = pack_local_features(lfs)
    back = unpack_local_features(t)
    for a, b in zip(lfs, back):
        np.testing.assert_array_equal(a.scale, b.scale)
        np.testing.assert_array_equal(a.xy, b.xy)
    t.pop("lf_scale")
    assert all(f.scale is None for f in unpack_local_features(t))  # bundles from before: no scales


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    from campusgps.localizers.hybrid import HybridLocalizer

    ds = make_toy_dataset(tmp_path_factory.mktemp("hybrr") / "toy", n_spots=12, views=4, size=(160, 120))
    return HybridLocalizer(backbone="tiny-cnn", finetune="off", shortlist=10, thumbnails=False,
                           rerank="learned").fit(ds), ds


def test_bundle_round_trip_with_scales_and_reranker(hybrid, tmp_path):
    loc, ds = hybrid
    assert loc.cfg.rerank == "learned" and "rerank" in loc.info["selection"]
    loaded = Localizer.load(loc.save(tmp_path / "h.cgps"))
    for a, b in zip(loc.lf, loaded.lf):
        np.testing.assert_array_equal(a.scale, b.scale)
    assert loc.reranker is not None and loaded.reranker is not None and loaded.hybrid["rerank"] == "learned"
    assert "rerank_probability" in loc.confidence_model.names
    if loc.reranker is not None:
        np.testing.assert_allclose(loaded.reranker.model.coef, loc.reranker.model.coef)
    test = ds.subset("test").paths()
    p, q = loc.predict(test), loaded.predict(test)
    np.testing.assert_allclose(q.east, p.east)
    np.testing.assert_allclose(q.confidence, p.confidence)


def test_version_1_bundle_predicts_without_reranker_and_unknown_versions_fail(hybrid):
    from campusgps.localizers.hybrid import HybridLocalizer

    loc, ds = hybrid
    t, meta = loc._state()
    t.pop("lf_scale")
    hyb = {k: v for k, v in meta["hybrid"].items() if k != "rerank"}
    old = HybridLocalizer._from_state(dict(t), {**meta, "hybrid_state_version": 1, "rerank": None, "hybrid": hyb})
    old.frame, old.cfg = loc.frame, loc.cfg  # what Localizer.load sets after _from_state
    assert old.reranker is None and all(f.scale is None for f in old.lf)
    p = old.predict(ds.subset("test").paths()[:3])
    assert np.isfinite(p.east).all()
    with pytest.raises(BundleError, match="retrain"):
        HybridLocalizer._from_state(dict(t), {**meta, "hybrid_state_version": 99})


def test_a_damaged_reranker_in_the_bundle_is_a_bundle_error(hybrid):
    """A bundle whose re-ranker metadata is from an unknown version or cut short says so (retrain), not a
    KeyError/ValueError traceback."""
    from campusgps.localizers.hybrid import HybridLocalizer

    loc, _ = hybrid
    t, meta = loc._state()
    for bad in ({"version": 7, "model": {}}, {"version": 1}, {"version": 1, "model": {"names": ["x"]}}):
        with pytest.raises(BundleError, match="re-ranker.*retrain"):
            HybridLocalizer._from_state(dict(t), {**meta, "rerank": bad})


def test_rerank_off_is_the_density_mode(hybrid):
    loc, ds = hybrid
    sims, idx, inl, geo = _shortlist(35, 0.05, 80, 0.8)
    idx = idx % len(loc.ref_en)
    r_off, c, z = loc._answer(sims, idx, inl, geo, 600, {"rerank": "off"})
    assert c is None and z is None
    ref = loc._fuse_verified(sims, idx, inl, loc._min_inliers(600, loc.hybrid["min_inliers"]),
                             loc.hybrid["power"], loc.hybrid["bandwidth_m"], agg=loc.hybrid.get("agg", "max"))
    np.testing.assert_allclose(r_off.fused.center, ref.fused.center)
    old, loc.cfg.rerank = loc.cfg.rerank, "off"  # switching the fitted model off (benchmarks' with/without)
    try:
        assert loc._answer(sims, idx, inl, geo, 600)[1] is None
    finally:
        loc.cfg.rerank = old
    assert loc._answer(sims, idx, inl, geo, 600)[1] is not None


def test_cli_has_the_rerank_option():
    import argparse

    from campusgps.configs import add_dataclass_arguments
    from campusgps.localizers.hybrid import HybridConfig

    p = argparse.ArgumentParser()
    add_dataclass_arguments(p, HybridConfig)
    assert p.parse_args(["--rerank", "off"]).rerank == "off"
    with pytest.raises(SystemExit):
        p.parse_args(["--rerank", "sometimes"])


def test_rerank_evidence_orders_alternatives_by_score():
    """The re-ranker's places: score order, >= 30 m from the answer and from each other; margin to the best
    competing place."""
    from campusgps.localizers.hybrid.confidence import rerank_evidence
    from campusgps.localizers.hybrid.rerank import Candidates

    pos = np.array([[0.0, 0.0], [5.0, 0.0], [100.0, 0.0], [110.0, 0.0], [0.0, 200.0]])
    c = Candidates(np.arange(5), pos, np.zeros((5, 1)), [])
    z = np.array([2.0, 1.5, -1.0, 0.5, -3.0])
    x, places, aw = rerank_evidence([1.0, 0.0], c, z)
    assert [tuple(p) for p, _ in places] == [(110.0, 0.0), (0.0, 200.0)]
    assert x[1] == pytest.approx(2.0 - 0.5) and aw == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert places[0][1] > places[1][1]
    assert rerank_evidence([1.0, 0.0], None, None) is None
