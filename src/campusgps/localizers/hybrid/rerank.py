"""Place-level re-ranking of the hybrid's verified shortlist: which verified *spot* is the query's place?

The inlier count measures co-visibility, not proximity: a look-alike facade or a spot 40 m further from the
same building can verify with more inliers than the spot the photo was taken at. The re-ranker describes
every verified candidate spot of the shortlist by its evidence (``RERANK_FEATURES``):

* matching strength: best and summed inliers of the spot's photos, how many of them verify, the inlier
  ratio (inliers / tentative matches), all also relative to the strongest candidate;
* retrieval: the spot's best similarity, its margin to the shortlist's top, its best rank;
* co-visibility of the place: how many *other* verified spots lie within ``NEIGHBOUR_M`` and their inliers;
* viewpoint (``verification.GEOMETRY`` of the spot's best pair): the median log ratio of matched keypoint
  scales (a reference 40 m further from the facade sees it at about half the scale), its spread, the median
  displacement of the matched points and the share of the query they cover;

and a logistic regression (:class:`campusgps.localizers.confidence.Logistic`: standardised features, a
handful of JSON floats, regularisation by grouped cross-validation) gives each candidate the probability
that it lies within ``RIGHT_M`` of the photo. It is fitted on the hybrid's held-out mapping photos (each
searched with its own spot left out, labels = their own GPS fixes), never on queries. The answer is the
best-scoring spot with the verified spots that agree with it (``fuse_around``), unless the density mode's
answer already lies within ``KEEP_MODE_M`` of it; the other candidates, in score order, are the
alternative places.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from campusgps.localizers.confidence import Logistic
from campusgps.localizers.hybrid.verification import AGREE_BANDWIDTHS, GEOMETRY, Verified, fuse_verified

RIGHT_M = 20.0
# the density mode's answer is kept when the re-ranker's best spot lies within this distance of it (the same
# place: the mode's weighted mean of agreeing spots is the more precise position there). Seed 1, 150
# queries: replacing it always made the median 8.9 -> 12.0 m; keeping it within 20 m: 8.9 m, > 20 m 59 -> 57
KEEP_MODE_M = 20.0
NEIGHBOUR_M = 15.0
RERANK_FEATURES = (
    "log_inliers", "log_inliers_sum", "log_photos_verified", "rel_inliers", "inlier_ratio",
    "similarity", "similarity_gap", "log_rank", "log_neighbours", "log_neighbour_inliers", "rel_place_inliers",
    "abs_log_scale", "log_scale", "log_scale_mad", "displacement", "query_cover", "rel_abs_log_scale",
    "log_keypoints", "homography_share", "rel_density")
G = {n: k for k, n in enumerate(GEOMETRY)}


@dataclass
class Candidates:
    """Verified candidate spots of one shortlist: spot ids, positions (east/north), evidence ``X`` (one row
    per spot, ``RERANK_FEATURES``) and the shortlist entries of each spot."""
    spots: np.ndarray
    pos: np.ndarray
    X: np.ndarray
    members: list


def spot_candidates(sims, idx, inl, geo, nkp: int, min_inliers: int, ref_spot, ref_pos, power: float = 2.0,
                    bandwidth_m: float = 10.0, agg: str = "sum") -> Candidates | None:
    """The verified spots of one shortlist (``idx`` -1 = empty slot) and their evidence; None when none.
    ``power``/``bandwidth_m``/``agg``: the density mode's settings (``rel_density``: the spot's density
    under them relative to the mode's, so the model can keep the density answer)."""
    sims, idx = np.asarray(sims, np.float64), np.asarray(idx)
    inl = np.asarray(inl, np.float64)
    geo = np.full((len(idx), len(GEOMETRY)), np.nan) if geo is None else np.asarray(geo, np.float64)
    ok = (idx >= 0) & (inl >= min_inliers)
    if not ok.any():
        return None
    spot_of = np.where(idx >= 0, np.asarray(ref_spot)[np.maximum(idx, 0)], -1)
    cand = np.unique(spot_of[ok])
    pos = np.stack([np.asarray(ref_pos, np.float64)[idx[spot_of == c][0]] for c in cand])
    members = [np.nonzero(spot_of == c)[0] for c in cand]
    best = np.array([m[np.argmax(inl[m])] for m in members])
    b_inl = inl[best]
    d = np.hypot(*(pos[:, None] - pos[None]).transpose(2, 0, 1))
    nb = (d <= NEIGHBOUR_M) & ~np.eye(len(cand), dtype=bool)
    nb_inl = nb.astype(np.float64) @ b_inl
    place = b_inl + nb_inl
    s_top = sims[idx >= 0].max()
    w = np.array([(inl[m][inl[m] >= min_inliers] ** power).sum() if agg == "sum" else b ** power
                  for m, b in zip(members, b_inl)])
    dens = np.exp(-0.5 * (d / max(bandwidth_m, 1e-6)) ** 2) @ w
    g = geo[best]
    abs_ls = np.abs(g[:, G["log_scale"]])
    abs_ls_f = np.where(np.isfinite(abs_ls), abs_ls, np.nanmax(abs_ls) if np.isfinite(abs_ls).any() else 0.0)
    X = np.column_stack([
        np.log1p(b_inl), np.log1p([inl[m].sum() for m in members]),
        np.log1p([(inl[m] >= min_inliers).sum() for m in members]), np.log((b_inl + 1) / (b_inl.max() + 1)),
        b_inl / np.maximum(g[:, G["tentative"]], 1), [sims[m].max() for m in members],
        [sims[m].max() - s_top for m in members], np.log1p([m.min() for m in members]),
        np.log1p(nb.sum(1)), np.log1p(nb_inl), np.log((place + 1) / (place.max() + 1)),
        abs_ls, g[:, G["log_scale"]], g[:, G["log_scale_mad"]], g[:, G["displacement"]], g[:, G["query_cover"]],
        abs_ls_f - abs_ls_f.min(), np.full(len(cand), np.log1p(nkp)), g[:, G["homography_share"]],
        np.log(dens / dens.max())])
    return Candidates(cand, pos, np.nan_to_num(X), members)


class Reranker:
    """The fitted re-ranker: a :class:`Logistic` over ``RERANK_FEATURES`` (JSON in the bundle metadata)."""

    def __init__(self, model: Logistic):
        self.model = model

    @classmethod
    def fit(cls, cands: list[Candidates | None], truth, groups=None) -> "Reranker | None":
        """``cands[j]``: candidate spots of held-out photo ``j``; label: within ``RIGHT_M`` of ``truth[j]``.
        Only photos with two or more candidates teach anything about ranking."""
        X, y, g = [], [], []
        for j, c in enumerate(cands):
            if c is None or len(c.spots) < 2:
                continue
            X.append(c.X)
            y.append(np.hypot(*(c.pos - np.asarray(truth[j], np.float64)).T) <= RIGHT_M)
            g.append(np.full(len(c.spots), j if groups is None else groups[j]))
        if len(X) < 10:
            return None
        y = np.concatenate(y)
        if y.sum() < 5 or (~y).sum() < 5:
            return None
        return cls(Logistic.fit(np.concatenate(X), y, RERANK_FEATURES, groups=np.concatenate(g)))

    def scores(self, c: Candidates) -> np.ndarray:
        """Logit of every candidate spot."""
        return self.model.logit(c.X)

    def to_dict(self) -> dict:
        return {"version": 1, "model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Reranker | None":
        if not d:
            return None
        if d.get("version") != 1:
            raise ValueError(f"re-ranker version {d.get('version')!r} is not 1")
        return cls(Logistic.from_dict(d["model"]))


def fuse_around(ref_en, spots, idx, inl, min_inliers, power, bw, chosen_pos, agg="max", level="spot",
                spot_m: float = 1.0, agree: float = AGREE_BANDWIDTHS) -> Verified | None:
    """``fuse_verified`` restricted to the verified references whose spot lies within ``bw`` of the chosen
    place: the answer is the chosen spot with the spots that agree with it. ``ok`` still marks every
    verified entry; ``agree`` (one flag per verified entry) only those fused."""
    idx, inl = np.asarray(idx), np.asarray(inl)
    ok = (inl >= min_inliers) & (idx >= 0)
    _, pos = spots()
    near = (idx >= 0) & (np.hypot(*(np.asarray(pos)[np.maximum(idx, 0)] - np.asarray(chosen_pos)).T) <= bw)
    r = fuse_verified(ref_en, spots, idx, np.where(near, inl, 0), min_inliers, power, bw, agg=agg, level=level,
                      spot_m=spot_m, agree=agree)
    if r is None:
        return None
    agree = np.zeros(int(ok.sum()), bool)
    agree[np.nonzero(near[ok])[0][r.agree]] = True
    return Verified(r.fused, ok, r.raw_radius, agree)
