"""Method ``hybrid``: retrieval shortlist -> RootSIFT matching -> RANSAC verification -> spot-level fusion.

1. The retrieval stage (``RetrievalLocalizer``) shortlists the ``shortlist`` most similar references.
2. RootSIFT features of the query (capped keypoints) are matched against every shortlisted reference in one
   matrix product (ratio test + mutual nearest neighbours); each pair is verified by RANSAC (fundamental
   matrix with MAGSAC++, homography fallback).
3. References are grouped into *spots*: photos of the mapping walk taken within ``spot_gap_s`` seconds of
   each other with labels within ``spot_link_m`` share one GPS fix (``localizers.spots.spot_ids``); a spot's position
   is the median of its photos' labels (removes per-photo jitter). References with at least ``min_inliers``
   inliers (fewer for queries with few keypoints, e.g. night: ``low_kp``/``low_kp_factor``) are verified;
   each spot votes once with its best photo's ``inliers ** power`` (or the sum, ``agg``). The density mode
   (bandwidth ``bandwidth_m``) picks the agreeing spots, and the answer is their weighted mean: the query lands
   between verified spots instead of snapping onto one, and independent spots' label noise averages out;
   spots that disagree (look-alikes far away, GPS outliers) are ignored. ``fusion_level="photo"`` keeps the
   previous per-photo fusion (density mode + geometric median).
   With ``rerank="learned"`` (``rerank.py``) a logistic re-ranker fitted on the held-out mapping photos scores
   every verified spot (inliers, co-visibility of its place, retrieval, keypoint-scale/homography viewpoint
   evidence); when its best spot lies more than 20 m from the mode's answer, that spot and the spots agreeing
   with it are the answer. Its probability and margin feed the confidence model, its ordering the
   alternatives. ``rerank="off"``: the density mode alone.
4. Without query features (blank/black/tiny image) or without any verified reference the answer falls back
   to retrieval and ``flags`` say so (``no_local_features`` / ``fallback_retrieval``).

Settings (min_inliers, power, bandwidth, agg, low-keypoint factor) are chosen, and ``radius_m`` calibrated,
on held-out queries from the *mapped* area (``select_on="mapped"``): up to ``calib_max`` mapping photos,
each searched with its own spot left out and scored against its own GPS label (queries come from mapped
places; the location-grouped val split holds unmapped places and is kept for the retrieval stage's
out-of-area threshold). ``select_on="val"`` restores the previous behaviour.

Local features of the references are extracted once (fit / ``index add``) and stored in the bundle as
uint8 descriptors + float32 keypoints and keypoint scales (no pickling); reference capture times are stored so that spots can be
recomputed after ``index add``.

Modules: ``local_features`` (RootSIFT, matching, RANSAC, bundle packing), ``verification`` (shortlist
verification and its per-pair viewpoint geometry, inlier thresholds, spot/photo fusion of verified references),
``rerank`` (place re-ranker), ``confidence`` (confidence, radius, alternatives), ``config`` (``HybridConfig``),
``localizer`` (``HybridLocalizer``).
"""
from campusgps.localizers.hybrid.config import HybridConfig
from campusgps.localizers.hybrid.localizer import HybridLocalizer

__all__ = ["HybridConfig", "HybridLocalizer"]
