"""campusgps.evaluation.confidence: metrics of confidence, radius and alternatives from arrays."""
import numpy as np
import pytest

from campusgps.evaluation.confidence import (alternatives_errors, confidence_report, radius_quality,
                                             reliability, risk_coverage, roc_auc, top_k_recall)


def test_auc_perfect_random_and_single_class():
    y = np.array([0, 0, 1, 1], bool)
    assert roc_auc([0.1, 0.2, 0.8, 0.9], y) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], y) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], y) == 0.5
    assert roc_auc([0.1, 0.2], [True, True]) is None


def test_reliability_bins_and_ece():
    c = np.array([0.1, 0.1, 0.9, 0.9, 0.9, 0.9])
    right = np.array([0, 0, 1, 1, 1, 0], bool)
    table, ece = reliability(c, right)
    assert len(table) == 5 and sum(r["n"] for r in table) == 6
    assert table[0]["n"] == 2 and table[0]["fraction_right"] == 0.0
    assert table[4]["n"] == 4 and table[4]["fraction_right"] == 0.75
    # 2/6 * |0 - 0.1| + 4/6 * |0.75 - 0.9|
    assert ece == pytest.approx(2 / 6 * 0.1 + 4 / 6 * 0.15, abs=1e-4)
    _, ece_perfect = reliability([1.0, 1.0, 0.0], [True, True, False])
    assert ece_perfect == 0.0


def test_risk_coverage_keeps_most_confident():
    e = np.array([1.0, 2.0, 100.0, 200.0])
    c = np.array([0.9, 0.8, 0.2, 0.1])
    rc = risk_coverage(e, c, fractions=[0.5, 1.0])
    assert rc[0]["n"] == 2 and rc[0]["p50_m"] == 1.5 and rc[0]["acc_20m"] == 1.0
    assert rc[1]["n"] == 4 and rc[1]["acc_20m"] == 0.5


def test_radius_quality_thirds_and_auc():
    rng = np.random.default_rng(0)
    e = rng.uniform(0, 60, 300)
    c = 1 - e / 60
    r = e * 1.2 + 1  # covers everything, grows with the error
    q = radius_quality(e, r, c)
    assert q["coverage"] == 1.0 and len(q["coverage_by_third"]) == 3
    assert [t["third"] for t in q["coverage_by_third"]] == ["low", "middle", "high"]
    assert q["auc_wrong"] == 1.0
    assert q["radius_to_error"] == pytest.approx(np.median(r) / np.median(e), rel=1e-3)
    assert radius_quality(e, np.full(300, 5.0), c)["auc_wrong"] == 0.5


def test_top3_recall_counts_alternatives():
    e = np.array([5.0, 50.0, 80.0])
    alts = np.array([[np.nan, np.nan], [100.0, 10.0], [40.0, np.nan]])
    assert top_k_recall(e) == pytest.approx(1 / 3)
    assert top_k_recall(e, alts) == pytest.approx(2 / 3)


def test_alternatives_errors_from_east_north_and_latlon():
    alts = [[{"east": 3.0, "north": 4.0}], [], [{"lat": 1.0, "lon": 2.0}, {"east": 0.0, "north": 0.0}]]
    d = alternatives_errors(alts, np.zeros((3, 2)), to_en=lambda la, lo: (la * 6, lo * 4))
    assert d[0, 0] == 5.0 and np.isnan(d[0, 1]) and np.isnan(d[1]).all()
    assert d[2, 0] == pytest.approx(np.hypot(6, 8)) and d[2, 1] == 0.0


def test_confidence_report_block_and_nan_rows():
    rng = np.random.default_rng(1)
    n = 2000
    c = rng.uniform(0, 1, n)
    right = rng.random(n) < c  # calibrated by construction
    e = np.where(right, rng.uniform(0, 20, n), rng.uniform(21, 150, n))
    e[0] = np.nan
    rep = confidence_report(e, c, radius_m=np.where(right, 25.0, 200.0))
    assert rep["n"] == n - 1
    assert 0.75 < rep["auc"] < 0.9 and rep["ece"] < 0.04
    overconfident = confidence_report(e, np.clip(c + 0.3, 0, 1))
    assert overconfident["ece"] > 0.2 and overconfident["auc"] == pytest.approx(rep["auc"], abs=0.02)
    assert len(rep["reliability"]) == 5 and len(rep["risk_coverage"]) == 10
    assert rep["high_confidence"]["share"] == pytest.approx(np.mean(c[1:] >= 0.8), abs=1e-4)
    assert rep["radius"]["coverage"] > 0.95
    assert rep["top3_recall"] == pytest.approx(right[1:].mean(), abs=1e-4)
    with pytest.raises(ValueError):
        confidence_report([1.0, 2.0], [0.5])
