"""Evidence vectors that describe how well supported an answer is, per method, for the confidence model.

Each function takes what the method already computed for one query and returns ``(features, places,
answer_weight)``: the feature vector (names in ``*_FEATURES``), the candidate places other than the answer
(:func:`campusgps.localizers.confidence.place_candidates`) and the evidence weight at the answer.

Hybrid evidence is *place level*: inliers of the best reference near the answer against the best reference
of another place >= ``min_sep_m`` away (a ratio test between places, so two identical facades 100 m apart
show up as a tie), how many distinct verified spots agree and how far they spread, the retrieval similarity
near the answer and its margin over other places, the query's keypoints and brightness.
"""
from __future__ import annotations

import numpy as np

from campusgps.localizers.confidence import place_candidates

MIN_SEP_M = 30.0
HYBRID_FEATURES = ("log_inliers_best", "log_inliers_other", "inlier_ratio", "log_agreeing_spots",
                   "log_verified_spots", "support", "log_spread_m", "similarity_near", "similarity_margin",
                   "log_keypoints", "brightness", "fallback", "log_retrieval_distance_m")
RETRIEVAL_FEATURES = ("similarity_top1", "similarity_near", "similarity_margin", "support", "log_agreeing",
                      "log_spread_m", "brightness")


def brightness(img: np.ndarray) -> float:
    """Mean luma of an RGB uint8 image, 0..1 (night photos are dark)."""
    a = np.asarray(img, dtype=np.float32)
    if a.ndim == 3:
        a = a[..., :3] @ np.float32([0.299, 0.587, 0.114])
    return float(a.mean() / 255.0) if a.size else 0.0


def _near_far(answer, pts, min_sep_m):
    d = np.hypot(*(pts - np.asarray(answer, dtype=np.float64).reshape(1, 2)).T)
    return d, d < min_sep_m


def candidate_weights(sims: np.ndarray, inliers: np.ndarray | None = None, tau: float = 0.05) -> np.ndarray:
    """Weight of each shortlisted reference as a candidate place: its inliers (when verified) plus a small
    retrieval term, so unverified references can still name an alternative."""
    s = np.asarray(sims, dtype=np.float64)
    w = 3.0 * np.exp((s - s.max()) / tau) if len(s) else s
    if inliers is not None:
        w = w + np.clip(np.asarray(inliers, dtype=np.float64), 0, None)
    return w


def hybrid_evidence(answer, sims, idx, inliers, min_inliers: int, ref_spot, ref_pos, n_keypoints: int,
                    bright: float, retrieval_answer, min_sep_m: float = MIN_SEP_M, k_alt: int = 2):
    """Evidence of one hybrid answer (see module docstring). ``sims, idx, inliers`` are the verified
    shortlist (idx -1 = empty slot), ``ref_spot``/``ref_pos`` every reference's spot id and spot position."""
    sims, idx, inl = np.asarray(sims, np.float64), np.asarray(idx), np.asarray(inliers, np.float64)
    ok = idx >= 0
    sims, idx, inl = sims[ok], idx[ok], inl[ok]
    answer = np.asarray(answer, dtype=np.float64).reshape(2)
    if not len(idx):
        x = [0, 0, 0, 0, 0, 0, np.log1p(100.0), 0, 0, np.log1p(n_keypoints), bright, 1, 0]
        return np.asarray(x, np.float64), [], 0.0
    pts = np.asarray(ref_pos, dtype=np.float64)[idx]
    spots = np.asarray(ref_spot)[idx]
    d, near = _near_far(answer, pts, min_sep_m)
    ver = inl >= min_inliers
    inl_best = inl[near].max() if near.any() else 0.0
    inl_other = inl[~near].max() if (~near).any() else 0.0
    n_agree = len(np.unique(spots[near & ver]))
    n_ver = len(np.unique(spots[ver]))
    tot = inl[ver].sum()
    support = float(inl[near & ver].sum() / tot) if tot > 0 else 0.0
    if (near & ver).any():
        w = inl[near & ver]
        spread = float(np.sqrt((w * d[near & ver] ** 2).sum() / w.sum()))
    else:
        spread = 100.0
    s_near = sims[near].max() if near.any() else sims.min()
    s_far = sims[~near].max() if (~near).any() else sims.min()
    r_dist = float(np.hypot(*(np.asarray(retrieval_answer, np.float64).reshape(2) - answer)))
    x = [np.log1p(inl_best), np.log1p(inl_other), np.log1p(inl_best) - np.log1p(inl_other), np.log1p(n_agree),
         np.log1p(n_ver), support, np.log1p(spread), s_near, s_near - s_far, np.log1p(n_keypoints), bright,
         float(not ver.any()), np.log1p(r_dist)]
    w = candidate_weights(sims, inl)
    places = place_candidates(pts, w, answer, k=k_alt, min_sep_m=min_sep_m)
    return np.asarray(x, np.float64), places, float(w[d <= min_sep_m / 2].sum())


def retrieval_evidence(answer, sims, idx, ref_en, fused, bright: float, k: int,
                       min_sep_m: float = MIN_SEP_M, k_alt: int = 2):
    """Evidence of one retrieval answer: similarities near the answer vs other places, fusion support."""
    sims, idx = np.asarray(sims, np.float64), np.asarray(idx)
    ok = idx >= 0
    sims, idx = sims[ok], idx[ok]
    answer = np.asarray(answer, dtype=np.float64).reshape(2)
    if not len(idx):
        return np.asarray([0, 0, 0, 0, 0, np.log1p(100.0), bright], np.float64), [], 0.0
    pts = np.asarray(ref_en, dtype=np.float64)[idx]
    d, near = _near_far(answer, pts, min_sep_m)
    s_near = sims[near].max() if near.any() else sims.min()
    s_far = sims[~near].max() if (~near).any() else sims.min()
    x = [sims[0], s_near, s_near - s_far, float(fused.support), np.log1p(fused.n_agree),
         np.log1p(fused.spread_m), bright]
    w = candidate_weights(sims)
    places = place_candidates(pts, w, answer, k=k_alt, min_sep_m=min_sep_m)
    return np.asarray(x, np.float64), places, float(w[d <= min_sep_m / 2].sum())
