"""Method ``hybrid``: retrieval shortlist -> RootSIFT matching -> RANSAC verification -> robust fusion.

1. The retrieval stage (``RetrievalLocalizer``) shortlists the ``shortlist`` most similar references.
2. RootSIFT features of the query (capped keypoints) are matched against every shortlisted reference in one
   matrix product (ratio test + mutual nearest neighbours); each pair is verified by RANSAC (fundamental
   matrix with MAGSAC++, homography fallback).
3. References with at least ``min_inliers`` verified inliers vote with weight ``inliers ** power``; photos
   whose labels sit on one spot share their weight (one GPS fix counts once). The position is the density
   mode of the verified references refined by their weighted geometric median: references that disagree
   (look-alikes far away, wrong labels) fall outside the agreeing set and are ignored. Fusing several
   verified references from different spots averages out their independent label noise, which is how the
   answer can beat the GPS that labelled the photos.
4. Without query features (blank/black/tiny image) or without any verified reference the answer falls back
   to retrieval and ``flags`` say so (``no_local_features`` / ``fallback_retrieval``).

Local features of the references are extracted once (fit / ``index add``) and stored in the bundle as
uint8 descriptors + float32 keypoints (no pickling). Fusion settings are chosen on validation photos and
``radius_m`` is calibrated there.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from campusgps.errors import BundleError
from campusgps.localizers.base import Prediction, register
from campusgps.localizers.geometry import (LocalFeatures, extract_local_features, match_many, per_spot_weights,
                                           robust_fuse, verify_pair)
from campusgps.localizers.retrieval import RetrievalConfig, RetrievalLocalizer

HYBRID_STATE_VERSION = 1


@dataclass
class HybridConfig(RetrievalConfig):
    shortlist: int = field(default=20, metadata={"help": "references verified per query (retrieval top-N)"})
    local_max_side: int = field(default=640, metadata={"help": "images are resized to this for local features"})
    max_keypoints: int = field(default=1000, metadata={"help": "RootSIFT keypoints kept per query"})
    ref_keypoints: int = field(default=600, metadata={"help": "RootSIFT keypoints stored per reference"})
    ratio: float = field(default=0.85, metadata={"help": "Lowe ratio test threshold"})
    ransac: str = field(default="magsac", metadata={"help": "magsac (USAC MAGSAC++) or ransac",
                                                     "choices": ["magsac", "ransac"]})
    min_inliers: int = field(default=0, metadata={"help": "inliers for a verified reference (0: chosen on val)"})
    inlier_power: float = field(default=0.0, metadata={"help": "weight = inliers ** power (0: chosen on val)"})
    hybrid_bandwidth_m: float = field(default=0.0, metadata={"help": "fusion bandwidth in m (0: chosen on val)"})
    spot_m: float = field(default=1.0, metadata={"help": "labels closer than this share weight (one GPS fix)"})
    calib_max: int = field(default=150, metadata={"help": "at most this many val photos for selection/calibration"})


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

    def _fuse_verified(self, sims, idx, inl, min_inliers, power, bw):
        ok = (inl >= min_inliers) & (idx >= 0)
        if not ok.any():
            return None
        pts = self.ref_en[idx[ok]]
        w = inl[ok].astype(np.float64) ** power
        w = per_spot_weights(pts, w, self.cfg.spot_m) if self.cfg.spot_m > 0 else w
        f = robust_fuse(pts, w, bandwidth_m=bw, method="mode")
        n_eff = float(w[f.agree].sum() ** 2 / max((w[f.agree] ** 2).sum(), 1e-12))
        raw_r = float(np.sqrt(f.spread_m ** 2 / max(n_eff, 1.0) + (0.25 * bw) ** 2 + 1.0))
        return f, ok, raw_r

    # ------------------------------------------------------------------ fit: selection + calibration on val
    def _fit_extra(self, train, val, val_en, choices: dict) -> None:
        from campusgps.localizers.calibration import fit_radius_scale

        self.lf = self._extract_dataset(train)
        if len(self.lf) != len(self.ref_ids):
            raise BundleError("hybrid: local features and references out of sync")
        self.hybrid = {"min_inliers": self.cfg.min_inliers or 15, "power": self.cfg.inlier_power or 1.0,
                       "bandwidth_m": self.cfg.hybrid_bandwidth_m or 6.0, "radius_scale": 1.0}
        if val is None or len(val) < 5:
            return
        if len(val) > self.cfg.calib_max:  # bound the fit time: an even sample of the val photos
            pick = np.linspace(0, len(val) - 1, self.cfg.calib_max).round().astype(int)
            val = val.subset("all")
            val.manifest = val.manifest.iloc[pick].reset_index(drop=True)
            val_en = val_en[pick]
        records = []  # (retrieval search, inliers) per val photo, computed once
        q_desc = self.proj(self._raw_from_dataset(val))
        S, I = self._search(q_desc, max(self.cfg.shortlist, self.fusion["k"]))
        for j in range(len(val)):
            img = val.load_image(j, max_side=self.input_max_side())
            nkp, inl = self._verify(img, S[j][:self.cfg.shortlist], I[j][:self.cfg.shortlist])
            records.append((S[j], I[j], inl))
        retr = np.array([self._fuse_one(S[j], I[j], self.fusion["k"], self.fusion["tau"], self.fusion["bandwidth_m"],
                                        self.fusion["method"])[0].center for j in range(len(val))])
        mins = [self.cfg.min_inliers] if self.cfg.min_inliers > 0 else [10, 15, 25, 40]
        pows = [self.cfg.inlier_power] if self.cfg.inlier_power > 0 else [1.0, 2.0]
        bws = [self.cfg.hybrid_bandwidth_m] if self.cfg.hybrid_bandwidth_m > 0 else [3.0, 6.0, 12.0]
        best, grid = None, []
        for mi in mins:
            for pw in pows:
                for bw in bws:
                    cen, rr = [], []
                    for j, (s, i, inl) in enumerate(records):
                        r = self._fuse_verified(s[:self.cfg.shortlist], i[:self.cfg.shortlist], inl, mi, pw, bw)
                        cen.append(r[0].center if r else retr[j])
                        rr.append(r[2] if r else np.nan)
                    err = np.hypot(*(np.array(cen) - val_en).T)
                    sc = (float(np.median(err)), float(err.mean()))
                    grid.append({"min_inliers": mi, "power": pw, "bandwidth_m": bw, "median_m": sc[0],
                                 "mean_m": sc[1], "verified": float(np.isfinite(rr).mean())})
                    if best is None or sc < best[0]:
                        best = (sc, {"min_inliers": mi, "power": pw, "bandwidth_m": bw}, err, np.array(rr))
        (med, mean), params, err, rr = best
        self.hybrid.update(params)
        ok = np.isfinite(rr)
        scale = float(fit_radius_scale(rr[ok], err[ok], target=self.cfg.radius_target)) if ok.sum() >= 3 else 1.0
        self.hybrid["radius_scale"] = scale
        choices["hybrid"] = {**params, "val_median_m": med, "val_mean_m": mean, "val_verified": float(ok.mean()),
                             "val_coverage": float(np.mean(err[ok] <= scale * rr[ok])) if ok.any() else None,
                             "retrieval_val_median_m": float(np.median(np.hypot(*(retr - val_en).T)))}
        choices["hybrid_grid"] = grid

    # ------------------------------------------------------------------ predict
    def _predict_arrays(self, images: list[np.ndarray]) -> Prediction:
        q = self.proj(self._raw_from_images(images, tta=self.cfg.tta))
        S, I = self._search(q, max(self.cfg.shortlist, self.fusion["k"], 10))
        out = self._predict_from_search(S, I)  # retrieval answer = fallback
        h = self.hybrid
        for j, img in enumerate(images):
            s, i = S[j][:self.cfg.shortlist], I[j][:self.cfg.shortlist]
            nkp, inl = self._verify(img, s, i)
            if nkp < 8:
                out.flags[j] += ["no_local_features", "fallback_retrieval"]
                continue
            r = self._fuse_verified(s, i, inl, h["min_inliers"], h["power"], h["bandwidth_m"])
            if r is None:
                out.flags[j].append("fallback_retrieval")
                for d, n_in in zip(out.neighbors[j], inl):
                    d["inliers"] = int(n_in)
                continue
            f, ok, raw_r = r
            out.east[j], out.north[j] = f.center
            out.radius_m[j] = h["radius_scale"] * raw_r
            if "out_of_area" in out.flags[j] and f.n_agree >= 2:
                out.flags[j].remove("out_of_area")  # geometry confirms a known place
            verified = np.nonzero(ok)[0]
            agree = {int(i[v]) for v, a in zip(verified, f.agree) if a}
            extra = {int(i[k]): {"inliers": int(inl[k]), "verified": bool(ok[k])} for k in range(len(i))}
            order = np.argsort(-inl, kind="stable")
            out.neighbors[j] = self._neighbors(s[order], i[order], agree=agree, n=10, extra=extra)
            if "out_of_area" in out.flags[j]:
                out.radius_m[j] = max(out.radius_m[j], self.calib.get("far_radius_m", 1000.0))
        return out

    # ------------------------------------------------------------------ persistence
    def _state(self):
        t, meta = super()._state()
        if len(self.lf) != len(self.ref_ids):
            raise BundleError("hybrid: local features and references out of sync; cannot save")
        t.update(_pack_lf(self.lf))
        meta["hybrid"] = self.hybrid
        meta["hybrid_state_version"] = HYBRID_STATE_VERSION
        return t, meta

    @classmethod
    def _from_state(cls, tensors, meta):
        if meta.get("hybrid_state_version") != HYBRID_STATE_VERSION:
            raise BundleError(f"hybrid bundle state version {meta.get('hybrid_state_version')!r} is not "
                              f"{HYBRID_STATE_VERSION}; retrain with `campusgps train DATASET --method hybrid`")
        loc = super()._from_state(tensors, meta)
        loc.lf = _unpack_lf(tensors)
        loc.hybrid = dict(meta["hybrid"])
        if len(loc.lf) != len(loc.ref_ids):
            raise BundleError(f"inconsistent hybrid bundle: {len(loc.lf)} local feature sets for "
                              f"{len(loc.ref_ids)} references")
        return loc
