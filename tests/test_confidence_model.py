"""campusgps.localizers.confidence: logistic confidence, binned conformal radius, alternatives."""
import json

import numpy as np
import pytest

from campusgps.localizers.confidence import (ConfidenceModel, Logistic, binned_radius, conformal_quantile,
                                             fit_binned_radius, place_candidates)


def _evidence(n, seed=0):
    """Synthetic held-out answers: more inliers -> more often right, smaller errors."""
    rng = np.random.default_rng(seed)
    inl = rng.uniform(0, 100, n)
    p_right = 1 / (1 + np.exp(-(inl - 40) / 8))
    right = rng.random(n) < p_right
    err = np.where(right, rng.exponential(4 + 20 * (1 - inl / 100), n).clip(0, 20), rng.uniform(25, 200, n))
    X = np.stack([inl, rng.normal(0, 1, n)], 1)  # second feature is noise
    return X, err, p_right


def test_logistic_learns_and_round_trips_through_json():
    X, err, p_true = _evidence(600)
    m = Logistic.fit(X, err <= 20, ["inliers", "noise"], groups=np.arange(600) // 3)
    p = m.predict(X)
    assert np.abs(p - p_true).mean() < 0.06
    assert abs(m.coef[0]) > 5 * abs(m.coef[1])  # inspectable: the real evidence dominates
    m2 = Logistic.from_dict(json.loads(json.dumps(m.to_dict())))
    np.testing.assert_allclose(m2.predict(X), p)


def test_logistic_with_one_class_gives_smoothed_base_rate():
    m = Logistic.fit(np.random.default_rng(0).normal(size=(10, 2)), np.ones(10, bool), ["a", "b"])
    assert m.predict([[0.0, 0.0]])[0] == pytest.approx(11 / 12)


def test_conformal_quantile_rank():
    assert conformal_quantile(np.arange(1, 10), 0.9) == 9  # ceil(10 * 0.9) = 9th smallest
    assert conformal_quantile(np.arange(1, 100), 0.5) == 50
    assert conformal_quantile([3.0], 0.9) == 3.0


def test_binned_radius_covers_each_bin_and_shrinks_with_confidence():
    rng = np.random.default_rng(0)
    n = 3000
    conf = rng.uniform(0, 1, n)
    err = rng.exponential(5 + 80 * (1 - conf))  # confident answers have small errors
    spec = fit_binned_radius(conf[:1500], err[:1500], target=0.9, min_per_bin=100)
    assert len(spec["values"]) == 5 and spec["values"] == sorted(spec["values"], reverse=True)
    r = binned_radius(spec, conf[1500:])
    e = err[1500:]
    assert 0.86 < np.mean(e <= r) < 0.94
    third = np.argsort(conf[1500:])
    for part in np.array_split(third, 3):
        assert np.mean(e[part] <= r[part]) > 0.83
    assert np.median(r[third[-500:]]) < 0.3 * np.median(r[third[:500]])


def test_allocated_levels_keep_pooled_coverage_and_tighten_confident_bins():
    """Unsure answers: right (small error) or a look-alike far away; confident: almost always right. The
    allocation spends the coverage where it is cheap in log radius and keeps every bin >= the floor."""
    rng = np.random.default_rng(2)
    n = 4000
    conf = rng.uniform(0, 1, n)
    wrong = rng.random(n) < 0.6 * (1 - conf)
    err = np.where(wrong, rng.uniform(60, 200, n), rng.exponential(4, n))
    a, b = slice(0, 2000), slice(2000, None)
    plain = fit_binned_radius(conf[a], err[a], target=0.9, min_per_bin=200, max_bins=8)
    alloc = fit_binned_radius(conf[a], err[a], target=0.9, min_per_bin=200, max_bins=8, min_bin_target=0.8)
    assert min(alloc["levels"]) >= 0.8 and max(alloc["levels"]) > 0.9
    r_plain, r_alloc = binned_radius(plain, conf[b]), binned_radius(alloc, conf[b])
    assert 0.86 < np.mean(err[b] <= r_alloc) < 0.94
    for part in np.array_split(np.argsort(conf[b]), 3):
        assert np.mean(err[b][part] <= r_alloc[part]) > 0.77
    top = np.argsort(conf[b])[-667:]
    assert np.median(r_alloc[top]) < 0.8 * np.median(r_plain[top])


def test_binned_radius_scaled_by_raw_radius():
    rng = np.random.default_rng(1)
    raw = rng.uniform(1, 50, 2000)
    err = raw * rng.uniform(0, 1, 2000)
    spec = fit_binned_radius(np.full(2000, 0.5), err, raw_radius=raw, target=0.9)
    assert spec["scaled"] and spec["values"][0] == pytest.approx(0.9, abs=0.03)
    assert binned_radius(spec, [0.5], [10.0])[0] == pytest.approx(10 * spec["values"][0])


def test_place_candidates_are_separated_and_ranked():
    pts = np.array([[0, 0], [2, 0], [50, 0], [52, 1], [60, 0], [0, 100], [10, 0]], float)
    w = np.array([50, 40, 30, 30, 5, 20, 1], float)
    places = place_candidates(pts, w, answer=[1, 0], k=2, min_sep_m=30)
    assert len(places) == 2
    (p1, w1), (p2, w2) = places
    assert np.hypot(*(p1 - [51, 0.5])) < 5 and w1 == pytest.approx(65)  # the cluster at 50 m, not 60 alone
    assert np.allclose(p2, [0, 100])
    assert place_candidates(pts[:2], w[:2], answer=[0, 0]) == []


def test_confidence_model_fit_predict_alternatives_and_json():
    X, err, _ = _evidence(400, seed=3)
    rng = np.random.default_rng(3)
    alt_rows = [(i, float(rng.uniform(1, 50)), float(X[i, 0]), 1, float(rng.uniform(0, 100))) for i in range(400)]
    m = ConfidenceModel.fit(X, err, ["inliers", "noise"], alt_rows=alt_rows, min_per_bin=40)
    c = m.confidence(X)
    assert c.shape == (400,) and ((c >= 0) & (c <= 1)).all()
    assert m.info["held_out_auc"] > 0.85 and 0.85 <= m.info["held_out_coverage"] <= 1.0
    r = m.radius(c)
    assert r[np.argmax(c)] <= r[np.argmin(c)]
    alts = m.alternatives([(np.array([100.0, 0.0]), 30.0), (np.array([0.0, 200.0]), 10.0)], answer_weight=20.0,
                          answer_conf=0.7)
    assert [set(a) for a in alts] == [{"east", "north", "probability", "radius_m"}] * 2
    assert sum(a["probability"] for a in alts) <= 0.3 + 1e-6
    m2 = ConfidenceModel.from_dict(json.loads(json.dumps(m.to_dict())))
    np.testing.assert_allclose(m2.confidence(X), c)
    np.testing.assert_allclose(m2.radius(c), r)
    assert ConfidenceModel.from_dict(None) is None
    with pytest.raises(ValueError):
        ConfidenceModel.from_dict({"version": 99})
