"""metrics.summarize / radius_coverage / grouped: the numbers every report is built from."""
import numpy as np
import pytest

from campusgps.evaluation.metrics import SUMMARY_KEYS, grouped, radius_coverage, summarize

CONTRACT_KEYS = {"n", "mean_m", "median_m", "p75_m", "p90_m", "p95_m", "max_m", "acc_5m", "acc_10m", "acc_20m",
                 "acc_50m"}


def test_summarize_known_values():
    s = summarize(np.arange(1, 101, dtype=float))  # 1..100 m
    assert CONTRACT_KEYS <= set(s) and "p99_m" in s
    assert s["n"] == 100 and s["n_failed"] == 0
    assert s["median_m"] == pytest.approx(50.5)
    assert s["mean_m"] == pytest.approx(50.5)
    assert s["p90_m"] == pytest.approx(np.percentile(np.arange(1, 101), 90))
    assert s["max_m"] == 100
    assert (s["acc_5m"], s["acc_10m"], s["acc_20m"], s["acc_50m"]) == (0.05, 0.10, 0.20, 0.50)


def test_summarize_ignores_failures_and_handles_empty():
    s = summarize([1.0, np.nan, 3.0, np.inf])
    assert s["n"] == 2 and s["n_failed"] == 2 and s["median_m"] == 2.0 and s["acc_5m"] == 1.0
    empty = summarize([])
    assert empty["n"] == 0 and all(empty[k] is None for k in SUMMARY_KEYS if k not in ("n", "n_failed"))


def test_radius_coverage_and_groups():
    cov = radius_coverage([1, 5, 20, np.nan], [10, 10, 10, 10])
    assert cov["n"] == 3 and cov["coverage"] == pytest.approx(2 / 3, abs=1e-4) and cov["median_radius_m"] == 10
    g = grouped([1, 2, 30, 40], ["day", "day", "night", ""], radius_m=[5, 5, 5, 5], extra={"vs_truth": [0, 0, 10, 9]})
    assert list(g) == ["day", "night"]  # empty group label is not a group
    assert g["day"]["median_m"] == 1.5 and g["night"]["n"] == 1 and g["day"]["radius_coverage"] == 1.0
    assert g["night"]["vs_truth"]["median_m"] == 10 and g["night"]["vs_truth"]["radius_coverage"] == 0.0
