"""paired_difference: a real improvement on the same photos is told apart from noise, and noise is not."""
import numpy as np
import pytest

from campusgps.evaluation.metrics import bootstrap_interval, paired_difference


def _errors(n=300, seed=0):
    rng = np.random.default_rng(seed)
    right = rng.gamma(2.0, 3.0, n)            # a few metres
    wrong = rng.uniform(30, 150, n)           # another place
    return np.where(rng.random(n) < 0.8, right, wrong), rng


def test_a_model_that_halves_the_error_of_every_photo_is_significantly_better():
    a, _ = _errors()
    r = paired_difference(a, a * 0.5, "median")
    assert r["n"] == 300 and r["diff"] < 0 and r["hi"] < 0 and r["significant"]
    assert r["b"] == pytest.approx(r["a"] * 0.5, rel=1e-3)


def test_reshuffled_noise_of_the_same_size_is_not_called_a_difference():
    a, rng = _errors()
    b = a.copy()
    swap = rng.random(a.size) < 0.1           # 10 % of the photos get another draw of the same distribution
    b[swap] = _errors(seed=1)[0][swap]
    r = paired_difference(a, b, "median")
    assert r["lo"] <= 0 <= r["hi"] and not r["significant"]


def test_tail_and_accuracy_statistics_and_unplaceable_photos():
    a, _ = _errors()
    b = a.copy()
    b[a > 30] = 10.0                          # every wrong place fixed: P90 falls, accuracy within 20 m rises
    b[:3] = np.nan                            # three photos the second model could not read: left out of both
    p90 = paired_difference(a, b, "p90")
    acc = paired_difference(a, b, "acc20")
    assert p90["n"] == 297 and p90["significant"] and p90["diff"] < -20
    assert acc["significant"] and acc["diff"] > 0.1


def test_wrong_inputs_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="same images"):
        paired_difference(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="unknown statistic"):
        paired_difference(np.ones(3), np.ones(3), "mode")
    assert paired_difference([np.nan], [1.0])["n"] == 0


def test_the_interval_of_one_models_median_narrows_with_more_photos():
    few, _ = _errors(n=40)
    many, _ = _errors(n=1200)
    a, b = bootstrap_interval(few), bootstrap_interval(many)
    assert a["lo"] <= a["value"] <= a["hi"] and b["lo"] <= b["value"] <= b["hi"]
    assert (b["hi"] - b["lo"]) < 0.5 * (a["hi"] - a["lo"])
    assert bootstrap_interval([np.nan, np.inf])["n"] == 0
