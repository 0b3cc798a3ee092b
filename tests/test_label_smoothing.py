"""Reference spots (photos sharing one GPS fix) and spot-level fusion of verified references."""
import numpy as np

from campusgps.localizers.spots import parse_times_s, spot_centres, spot_ids


def _walk(seed=0, n_spots=40, per_spot=5, sigma=4.0, jitter=1.2):
    """A mapping walk along a line: spots every 6 m visited in random order (times overlap across the day),
    one GPS fix per spot plus small per-photo jitter, photos 6 s apart."""
    rng = np.random.default_rng(seed)
    true_spot = np.stack([np.arange(n_spots) * 6.0, np.zeros(n_spots)], 1)
    fix = rng.normal(0, sigma, (n_spots, 2))
    start = rng.integers(0, 3600 * 10, n_spots).astype(float)
    start[20] = start[0] + 2.0  # a spot 120 m away photographed at (almost) the same time: stays apart
    spot, en, t, truth = [], [], [], []
    for s in range(n_spots):
        for k in range(per_spot):
            spot.append(s)
            truth.append(true_spot[s])
            en.append(true_spot[s] + fix[s] + rng.normal(0, jitter, 2))
            t.append(start[s] + 6.0 * k)
    return np.array(spot), np.array(en), np.array(t), np.array(truth)


def test_spot_ids_from_capture_time_and_labels():
    spot, en, t, _ = _walk()
    got = spot_ids(en, t, gap_s=20, link_m=8)
    # same partition as the true spots (ids may be numbered differently)
    pairs = {(a, b) for a, b in zip(spot, got)}
    assert len(pairs) == len(set(spot)) == len(set(got))
    # without capture times only (near-)identical labels are grouped
    assert len(set(spot_ids(en, None, fallback_m=0.5))) > len(set(spot))
    iso = ["2024-04-16T15:53:01", "2024-04-16T15:53:07", "", "not a time"]
    s = parse_times_s(iso)
    assert s[1] - s[0] == 6.0 and np.isnan(s[2]) and np.isnan(s[3])


def test_spot_centres_remove_per_photo_jitter():
    spot, en, t, truth = _walk(sigma=0.0, jitter=2.0)
    cen = spot_centres(en, spot_ids(en, t))
    before = np.hypot(*(en - truth).T).mean()
    after = np.hypot(*(cen - truth).T).mean()
    assert after < 0.7 * before


def test_spot_level_fusion_interpolates_and_rejects_far_lookalike():
    from campusgps.localizers.hybrid import HybridLocalizer

    spot, en, t, truth = _walk(seed=3, sigma=0.0, jitter=0.0)
    loc = HybridLocalizer(backbone="tiny-cnn")
    loc.ref_en, loc.ref_time = en, t
    loc.hybrid = {"level": "spot"}
    q = np.array([63.0, 0.0])  # between spots 10 (60 m) and 11 (66 m)
    near = [np.nonzero(spot == s)[0] for s in (10, 11)]
    far = np.nonzero(spot == 30)[0][:1]  # one look-alike photo 117 m away, many inliers
    idx = np.concatenate([near[0][:3], near[1][:2], far])
    inl = np.array([40, 30, 20, 45, 25, 60])
    f, ok, raw_r, agree = loc._fuse_verified(np.ones(len(idx)), idx, inl, 15, 1.0, 8.0, agg="max")
    assert np.hypot(*(f.center - q)) < 1.0  # between the spots, not snapped onto one
    assert agree.tolist() == [True] * 5 + [False] and raw_r > 0
    # photo level (old behaviour) is still available
    g, *_ = loc._fuse_verified(np.ones(len(idx)), idx, inl, 15, 1.0, 8.0, level="photo")
    assert np.hypot(*(g.center - q)) < 4.0
