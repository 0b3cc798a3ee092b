"""Geometric verification of a retrieval shortlist and fusion of the verified references.

``verify_shortlist`` counts RANSAC inliers between a query and each shortlisted reference;
``inlier_threshold`` lowers the bar for queries with few keypoints (night, blur); ``fuse_verified`` turns
the verified references into a position, per spot (photos sharing one GPS fix) or per photo.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from campusgps.localizers.fusion import Fused, per_spot_weights, robust_fuse
from campusgps.localizers.hybrid.local_features import (LocalFeatures, empty_local_features, match_many,
                                                        ransac_threshold, verify_pair)


# per verified pair (see ``pair_geometry``): tentative matches, and over the RANSAC inliers the median log
# ratio of the query's to the reference's keypoint scale (both relative to image width; > 0: the query sees
# the scene larger, i.e. from closer), its median absolute deviation, the median displacement of the
# matched points (fraction of the width), the share of the query image the inliers cover, and the share of
# the inliers one homography explains (a camera that only turned, i.e. stood on the same spot: all of them)
GEOMETRY = ("tentative", "log_scale", "log_scale_mad", "displacement", "query_cover", "homography_share")


def pair_geometry(q: LocalFeatures, r: LocalFeatures, m: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Viewpoint evidence of one verified pair (``GEOMETRY``; NaN where undefined, e.g. no keypoint scales)."""
    g = np.full(len(GEOMETRY), np.nan)
    g[0] = len(m)
    mi = m[mask]
    if len(mi) < 4:
        return g
    qw, rw = float(max(q.size[0], 1)), float(max(r.size[0], 1))
    if q.scale is not None and r.scale is not None and len(q.scale) and len(r.scale):
        lr = np.log(np.maximum(q.scale[mi[:, 0]], 1e-3) / qw) - np.log(np.maximum(r.scale[mi[:, 1]], 1e-3) / rw)
        g[1] = float(np.median(lr))
        g[2] = float(np.median(np.abs(lr - g[1])))
    g[3] = float(np.median(np.hypot(*(q.xy[mi[:, 0]] / qw - r.xy[mi[:, 1]] / rw).T)))
    pq = q.xy[mi[:, 0]]
    span = (np.percentile(pq, 90, axis=0) - np.percentile(pq, 10, axis=0)) / np.maximum(q.size, 1)
    g[4] = float(np.prod(np.clip(span, 0, 1)))
    if len(mi) >= 8:
        import cv2

        thr = 2 * ransac_threshold(q.size, r.size)  # the homography threshold verify_pair uses
        try:
            H, hm = cv2.findHomography(q.xy[mi[:, 0]].astype(np.float64), r.xy[mi[:, 1]].astype(np.float64),
                                       cv2.RANSAC, thr, maxIters=500, confidence=0.99)
            g[5] = float(hm.mean()) if H is not None and hm is not None else 0.0
        except cv2.error:
            g[5] = 0.0
    return g


def match_shortlist(q: LocalFeatures, ref_lf: list[LocalFeatures], idx: np.ndarray, ratio: float,
                    ransac: str) -> tuple[np.ndarray, list]:
    """RANSAC inliers of the query against every shortlisted reference row (``idx``; -1 = no reference),
    and per entry its ``(tentative matches, inlier mask)`` (None where nothing was verified)."""
    inl = np.zeros(len(idx), dtype=np.int64)
    pairs: list = [None] * len(idx)
    if len(q) >= 8:
        refs = [ref_lf[i] if i >= 0 else empty_local_features() for i in idx]
        matches = match_many(q.desc, [r.desc for r in refs], ratio=ratio, mutual=True)
        for j, (r, m) in enumerate(zip(refs, matches)):
            if len(m) >= 8:
                inl[j], mask = verify_pair(q.xy, r.xy, m, q.size, r.size, method=ransac)
                pairs[j] = (m, mask)
    return inl, pairs


def shortlist_geometry(q: LocalFeatures, ref_lf: list[LocalFeatures], idx: np.ndarray, inl: np.ndarray,
                       pairs: list, min_inliers: int) -> np.ndarray:
    """``G[k]``: :func:`pair_geometry` of the entries with at least ``min_inliers`` inliers (NaN rows for
    the others: only verified pairs' geometry is ever read, and it is the slow part)."""
    geo = np.full((len(idx), len(GEOMETRY)), np.nan)
    for j, pm in enumerate(pairs):
        if pm is not None and inl[j] >= min_inliers:
            geo[j] = pair_geometry(q, ref_lf[idx[j]], *pm)
    return geo


def verify_shortlist(q: LocalFeatures, ref_lf: list[LocalFeatures], idx: np.ndarray, ratio: float,
                     ransac: str, geometry: bool = False, geometry_min_inliers: int = 0):
    """Inliers of the query against every shortlisted reference row (``idx``; -1 = no reference).
    With ``geometry``: ``(inliers, G)``, ``G`` from :func:`shortlist_geometry` (``geometry_min_inliers``)."""
    inl, pairs = match_shortlist(q, ref_lf, idx, ratio, ransac)
    if not geometry:
        return inl
    return inl, shortlist_geometry(q, ref_lf, idx, inl, pairs, geometry_min_inliers)


LOW_KP_FLOOR = 6  # a few-keypoint query's lowered inlier threshold never goes below this


def inlier_threshold(nkp: int, min_inliers: int, factor: float, low_kp: int) -> int:
    """Inlier threshold for a query with ``nkp`` keypoints: lower for few-keypoint (dark) queries."""
    if nkp < low_kp:
        return max(LOW_KP_FLOOR, int(round(min_inliers * factor)))
    return int(min_inliers)


# the answer averages the verified candidates within this many bandwidths of the density mode (the
# default, and what bundles fitted before it was a setting use; see HybridConfig.agree_bandwidths)
AGREE_BANDWIDTHS = 2.5


@dataclass
class Verified:
    """A fused verified shortlist: ``ok`` marks verified entries of the shortlist, ``agree`` the agreeing
    ones among them, ``raw_radius`` the uncalibrated radius."""
    fused: Fused
    ok: np.ndarray
    raw_radius: float
    agree: np.ndarray

    def __iter__(self):  # unpacks as (Fused, ok, raw radius, agree)
        return iter((self.fused, self.ok, self.raw_radius, self.agree))


def _spot_level(spot, pos, ii, w, bw: float, agg: str, agree: float):
    us, inv = np.unique(spot[ii], return_inverse=True)
    W = np.zeros(len(us))
    (np.add if agg == "sum" else np.maximum).at(W, inv, w)
    P = np.stack([pos[ii[inv == k]][0] for k in range(len(us))])
    f = robust_fuse(P, W, bandwidth_m=bw, agree_m=agree * bw, method="mode", median=False)  # centre: below
    a = f.agree
    f.center = (P[a] * W[a, None]).sum(0) / W[a].sum()
    d = np.hypot(*(P[a] - f.center).T)
    f.spread_m = float(np.sqrt((W[a] * d ** 2).sum() / W[a].sum()))
    return f, W[a], a[inv]


def fuse_verified(ref_en, spots, idx, inl, min_inliers, power, bw, agg="max", level="spot",
                  spot_m: float = 1.0, agree: float = AGREE_BANDWIDTHS) -> Verified | None:
    """Fuse the verified shortlist (``inl >= min_inliers``); None when nothing is verified.

    level ``spot``: each spot votes once (its best photo's inliers ** power, or the sum with ``agg="sum"``)
    at the spot's position; the density mode picks the agreeing spots and the answer is their weighted mean,
    so the query lands between verified spots instead of on one of them (their label noise averages out).
    level ``photo``: per-photo fusion (density mode + geometric median). ``spots``: () -> (spot ids, positions).
    ``agree``: candidates within this many bandwidths of the mode agree (are averaged into the answer).
    """
    ok = (inl >= min_inliers) & (idx >= 0)
    if not ok.any():
        return None
    ii = idx[ok]
    w = inl[ok].astype(np.float64) ** power
    if level == "spot":
        f, wa, agree_ref = _spot_level(*spots(), ii, w, bw, agg, agree)
    else:
        pts = ref_en[ii]
        w = per_spot_weights(pts, w, spot_m) if spot_m > 0 else w
        f = robust_fuse(pts, w, bandwidth_m=bw, agree_m=agree * bw, method="mode")
        wa = w[f.agree]
        agree_ref = f.agree
    n_eff = float(wa.sum() ** 2 / max((wa ** 2).sum(), 1e-12))
    raw_r = float(np.sqrt(f.spread_m ** 2 / max(n_eff, 1.0) + (0.25 * bw) ** 2 + 1.0))
    return Verified(f, ok, raw_r, agree_ref)
