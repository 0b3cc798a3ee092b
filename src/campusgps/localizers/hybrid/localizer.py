"""``HybridLocalizer``: the retrieval localizer plus local-feature verification of its shortlist.

Fit: retrieval's fit, then (``_fit_extra``) local features of the references, spots, and the hybrid
settings chosen and ``radius_m`` calibrated on held-out photos (``selection``). Predict: retrieval's answer
as the fallback, replaced by the fused verified references when verification succeeds.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from campusgps.errors import BundleError
from campusgps.localizers.base import Prediction, register
from campusgps.localizers.evidence import brightness
from campusgps.localizers.hybrid.confidence import ConfidenceModel, apply_hybrid_confidence, fit_hybrid_confidence
from campusgps.localizers.hybrid.config import HybridConfig
from campusgps.localizers.hybrid.local_features import (LocalFeatures, extract_local_features,
                                                        pack_local_features, unpack_local_features)
from campusgps.localizers.hybrid.rerank import KEEP_MODE_M, Reranker, fuse_around, spot_candidates
from campusgps.localizers.hybrid.verification import (AGREE_BANDWIDTHS, fuse_verified, inlier_threshold,
                                                      match_shortlist, shortlist_geometry, verify_shortlist)
from campusgps.localizers.retrieval import RetrievalLocalizer
from campusgps.localizers.retrieval.fusion import fuse_with
from campusgps.localizers.selection import calibrate_radius, choices, even_sample, grid_search
from campusgps.localizers.spots import spot_centres, spot_ids

log = logging.getLogger(__name__)
HYBRID_STATE_VERSION = 2  # 2: keypoint scales (lf_scale) and the place re-ranker; 1 still loads (re-ranker off)


@dataclass
class HeldOut:
    """Held-out photos for the hybrid's selection and calibration: their retrieval search (S, I), true
    positions, ``load(j)`` -> image, where they come from, and their spot ids (None for val photos)."""
    S: np.ndarray
    I: np.ndarray
    truth: np.ndarray
    load: Callable[[int], np.ndarray]
    source: str
    groups: np.ndarray | None = None


@register
class HybridLocalizer(RetrievalLocalizer):
    method = "hybrid"
    Config = HybridConfig

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.lf: list[LocalFeatures] = []
        self.hybrid: dict = {}
        self.confidence_model: ConfidenceModel | None = None
        self.reranker: Reranker | None = None
        self.ref_spot = np.zeros(0, np.int64)
        self.ref_pos = np.zeros((0, 2))

    def input_max_side(self) -> int | None:
        return max(self.cfg.local_max_side, 448)

    # ------------------------------------------------------------------ local features
    def _extract_query(self, img: np.ndarray) -> LocalFeatures:
        """A query's (or held-out photo's) features: dim photos are equalized first (``dark_enhance``)."""
        c = self.cfg
        return extract_local_features(img, max_side=c.local_max_side, max_keypoints=c.max_keypoints,
                                      enhance=c.dark_enhance, lum_band=(c.dim_lum_min, c.dim_lum_max))

    def _extract_dataset(self, ds) -> list[LocalFeatures]:
        from campusgps.models.features import current_engine

        if current_engine() is not None and len(ds):  # train --engine ray: per-photo work as engine jobs
            from campusgps.localizers.hybrid.local_features import extract_with_engine

            return extract_with_engine(current_engine(), ds.paths(), self.cfg.local_max_side, self.cfg.ref_keypoints)
        from campusgps.localizers.hybrid.local_features import extract_threaded

        load = lambda i: ds.load_image(i, max_side=self.cfg.local_max_side)  # noqa: E731
        return extract_threaded(load, len(ds), self.cfg.local_max_side, self.cfg.ref_keypoints)

    def _after_add(self, sub) -> None:
        self.lf = list(self.lf) + self._extract_dataset(sub)
        if len(self.lf) != len(self.ref_ids):
            raise BundleError(f"hybrid index out of sync: {len(self.lf)} local feature sets, {len(self.ref_ids)} refs")
        self._refresh_spots()

    # ------------------------------------------------------------------ spots (one GPS fix each)
    def _compute_spots(self):
        """Spot id of every reference and the spot's position (median of its photos' labels)."""
        t = np.asarray(self.ref_time, np.float64)
        if len(t) != len(self.ref_en):
            t = np.full(len(self.ref_en), np.nan)
        h = self.hybrid or {}
        spot = spot_ids(self.ref_en, t, gap_s=h.get("spot_gap_s", self.cfg.spot_gap_s),
                        link_m=h.get("spot_link_m", self.cfg.spot_link_m), fallback_m=max(self.cfg.spot_m, 1e-6))
        return spot, spot_centres(self.ref_en, spot)

    def _refresh_spots(self) -> None:
        self.ref_spot, self.ref_pos = self._compute_spots()

    def _spots(self):
        """(spot ids, spot positions) of the references; computed, not stored, when out of date (read-only)."""
        if len(self.ref_spot) != len(self.ref_en):
            return self._compute_spots()
        return self.ref_spot, self.ref_pos

    # ------------------------------------------------------------------ verification
    def _reranking(self, h: dict | None = None) -> bool:
        """Whether answers use the re-ranker: fitted, switched on by the fit, and ``cfg.rerank`` still
        "learned" (setting it to "off" on a fitted model gives exactly the density-mode answers)."""
        h = self.hybrid if h is None else h
        return self.reranker is not None and h.get("rerank", "off") == "learned" and self.cfg.rerank == "learned"

    def _verify_geometry(self, img: np.ndarray, sims: np.ndarray, idx: np.ndarray, geometry: bool = True):
        """The one place a query is described and verified: (n_query_kp, inliers, geometry), with the viewpoint
        evidence of the pairs when ``geometry`` (only the re-ranker uses it), else geometry None. Only pairs
        that count as verified (the fitted inlier threshold) get geometry."""
        q = self._extract_query(img)
        if not geometry:
            return len(q), verify_shortlist(q, self.lf, idx, self.cfg.ratio, self.cfg.ransac), None
        inl, geo = verify_shortlist(q, self.lf, idx, self.cfg.ratio, self.cfg.ransac, geometry=True,
                                    geometry_min_inliers=self._min_inliers(len(q), self.hybrid["min_inliers"]))
        return len(q), inl, geo

    def _answer(self, sims, idx, inl, geo, nkp: int, params: dict | None = None):
        """The verified answer of one shortlist: ``(Verified or None, candidates, scores)``: the density mode
        of the verified spots; with the re-ranker, when its best-scoring spot lies more than ``KEEP_MODE_M``
        from the mode's answer, that spot and the spots agreeing with it instead (candidates/scores: the
        verified spots and their logits, None without a fitted re-ranker or with ``rerank="off"``)."""
        h = {**self.hybrid, **(params or {})}
        if nkp < 8:
            return None, None, None
        mi = self._min_inliers(nkp, h["min_inliers"], h.get("low_kp_factor"))
        agg, level = h.get("agg", "max"), h.get("level", self.cfg.fusion_level)
        agree = h.get("agree", AGREE_BANDWIDTHS)
        r = self._fuse_verified(sims, idx, inl, mi, h["power"], h["bandwidth_m"], agg=agg, level=level, agree=agree)
        if r is None or not self._reranking(h):
            return r, None, None
        spot, pos = self._spots()
        c = spot_candidates(sims, idx, inl, geo, nkp, mi, spot, pos, h["power"], h["bandwidth_m"], agg)
        z = self.reranker.scores(c)
        best = c.pos[int(np.argmax(z))]
        if np.hypot(*(r.fused.center - best)) > KEEP_MODE_M:
            r = fuse_around(self.ref_en, self._spots, idx, inl, mi, h["power"], h["bandwidth_m"], best, agg=agg,
                            level=level, spot_m=self.cfg.spot_m, agree=agree)
        return r, c, z

    def _min_inliers(self, nkp: int, min_inliers: int, factor: float | None = None) -> int:
        f = self.hybrid.get("low_kp_factor", 1.0) if factor is None else factor
        return inlier_threshold(nkp, min_inliers, f, self.hybrid.get("low_kp", self.cfg.low_kp))

    def _fuse_verified(self, sims, idx, inl, min_inliers, power, bw, agg="max", level=None,
                       agree: float = AGREE_BANDWIDTHS):
        """See ``hybrid.verification.fuse_verified``: (Fused, ok, raw radius, agree) or None."""
        level = level or self.hybrid.get("level", self.cfg.fusion_level)
        return fuse_verified(self.ref_en, self._spots, idx, inl, min_inliers, power, bw, agg=agg, level=level,
                             spot_m=self.cfg.spot_m, agree=agree)

    # ------------------------------------------------------------------ fit: selection + calibration
    def _fit_extra(self, train, val, val_en, choices_out: dict) -> None:
        self.lf = self._extract_dataset(train)
        if len(self.lf) != len(self.ref_ids):
            raise BundleError("hybrid: local features and references out of sync")
        self._refresh_spots()
        self.hybrid = {"min_inliers": self.cfg.min_inliers or 15, "power": self.cfg.inlier_power or 1.0,
                       "bandwidth_m": self.cfg.hybrid_bandwidth_m or 8.0, "radius_scale": 1.0, "agg": "max",
                       "level": self.cfg.fusion_level, "spot_gap_s": self.cfg.spot_gap_s,
                       "spot_link_m": self.cfg.spot_link_m, "low_kp": self.cfg.low_kp,
                       "low_kp_factor": self.cfg.low_kp_factor or 1.0, "rerank": "off",
                       "agree": self.cfg.agree_bandwidths or AGREE_BANDWIDTHS}
        self.reranker = None
        held = self._held_out_mapped(train) if self.cfg.select_on == "mapped" else self._held_out_val(val, val_en)
        if held is not None:
            self._select_and_calibrate(held, choices_out)

    def _held_out_mapped(self, train) -> HeldOut | None:
        """Mapping photos searched with their own spot left out (their GPS fix is shared by the whole spot),
        scored against their own labels: held-out queries from the mapped area."""
        spot, _ = self._spots()
        pos = {r: k for k, r in enumerate(self.ref_ids)}
        rows = [j for j, r in enumerate(train.manifest["id"].astype(str)) if r in pos]
        if len(rows) < 5 or len(np.unique(spot)) < 3:
            return None
        pick = np.asarray(rows)[even_sample(len(rows), self.cfg.calib_max)]
        ref_of = np.array([pos[str(train.manifest["id"].iloc[j])] for j in pick])
        width = max(self.cfg.shortlist, self.fusion["k"])
        S0, I0 = self._search(self.ref_desc[ref_of], min(len(self.ref_en), width + 60))
        S = np.full((len(pick), width), -1.0, np.float32)
        I = np.full(S.shape, -1, np.int64)
        for j in range(len(pick)):
            keep = (I0[j] >= 0) & (spot[np.maximum(I0[j], 0)] != spot[ref_of[j]])
            s_, i_ = S0[j][keep][:width], I0[j][keep][:width]
            S[j, :len(s_)], I[j, :len(i_)] = s_, i_
        load = lambda j: train.load_image(int(pick[j]), max_side=self.input_max_side())  # noqa: E731
        return HeldOut(S, I, self.ref_en[ref_of], load, "mapped (own spot left out)", groups=spot[ref_of])

    def _held_out_val(self, val, val_en) -> HeldOut | None:
        """The location-grouped val photos (an even sample of at most ``calib_max``)."""
        if val is None or len(val) < 5:
            return None
        pk = even_sample(len(val), self.cfg.calib_max)
        val, val_en = val.rows(pk), val_en[pk]
        S, I = self._search(self.proj(self._raw_from_dataset(val)), max(self.cfg.shortlist, self.fusion["k"]))
        load = lambda j: val.load_image(j, max_side=self.input_max_side())  # noqa: E731
        return HeldOut(S, I, val_en, load, "val (location-grouped)")

    def _candidates(self):
        c = self.cfg
        aggs = ["max", "sum"] if c.fusion_level == "spot" else ["max"]
        for mi, pw, bw, agg, lf, ag in itertools.product(
                choices(c.min_inliers, [8, 12, 20, 30]), choices(c.inlier_power, [1.0, 2.0]),
                choices(c.hybrid_bandwidth_m, [5.0, 10.0, 20.0]), aggs, choices(c.low_kp_factor, [1.0, 0.6]),
                choices(c.agree_bandwidths, [AGREE_BANDWIDTHS, 1.0])):
            yield {"min_inliers": mi, "power": pw, "bandwidth_m": bw, "agg": agg, "low_kp_factor": lf, "agree": ag}

    def _verify_held_out(self, held: HeldOut):
        """(records, brightness, retrieval answers, matches): ``records[j] = (sims, idx, inliers, n_keypoints,
        None)``, computed once; the geometry slot is filled by ``_with_geometry`` once the inlier threshold is
        chosen (``matches[j]``: the photo's features and its shortlist's matches, kept for that)."""
        S, I, SL = held.S, held.I, self.cfg.shortlist
        records, brights, matches = [], [], []
        for j in range(len(S)):
            img = held.load(j)
            q = self._extract_query(img)
            inl, pairs = match_shortlist(q, self.lf, I[j][:SL], self.cfg.ratio, self.cfg.ransac)
            records.append((S[j], I[j], inl, len(q), None))
            matches.append((q, pairs))
            brights.append(brightness(img))
        retr = np.array([fuse_with(self.ref_en, S[j], I[j], self.fusion)[0].center for j in range(len(S))])
        return records, brights, retr, matches

    def _with_geometry(self, records, matches):
        """``records`` with the viewpoint geometry (``verification.GEOMETRY``) of every pair that passes the
        fitted inlier threshold, as ``predict`` computes it (None without the re-ranker: nothing reads it)."""
        if self.cfg.rerank != "learned":
            return records
        SL = self.cfg.shortlist
        return [(s, i, inl, nkp, shortlist_geometry(q, self.lf, i[:SL], inl, pairs,
                                                    self._min_inliers(nkp, self.hybrid["min_inliers"])))
                for (s, i, inl, nkp, _), (q, pairs) in zip(records, matches)]

    def refit_confidence(self, dataset) -> ConfidenceModel | None:
        """Refit only the confidence model (same held-out mapping photos as ``fit``, settings kept): for a
        bundle trained before the confidence evidence changed. Needs the dataset the bundle was trained on."""
        held = self._held_out_mapped(dataset.training_rows())
        if held is None:
            return None
        records, brights, retr, matches = self._verify_held_out(held)
        records = self._with_geometry(records, matches)
        self.confidence_model = fit_hybrid_confidence(self, records, brights, retr, held.truth, held.groups)
        return self.confidence_model

    def _fit_reranker(self, records, held: HeldOut, evaluate, choices_out: dict, off, off_rr):
        """Fit the place re-ranker on the held-out photos (with the selected settings) and switch it on.
        ``off``/``off_rr``: the held-out errors and raw radii without it (the grid's winner). Returns those of
        the re-ranked answers (for ``radius_m``), or ``off``/``off_rr`` when no re-ranker could be fitted."""
        import time

        t = time.perf_counter()
        SL, spot, pos = self.cfg.shortlist, *self._spots()
        h = self.hybrid
        cands = [spot_candidates(s[:SL], i[:SL], inl, geo, nkp, self._min_inliers(nkp, h["min_inliers"]), spot, pos,
                                 h["power"], h["bandwidth_m"], h.get("agg", "max")) if nkp >= 8 else None
                 for s, i, inl, nkp, geo in records]
        self.reranker = Reranker.fit(cands, held.truth, held.groups)
        if self.reranker is None:
            choices_out["rerank"] = {"fitted": False, "note": "too few held-out photos with competing spots"}
            return off, off_rr
        self.hybrid["rerank"] = "learned"
        err, extra = evaluate(self.hybrid)
        choices_out["rerank"] = {
            "fitted": True, **self.reranker.model.info, "fit_s": round(time.perf_counter() - t, 2),
            "coef": dict(zip(self.reranker.model.names, [round(float(c), 3) for c in self.reranker.model.coef])),
            "held_out_median_m": float(np.median(err)), "held_out_median_off_m": float(np.median(off)),
            "held_out_over_20m": int((err > 20).sum()), "held_out_over_20m_off": int((off > 20).sum()),
            "note": "in-sample: the re-ranker is fitted on these held-out photos"}
        return err, extra["rr"]

    def _select_and_calibrate(self, held: HeldOut, choices_out: dict) -> None:
        S, truth, SL = held.S, held.truth, self.cfg.shortlist
        records, brights, retr, matches = self._verify_held_out(held)

        memo: dict = {}  # grid points that verify the same pairs give the same answer (no re-ranker yet)

        def answer(j: int, p: dict):
            s, i, inl, nkp, geo = records[j]
            q = {**p, "level": self.cfg.fusion_level}
            if p.get("rerank", self.hybrid["rerank"]) != "off":
                return self._answer(s[:SL], i[:SL], inl, geo, nkp, q)[0]
            ok = inl >= self._min_inliers(nkp, p["min_inliers"], p.get("low_kp_factor"))
            key = (j, ok.tobytes(), p["power"], p["bandwidth_m"], p.get("agg"), p.get("agree"))
            if key not in memo:
                memo[key] = self._answer(s[:SL], i[:SL], inl, geo, nkp, q)[0]
            return memo[key]

        def evaluate(p):  # the grid's settings never read geometry (the re-ranker is off while they are chosen)
            cen, rr = [], []
            for j in range(len(records)):
                r = answer(j, p)
                cen.append(r.fused.center if r else retr[j])
                rr.append(r.raw_radius if r else np.nan)
            return np.hypot(*(np.array(cen) - truth).T), {"rr": np.array(rr),
                                                          "row": {"verified": float(np.isfinite(rr).mean())}}

        best = grid_search(self._candidates(), evaluate)
        params, err, rr = best["params"], best["errors"], best["extra"]["rr"]
        self.hybrid.update(params)
        records = self._with_geometry(records, matches)
        if self.cfg.rerank == "learned":
            err, rr = self._fit_reranker(records, held, evaluate, choices_out, err, rr)
        scale, cov = calibrate_radius(rr, err, self.cfg.radius_target, min_n=3)
        self.hybrid["radius_scale"] = scale
        choices_out["hybrid"] = {
            **params, "selected_on": held.source, "n_held_out": int(len(S)), "held_out_median_m": best["median_m"],
            "held_out_mean_m": best["mean_m"], "held_out_verified": float(np.isfinite(rr).mean()),
            "held_out_coverage": cov, "retrieval_held_out_median_m": float(np.median(np.hypot(*(retr - truth).T))),
            "note": "errors vs the held-out photos' own (noisy) GPS labels"}
        choices_out["hybrid_grid"] = best["grid"]
        self.confidence_model = fit_hybrid_confidence(self, records, brights, retr, truth, held.groups)
        if self.confidence_model is not None:
            choices_out["confidence"] = self.confidence_model.info

    # ------------------------------------------------------------------ predict
    def predict_arrays(self, images: list[np.ndarray], exclude_ids=()) -> Prediction:
        raw = self._raw_from_images(images, tta=self.cfg.tta)
        S, I = self._search(self.proj(raw), max(self.cfg.shortlist, self.fusion["k"], 10),
                            use_aug=self._dark_queries(images), exclude=exclude_ids)
        out = self._predict_from_search(S, I, raw)  # retrieval answer = fallback (out_of_area from raw too)
        for j, img in enumerate(images):
            s, i = S[j][:self.cfg.shortlist], I[j][:self.cfg.shortlist]
            retrieval_center = np.array([out.east[j], out.north[j]])
            nkp, inl, geo = self._verify_one(out, j, img, s, i)
            apply_hybrid_confidence(self, out, j, s, i, inl, nkp, brightness(img), retrieval_center, geo)
        return out

    def _verify_one(self, out: Prediction, j: int, img: np.ndarray, s: np.ndarray, i: np.ndarray):
        """Replace row ``j`` of ``out`` (the retrieval answer) by the verified answer when there is one.
        Returns (query keypoints, inliers and geometry per shortlisted reference)."""
        h = self.hybrid
        nkp, inl, geo = self._verify_geometry(img, s, i, geometry=self._reranking())
        if nkp < 8:
            out.flags[j] += ["no_local_features", "fallback_retrieval"]
            return nkp, inl, geo
        r = self._answer(s, i, inl, geo, nkp, {"level": h.get("level", "photo")})[0]
        if r is None:
            out.flags[j].append("fallback_retrieval")
            for d, n_in in zip(out.neighbors[j], inl):
                d["inliers"] = int(n_in)
            return nkp, inl, geo
        f, ok, raw_r, agree_ref = r
        out.east[j], out.north[j] = f.center
        out.radius_m[j] = h["radius_scale"] * raw_r
        # out_of_area stays: real photos from other continents verify 12-16 spurious inliers (retrieval/ood.py)
        verified = np.nonzero(ok)[0]
        agree = {int(i[v]) for v, a in zip(verified, agree_ref) if a}
        extra = {int(i[k]): {"inliers": int(inl[k]), "verified": bool(ok[k])} for k in range(len(i))}
        order = np.argsort(-inl, kind="stable")
        out.neighbors[j] = self._neighbors(s[order], i[order], agree=agree, n=10, extra=extra)
        if "out_of_area" in out.flags[j]:
            out.radius_m[j] = max(out.radius_m[j], self.calib.get("far_radius_m", 1000.0))
        return nkp, inl, geo

    # ------------------------------------------------------------------ persistence
    def _state(self):
        t, meta = super()._state()
        if len(self.lf) != len(self.ref_ids):
            raise BundleError("hybrid: local features and references out of sync; cannot save")
        t.update(pack_local_features(self.lf))
        meta["hybrid"] = self.hybrid
        meta["hybrid_state_version"] = HYBRID_STATE_VERSION
        meta["confidence"] = self.confidence_model.to_dict() if self.confidence_model is not None else None
        meta["rerank"] = self.reranker.to_dict() if self.reranker is not None else None
        return t, meta

    @classmethod
    def _from_state(cls, tensors, meta):
        version = meta.get("hybrid_state_version")
        if version not in (1, HYBRID_STATE_VERSION):
            raise BundleError(f"hybrid bundle state version {version!r} is not {HYBRID_STATE_VERSION}; retrain "
                              f"with `campusgps train DATASET --method hybrid`")
        loc = super()._from_state(tensors, meta)
        loc.lf = unpack_local_features(tensors)
        loc.hybrid = dict(meta["hybrid"])
        loc.confidence_model = ConfidenceModel.from_dict(meta.get("confidence"))
        try:  # version 1 bundles (no keypoint scales, no re-ranker) predict as with ``rerank=off``
            loc.reranker = Reranker.from_dict(meta.get("rerank"))
        except (ValueError, KeyError, TypeError) as e:
            raise BundleError(f"hybrid bundle: unreadable re-ranker ({e}); retrain the hybrid") from e
        if version == 1:
            log.warning("hybrid bundle from before the place re-ranker (state version 1): predicting without it; "
                        "retrain with `campusgps train DATASET --method hybrid` to use it")
        if len(loc.lf) != len(loc.ref_ids):
            raise BundleError(f"inconsistent hybrid bundle: {len(loc.lf)} local feature sets for "
                              f"{len(loc.ref_ids)} references")
        loc._refresh_spots()
        return loc
