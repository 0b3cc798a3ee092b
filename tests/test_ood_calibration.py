"""retrieval/ood.py: out-of-area thresholds at a held-out percentile (fast, synthetic numbers)."""
import numpy as np

from campusgps.localizers.retrieval import ood
from campusgps.localizers.retrieval.projection import Projection


def _photos(rng, n, centre, spread):
    raw = centre[None, :] + spread * rng.normal(size=(n, len(centre)))
    return raw / np.linalg.norm(raw, axis=1, keepdims=True)


def test_thresholds_flag_few_own_and_most_foreign_photos():
    rng = np.random.default_rng(0)
    home, away = rng.normal(size=64), rng.normal(size=64)
    proj = Projection(mean=_photos(rng, 500, home, 0.3).mean(axis=0))
    own_S = np.sort(rng.uniform(0.55, 0.8, size=(400, 20)), axis=1)[:, ::-1]
    calib = ood.calibrate(own_S[:300], _photos(rng, 300, home, 0.3), proj, percentile=2.0, margin=0.0)
    assert calib["ood_held_out"]["flagged"] <= 0.05
    new_own = ood.out_of_area(calib, own_S[300:], _photos(rng, 100, home, 0.3), proj)
    assert new_own.mean() <= 0.1
    # photos from elsewhere: as similar to their best references as the own ones, but unlike the place
    foreign = ood.out_of_area(calib, own_S[300:], _photos(rng, 100, away, 0.3), proj)
    assert foreign.mean() >= 0.9
    weak = ood.out_of_area(calib, own_S[300:] - 0.2, None, proj)  # weak matches alone are enough too
    assert weak.mean() >= 0.9


def test_small_held_out_sets_are_lenient_and_old_bundles_keep_their_rule():
    rng = np.random.default_rng(1)
    S = np.sort(rng.uniform(0.5, 0.8, size=(3, 10)), axis=1)[:, ::-1]
    calib = ood.calibrate(S, None, Projection(), percentile=2.0, margin=0.0)
    assert calib["ood_knn_threshold"] < ood.knn_score(S).min() - 0.02  # not "the lowest of 3 photos"
    assert not ood.out_of_area(calib, S, None, Projection()).any()
    old = {"ood_threshold": 0.6}
    assert list(ood.out_of_area(old, np.array([[0.5, 0.4], [0.7, 0.1]]), None, None)) == [True, False]
