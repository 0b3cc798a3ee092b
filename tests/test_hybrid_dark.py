"""Hybrid: illumination normalisation of dim query photos before RootSIFT (``dark_enhance``)."""
import numpy as np

from test_hybrid import _scene, hybrid  # noqa: F401  (the fitted tiny hybrid fixture)


def _dim(img, contrast=0.15, offset=35.0, seed=0):
    """A dusk-like rendition: warm, low contrast, mean gray level ~48 (in the equalized band), slight noise."""
    rng = np.random.default_rng(seed)
    x = img.astype(np.float32) * contrast * np.array([1.0, 0.8, 0.6]) + offset + rng.normal(0, 1.0, img.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def test_clahe_gives_a_dim_query_keypoints_and_inliers_against_its_day_reference():
    import cv2

    from campusgps.localizers.hybrid.local_features import extract_local_features, match_many, verify_pair

    day = _scene(0)
    H = np.array([[0.95, 0.05, 10], [-0.04, 0.97, 5], [0, 0, 1]], np.float64)
    query = _dim(cv2.warpPerspective(day, H, (320, 240), borderValue=(90, 90, 90)))
    ref = extract_local_features(day, max_keypoints=600)
    res = {}
    for mode in ("off", "clahe"):
        q = extract_local_features(query, max_keypoints=1000, enhance=mode)
        m, = match_many(q.desc, [ref.desc])
        res[mode] = (len(q), verify_pair(q.xy, ref.xy, m, q.size, ref.size)[0] if len(m) >= 8 else 0)
    assert res["clahe"][0] >= 3 * max(res["off"][0], 1)
    assert res["clahe"][1] >= 40 and res["off"][1] < 20


def test_clahe_leaves_bright_and_very_dark_photos_alone():
    from campusgps.localizers.hybrid.local_features import DIM_LUM, enhance_dim

    rng = np.random.default_rng(1)
    for level in (DIM_LUM[0] - 15, DIM_LUM[1] + 20):  # night (noise dominates) and day
        g = np.clip(rng.normal(level, 8, (120, 160)), 0, 255).astype(np.uint8)
        assert np.array_equal(enhance_dim(g, "clahe"), g)
    g = np.clip(rng.normal(60, 3, (120, 160)), 0, 255).astype(np.uint8)
    assert enhance_dim(g, "clahe").std() > 2 * g.std()
    assert np.array_equal(enhance_dim(g, "off"), g)


def test_the_re_ranker_path_describes_queries_like_the_plain_one(hybrid):
    """With the re-ranker on, verification computes geometry too: it must extract the query like the plain
    path does (CLAHE on a dim photo when ``dark_enhance=clahe``), or the setting silently does nothing."""
    import copy
    import dataclasses

    from campusgps.localizers.hybrid.local_features import extract_local_features

    loc, _ = hybrid
    on = copy.copy(loc)
    on.cfg = dataclasses.replace(loc.cfg, dark_enhance="clahe")
    dim = _dim(_scene(0))
    idx = np.arange(min(5, len(loc.lf)))
    sims = np.ones(len(idx), np.float32)
    n_plain, _, _ = on._verify_geometry(dim, sims, idx, geometry=False)
    n_geo, _, geo = on._verify_geometry(dim, sims, idx, geometry=True)
    assert geo is not None and n_geo == n_plain == len(on._extract_query(dim))
    plain = extract_local_features(dim, max_side=on.cfg.local_max_side, max_keypoints=on.cfg.max_keypoints)
    assert n_plain > len(plain)  # CLAHE did add keypoints
