"""Method ``hybrid``: retrieval shortlist -> RootSIFT matching -> RANSAC verification -> spot-level fusion.

1. The retrieval stage (``RetrievalLocalizer``) shortlists the ``shortlist`` most similar references.
2. RootSIFT features of the query (capped keypoints) are matched against every shortlisted reference in one
   matrix product (ratio test + mutual nearest neighbours); each pair is verified by RANSAC (fundamental
   matrix with MAGSAC++, homography fallback).
3. References are grouped into *spots*: photos of the mapping walk taken within ``spot_gap_s`` seconds of
   each other with labels within ``spot_link_m`` share one GPS fix (``geometry.spot_ids``); a spot's position
   is the median of its photos' labels (removes per-photo jitter). References with at least ``min_inliers``
   inliers (fewer for queries with few keypoints, e.g. night: ``low_kp``/``low_kp_factor``) are verified;
   each spot votes once with its best photo's ``inliers ** power`` (or the sum, ``agg``). The density mode
   (bandwidth ``bandwidth_m``) picks the agreeing spots, and the answer is their weighted mean: the query lands
   between verified spots instead of snapping onto one, and independent spots' label noise averages out;
   spots that disagree (look-alikes far away, GPS outliers) are ignored. ``fusion_level="photo"`` keeps the
   previous per-photo fusion (density mode + geometric median).
4. Without query features (blank/black/tiny image) or without any verified reference the answer falls back
   to retrieval and ``flags`` say so (``no_local_features`` / ``fallback_retrieval``).

Settings (min_inliers, power, bandwidth, agg, low-keypoint factor) are chosen, and ``radius_m`` calibrated,
on held-out queries from the *mapped* area (``select_on="mapped"``): up to ``calib_max`` mapping photos,
each searched with its own spot left out and scored against its own GPS label (queries come from mapped
places; the location-grouped val split holds unmapped places and is kept for the retrieval stage's
out-of-area threshold). ``select_on="val"`` restores the previous behaviour.

Local features of the references are extracted once (fit / ``index add``) and stored in the bundle as
uint8 descriptors + float32 keypoints (no pickling); reference capture times are stored so that spots can be
recomputed after ``index add``.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from campusgps.errors import BundleError
from campusgps.localizers.base import Prediction, register
from campusgps.localizers.evidence import brightness
from campusgps.localizers.geometry import (LocalFeatures, extract_local_features, match_many, per_spot_weights,
                                           robust_fuse, spot_centres, spot_ids, verify_pair)
from campusgps.localizers.hybrid_confidence import (ConfidenceModel, apply_hybrid_confidence,
                                                    fit_hybrid_confidence)
from campusgps.localizers.retrieval import RetrievalConfig, RetrievalLocalizer

HYBRID_STATE_VERSION = 1


@dataclass
class HybridConfig(RetrievalConfig):
    shortlist: int = field(default=20, metadata={"help": "references verified per query (retrieval top-N)"})
    night_views: int = field(default=0, metadata={
        "help": "low-light reference views in the retrieval shortlist (see retrieval); off by default: measured "
                "no better at night for hybrid (night median 36.4 -> 35.9 m, dusk 6.6 -> 9.3 m, small campus)"})
    local_max_side: int = field(default=640, metadata={"help": "images are resized to this for local features"})
    max_keypoints: int = field(default=1000, metadata={"help": "RootSIFT keypoints kept per query"})
    ref_keypoints: int = field(default=600, metadata={"help": "RootSIFT keypoints stored per reference"})
    ratio: float = field(default=0.85, metadata={"help": "Lowe ratio test threshold"})
    ransac: str = field(default="magsac", metadata={"help": "magsac (USAC MAGSAC++) or ransac",
                                                     "choices": ["magsac", "ransac"]})
    min_inliers: int = field(default=0, metadata={"help": "inliers for a verified reference (0: chosen on val)"})
    inlier_power: float = field(default=0.0, metadata={"help": "weight = inliers ** power (0: chosen on val)"})
    hybrid_bandwidth_m: float = field(default=0.0, metadata={"help": "fusion bandwidth in m (0: chosen on val)"})
    spot_m: float = field(default=1.0, metadata={"help": "photo-level fusion: labels closer than this share weight"})
    fusion_level: str = field(default="spot", metadata={
        "help": "spot: verified references vote once per spot (photos sharing one GPS fix, grouped by capture "
                "time + label), answer = inlier-weighted mean of the agreeing spots; photo: per photo (old)",
        "choices": ["spot", "photo"]})
    spot_gap_s: float = field(default=20.0, metadata={"help": "photos taken within this many seconds ..."})
    spot_link_m: float = field(default=8.0, metadata={"help": "... and labelled within this many metres share a spot"})
    low_kp: int = field(default=250, metadata={
        "help": "queries with fewer RootSIFT keypoints (night, blur) use min_inliers x low_kp_factor"})
    low_kp_factor: float = field(default=0.0, metadata={"help": "min_inliers factor for low-keypoint queries "
                                                                 "(0: chosen among 1.0 and 0.6 on held-out photos)"})
    select_on: str = field(default="mapped", metadata={
        "help": "mapped: choose fusion settings and calibrate radius_m on mapping photos searched with their own "
                "spot left out (queries come from mapped areas); val: on the location-grouped val split",
        "choices": ["mapped", "val"]})
    calib_max: int = field(default=150, metadata={"help": "at most this many photos for selection/calibration"})


def _pack_lf(lfs: list[LocalFeatures]) -> dict[str, np.ndarray]:
    offs = np.zeros(len(lfs) + 1, dtype=np.int64)
    offs[1:] = np.cumsum([len(f) for f in lfs])
    xy = np.concatenate([f.xy for f in lfs]) if lfs else np.zeros((0, 2), np.float32)
    desc = np.concatenate([f.desc for f in lfs]) if lfs else np.zeros((0, 128), np.uint8)
    wh = np.array([f.size for f in lfs], dtype=np.int32).reshape(-1, 2)
    return {"lf_xy": xy.astype(np.float32), "lf_desc": desc.astype(np.uint8), "lf_offsets": offs, "lf_wh": wh}


def _unpack_lf(t: dict) -> list[LocalFeatures]:
    offs, xy, desc, wh = t["lf_offsets"], t["lf_xy"], t["lf_desc"], t["lf_wh"]
    return [LocalFeatures(xy[offs[i]:offs[i + 1]], desc[offs[i]:offs[i + 1]], (int(wh[i, 0]), int(wh[i, 1])))
            for i in range(len(offs) - 1)]


@register
class HybridLocalizer(RetrievalLocalizer):
    method = "hybrid"
    Config = HybridConfig

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.lf: list[LocalFeatures] = []
        self.hybrid: dict = {}
        self.confidence_model: ConfidenceModel | None = None

    def input_max_side(self) -> int | None:
        return max(self.cfg.local_max_side, 448)

    # ------------------------------------------------------------------ local features
    def _extract(self, img: np.ndarray, max_kp: int) -> LocalFeatures:
        return extract_local_features(img, max_side=self.cfg.local_max_side, max_keypoints=max_kp)

    def _extract_dataset(self, ds) -> list[LocalFeatures]:
        from campusgps.progress import progress_bar

        out = []
        bar = progress_bar(total=len(ds), desc="local features", unit="img")
        for i in range(len(ds)):
            out.append(self._extract(ds.load_image(i, max_side=self.cfg.local_max_side), self.cfg.ref_keypoints))
            bar.update(1)
        bar.close()
        return out

    def _after_add(self, sub) -> None:
        self.lf = list(self.lf) + self._extract_dataset(sub)
        if len(self.lf) != len(self.ref_ids):
            raise BundleError(f"hybrid index out of sync: {len(self.lf)} local feature sets, {len(self.ref_ids)} refs")
        self._refresh_spots()

    # ------------------------------------------------------------------ spots (one GPS fix each)
    def _refresh_spots(self) -> None:
        """Spot id of every reference and the spot's position (median of its photos' labels)."""
        t = np.asarray(getattr(self, "ref_time", np.zeros(0)), np.float64)
        if len(t) != len(self.ref_en):
            t = np.full(len(self.ref_en), np.nan)
        h = getattr(self, "hybrid", {}) or {}
        self.ref_spot = spot_ids(self.ref_en, t, gap_s=h.get("spot_gap_s", self.cfg.spot_gap_s),
                                 link_m=h.get("spot_link_m", self.cfg.spot_link_m),
                                 fallback_m=max(self.cfg.spot_m, 1e-6))
        self.ref_pos = spot_centres(self.ref_en, self.ref_spot)

    def _spots(self):
        if len(getattr(self, "ref_spot", ())) != len(self.ref_en):
            self._refresh_spots()
        return self.ref_spot, self.ref_pos

    # ------------------------------------------------------------------ verification
    def _verify(self, img: np.ndarray, sims: np.ndarray, idx: np.ndarray):
        """Local-feature verification of one query against its shortlist. Returns (n_query_kp, inliers)."""
        q = self._extract(img, self.cfg.max_keypoints)
        inl = np.zeros(len(idx), dtype=np.int64)
        if len(q) < 8:
            return len(q), inl
        refs = [self.lf[i] if i >= 0 else LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8),
                                                          (1, 1)) for i in idx]
        matches = match_many(q.desc, [r.desc for r in refs], ratio=self.cfg.ratio, mutual=True)
        for j, (r, m) in enumerate(zip(refs, matches)):
            if len(m) >= 8:
                inl[j], _ = verify_pair(q.xy, r.xy, m, q.size, r.size, method=self.cfg.ransac)
        return len(q), inl

    def _min_inliers(self, nkp: int, min_inliers: int, factor: float | None = None) -> int:
        """Inlier threshold for a query with ``nkp`` keypoints: lower for few-keypoint (dark) queries."""
        f = self.hybrid.get("low_kp_factor", 1.0) if factor is None else factor
        if nkp < self.hybrid.get("low_kp", self.cfg.low_kp):
            return max(6, int(round(min_inliers * f)))
        return int(min_inliers)

    def _fuse_verified(self, sims, idx, inl, min_inliers, power, bw, agg="max", level=None):
        """Fuse the verified shortlist. Returns (Fused, ok mask over idx, raw radius, agree mask over idx[ok])
        or None when nothing is verified.

        level ``spot``: each spot votes once (its best photo's inliers ** power, or the sum with ``agg="sum"``)
        at the spot's position; the density mode picks the agreeing spots and the answer is their weighted mean,
        so the query lands between verified spots instead of on one of them (their label noise averages out).
        level ``photo``: the old per-photo fusion (density mode + geometric median).
        """
        ok = (inl >= min_inliers) & (idx >= 0)
        if not ok.any():
            return None
        level = level or self.hybrid.get("level", self.cfg.fusion_level)
        ii = idx[ok]
        w = inl[ok].astype(np.float64) ** power
        if level == "spot":
            spot, pos = self._spots()
            us, inv = np.unique(spot[ii], return_inverse=True)
            W = np.zeros(len(us))
            (np.add if agg == "sum" else np.maximum).at(W, inv, w)
            P = np.stack([pos[ii[inv == k]][0] for k in range(len(us))])
            f = robust_fuse(P, W, bandwidth_m=bw, method="mode")
            a = f.agree
            f.center = (P[a] * W[a, None]).sum(0) / W[a].sum()
            d = np.hypot(*(P[a] - f.center).T)
            f.spread_m = float(np.sqrt((W[a] * d ** 2).sum() / W[a].sum()))
            wa = W[a]
            agree_ref = a[inv]
        else:
            pts = self.ref_en[ii]
            w = per_spot_weights(pts, w, self.cfg.spot_m) if self.cfg.spot_m > 0 else w
            f = robust_fuse(pts, w, bandwidth_m=bw, method="mode")
            wa = w[f.agree]
            agree_ref = f.agree
        n_eff = float(wa.sum() ** 2 / max((wa ** 2).sum(), 1e-12))
        raw_r = float(np.sqrt(f.spread_m ** 2 / max(n_eff, 1.0) + (0.25 * bw) ** 2 + 1.0))
        return f, ok, raw_r, agree_ref

    # ------------------------------------------------------------------ fit: selection + calibration on val
    def _fit_extra(self, train, val, val_en, choices: dict) -> None:
        from campusgps.localizers.calibration import fit_radius_scale

        self.lf = self._extract_dataset(train)
        if len(self.lf) != len(self.ref_ids):
            raise BundleError("hybrid: local features and references out of sync")
        self._refresh_spots()
        self.hybrid = {"min_inliers": self.cfg.min_inliers or 15, "power": self.cfg.inlier_power or 1.0,
                       "bandwidth_m": self.cfg.hybrid_bandwidth_m or 8.0, "radius_scale": 1.0, "agg": "max",
                       "level": self.cfg.fusion_level, "spot_gap_s": self.cfg.spot_gap_s,
                       "spot_link_m": self.cfg.spot_link_m, "low_kp": self.cfg.low_kp,
                       "low_kp_factor": self.cfg.low_kp_factor or 1.0}
        SL = self.cfg.shortlist
        if self.cfg.select_on == "mapped":
            # held-out queries from the mapped area: mapping photos searched with their own spot left out
            # (their own GPS fix is shared by the whole spot), scored against their own labels
            spot, _ = self._spots()
            pos = {r: k for k, r in enumerate(self.ref_ids)}
            rows = [j for j, r in enumerate(train.manifest["id"].astype(str)) if r in pos]
            n_spots = len(np.unique(spot))
            if len(rows) < 5 or n_spots < 3:
                return
            pick = np.asarray(rows)[np.linspace(0, len(rows) - 1, min(self.cfg.calib_max, len(rows))).round()
                                   .astype(int)]
            ref_of = np.array([pos[str(train.manifest["id"].iloc[j])] for j in pick])
            truth = self.ref_en[ref_of]
            S0, I0 = self._search(self.ref_desc[ref_of], min(len(self.ref_en), max(SL, self.fusion["k"]) + 60))
            S = np.full((len(pick), max(SL, self.fusion["k"])), -1.0, np.float32)
            I = np.full(S.shape, -1, np.int64)
            for j in range(len(pick)):
                keep = (I0[j] >= 0) & (spot[np.maximum(I0[j], 0)] != spot[ref_of[j]])
                s_, i_ = S0[j][keep][:S.shape[1]], I0[j][keep][:S.shape[1]]
                S[j, :len(s_)], I[j, :len(i_)] = s_, i_
            load = lambda j: train.load_image(int(pick[j]), max_side=self.input_max_side())  # noqa: E731
            source = "mapped (own spot left out)"
            groups = spot[ref_of]
        else:
            if val is None or len(val) < 5:
                return
            if len(val) > self.cfg.calib_max:  # bound the fit time: an even sample of the val photos
                pk = np.linspace(0, len(val) - 1, self.cfg.calib_max).round().astype(int)
                val = val.subset("all")
                val.manifest = val.manifest.iloc[pk].reset_index(drop=True)
                val_en = val_en[pk]
            truth = val_en
            S, I = self._search(self.proj(self._raw_from_dataset(val)), max(SL, self.fusion["k"]))
            load = lambda j: val.load_image(j, max_side=self.input_max_side())  # noqa: E731
            source = "val (location-grouped)"
            groups = None
        records, brights = [], []  # (retrieval search, inliers) per held-out photo, computed once
        for j in range(len(S)):
            img = load(j)
            nkp, inl = self._verify(img, S[j][:SL], I[j][:SL])
            records.append((S[j], I[j], inl, nkp))
            brights.append(brightness(img))
        retr = np.array([self._fuse_one(S[j], I[j], self.fusion["k"], self.fusion["tau"], self.fusion["bandwidth_m"],
                                        self.fusion["method"])[0].center for j in range(len(S))])
        mins = [self.cfg.min_inliers] if self.cfg.min_inliers > 0 else [8, 12, 20, 30]
        pows = [self.cfg.inlier_power] if self.cfg.inlier_power > 0 else [1.0, 2.0]
        bws = [self.cfg.hybrid_bandwidth_m] if self.cfg.hybrid_bandwidth_m > 0 else [5.0, 10.0, 20.0]
        aggs = ["max", "sum"] if self.cfg.fusion_level == "spot" else ["max"]
        lows = [self.cfg.low_kp_factor] if self.cfg.low_kp_factor > 0 else [1.0, 0.6]
        best, grid = None, []
        for mi, pw, bw, agg, lf in itertools.product(mins, pows, bws, aggs, lows):
            cen, rr = [], []
            for j, (s, i, inl, nkp) in enumerate(records):
                r = self._fuse_verified(s[:SL], i[:SL], inl, self._min_inliers(nkp, mi, lf), pw, bw,
                                        agg=agg, level=self.cfg.fusion_level)
                cen.append(r[0].center if r else retr[j])
                rr.append(r[2] if r else np.nan)
            err = np.hypot(*(np.array(cen) - truth).T)
            sc = (float(np.median(err)), float(err.mean()))
            grid.append({"min_inliers": mi, "power": pw, "bandwidth_m": bw, "agg": agg,
                         "low_kp_factor": lf, "median_m": sc[0],
                         "mean_m": sc[1], "verified": float(np.isfinite(rr).mean())})
            if best is None or sc < best[0]:
                best = (sc, {"min_inliers": mi, "power": pw, "bandwidth_m": bw, "agg": agg,
                             "low_kp_factor": lf}, err,
                        np.array(rr))
        (med, mean), params, err, rr = best
        self.hybrid.update(params)
        ok = np.isfinite(rr)
        scale = float(fit_radius_scale(rr[ok], err[ok], target=self.cfg.radius_target)) if ok.sum() >= 3 else 1.0
        self.hybrid["radius_scale"] = scale
        choices["hybrid"] = {**params, "selected_on": source, "n_held_out": int(len(S)),
                             "held_out_median_m": med, "held_out_mean_m": mean, "held_out_verified": float(ok.mean()),
                             "held_out_coverage": float(np.mean(err[ok] <= scale * rr[ok])) if ok.any() else None,
                             "retrieval_held_out_median_m": float(np.median(np.hypot(*(retr - truth).T))),
                             "note": "errors vs the held-out photos' own (noisy) GPS labels"}
        choices["hybrid_grid"] = grid
        self.confidence_model = fit_hybrid_confidence(self, records, brights, retr, truth, groups)
        if self.confidence_model is not None:
            choices["confidence"] = self.confidence_model.info

    # ------------------------------------------------------------------ predict
    def _predict_arrays(self, images: list[np.ndarray]) -> Prediction:
        q = self.proj(self._raw_from_images(images, tta=self.cfg.tta))
        S, I = self._search(q, max(self.cfg.shortlist, self.fusion["k"], 10), use_aug=self._dark_queries(images))
        out = self._predict_from_search(S, I)  # retrieval answer = fallback
        h = self.hybrid
        evidence = []  # per query, for the confidence model (after the loop)
        for j, img in enumerate(images):
            s, i = S[j][:self.cfg.shortlist], I[j][:self.cfg.shortlist]
            nkp, inl = self._verify(img, s, i)
            evidence.append((j, s, i, inl, nkp, brightness(img), np.array([out.east[j], out.north[j]])))
            if nkp < 8:
                out.flags[j] += ["no_local_features", "fallback_retrieval"]
                continue
            r = self._fuse_verified(s, i, inl, self._min_inliers(nkp, h["min_inliers"]), h["power"], h["bandwidth_m"],
                                    agg=h.get("agg", "max"),
                                    level=h.get("level", "photo"))
            if r is None:
                out.flags[j].append("fallback_retrieval")
                for d, n_in in zip(out.neighbors[j], inl):
                    d["inliers"] = int(n_in)
                continue
            f, ok, raw_r, agree_ref = r
            out.east[j], out.north[j] = f.center
            out.radius_m[j] = h["radius_scale"] * raw_r
            if "out_of_area" in out.flags[j] and f.n_agree >= 2:
                out.flags[j].remove("out_of_area")  # geometry confirms a known place
            verified = np.nonzero(ok)[0]
            agree = {int(i[v]) for v, a in zip(verified, agree_ref) if a}
            extra = {int(i[k]): {"inliers": int(inl[k]), "verified": bool(ok[k])} for k in range(len(i))}
            order = np.argsort(-inl, kind="stable")
            out.neighbors[j] = self._neighbors(s[order], i[order], agree=agree, n=10, extra=extra)
            if "out_of_area" in out.flags[j]:
                out.radius_m[j] = max(out.radius_m[j], self.calib.get("far_radius_m", 1000.0))
        for ev in evidence:
            apply_hybrid_confidence(self, out, *ev)
        return out

    # ------------------------------------------------------------------ persistence
    def _state(self):
        t, meta = super()._state()
        if len(self.lf) != len(self.ref_ids):
            raise BundleError("hybrid: local features and references out of sync; cannot save")
        t.update(_pack_lf(self.lf))
        meta["hybrid"] = self.hybrid
        meta["hybrid_state_version"] = HYBRID_STATE_VERSION
        meta["confidence"] = self.confidence_model.to_dict() if self.confidence_model is not None else None
        return t, meta

    @classmethod
    def _from_state(cls, tensors, meta):
        if meta.get("hybrid_state_version") != HYBRID_STATE_VERSION:
            raise BundleError(f"hybrid bundle state version {meta.get('hybrid_state_version')!r} is not "
                              f"{HYBRID_STATE_VERSION}; retrain with `campusgps train DATASET --method hybrid`")
        loc = super()._from_state(tensors, meta)
        loc.lf = _unpack_lf(tensors)
        loc.hybrid = dict(meta["hybrid"])
        loc.confidence_model = ConfidenceModel.from_dict(meta.get("confidence"))
        if len(loc.lf) != len(loc.ref_ids):
            raise BundleError(f"inconsistent hybrid bundle: {len(loc.lf)} local feature sets for "
                              f"{len(loc.ref_ids)} references")
        return loc
