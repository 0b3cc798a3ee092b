"""Method ``ensemble``: several localizers (bundles or freshly trained) fused robustly.

Each member answers a position and its own calibrated ``radius_m``. Answers are weighted by 1 / radius^2,
seeded by their weighted geometric median; a member whose answer lies farther than ``outlier_k`` times its
own radius (and more than ``outlier_min_m``) from that seed is dropped, the rest are averaged with the same
weights. The ensemble's radius combines the survivors' radii and their disagreement and is calibrated on
validation photos; on the same photos a confidence model is fitted on the members' confidences and agreement
(``ensemble_confidence``), which gives every answer a confidence, a radius per confidence bin and up to two
alternative places pooled from the members' answers and alternatives. With ``tta`` every member also sees photometric variants of the photo (gamma brighten,
darken, contrast stretch) and those answers are fused the same way: TTA for any method.

The bundle embeds every member's bundle file as a uint8 array, so an ensemble stays one file.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from campusgps.errors import BundleError, UserError
from campusgps.localizers.base import Localizer, Prediction, register
from campusgps.localizers.confidence import ConfidenceModel
from campusgps.localizers.ensemble_confidence import (apply_ensemble_confidence, evidence,
                                                      fit_ensemble_confidence)
from campusgps.localizers.fusion import weighted_geometric_median
from campusgps.localizers.selection import calibrate_radius, even_sample


@dataclass
class EnsembleConfig:
    members: list[str] = field(default_factory=list, metadata={
        "help": "member model bundles (comma-separated paths); when empty, --methods are trained"})
    methods: list[str] = field(default_factory=lambda: ["retrieval", "regression"], metadata={
        "help": "methods trained as members when --members is empty"})
    outlier_k: float = field(default=2.0, metadata={"help": "drop a member farther than k x its radius from the "
                                                              "robust centre"})
    outlier_min_m: float = field(default=10.0, metadata={"help": "... and farther than this many metres"})
    tta: bool = field(default=False, metadata={"help": "photometric test-time augmentation for every member"})
    radius_target: float = field(default=0.9, metadata={"help": "fraction of val truths inside radius_m"})


def fuse_members(points: np.ndarray, radii: np.ndarray, outlier_k: float = 2.0, outlier_min_m: float = 10.0):
    """Robust inverse-variance fusion. Returns (centre (2,), keep mask, raw radius)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    r = np.asarray(radii, dtype=np.float64)
    ok = np.isfinite(pts).all(1) & np.isfinite(r) & (r > 0)
    if not ok.any():
        return np.array([np.nan, np.nan]), ok, np.nan
    w = np.where(ok, 1.0 / np.maximum(r, 1e-3) ** 2, 0.0)
    seed = weighted_geometric_median(pts[ok], w[ok])
    d = np.hypot(*(pts - seed).T)
    keep = ok & ((d <= outlier_k * r) | (d <= outlier_min_m))
    if not keep.any():
        keep = ok & (d <= d[ok].min() + 1e-9)
    c = (pts[keep] * w[keep, None]).sum(0) / w[keep].sum()
    comb = 1.0 / np.sqrt(w[keep].sum())
    spread = np.sqrt((w[keep] * ((pts[keep] - c) ** 2).sum(1)).sum() / w[keep].sum())
    return c, keep, float(np.hypot(comb, spread))


def _bundle_bytes(path: str | Path) -> bytes:
    p = Path(path)
    if not p.exists():
        raise UserError(f"ensemble member not found: {p} (train it first with `campusgps train DATASET --out {p}`)")
    return p.read_bytes()


def _load_member_bytes(data: bytes) -> Localizer:
    fd, tmp = tempfile.mkstemp(suffix=".cgps")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return Localizer.load(tmp)
    finally:
        os.unlink(tmp)


@register
class EnsembleLocalizer(Localizer):
    method = "ensemble"
    Config = EnsembleConfig

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.members: list[Localizer] = []
        self.member_bytes: list[bytes] = []
        self.scale = 1.0
        self.confidence_model: ConfidenceModel | None = None

    @property
    def uses_references(self) -> bool:  # exclude_ids is passed on to every member
        return any(m.uses_references for m in self.members)

    def input_max_side(self) -> int | None:
        sides = [m.input_max_side() for m in self.members]
        return None if any(s is None for s in sides) else max(sides or [1024])

    # ------------------------------------------------------------------ fit
    def fit(self, dataset, members: list | None = None, **opts) -> "EnsembleLocalizer":
        """Members: given Localizer objects, else bundle paths from the config, else train ``methods``."""
        from campusgps.localizers.base import get_localizer_class

        self.configure(**opts)
        self.frame = dataset.frame
        if members:
            self.members = list(members)
            self.member_bytes = []
            for m in self.members:
                with tempfile.TemporaryDirectory() as td:
                    self.member_bytes.append(Path(m.save(Path(td) / "m.cgps")).read_bytes())
        elif self.cfg.members:
            self.member_bytes = [_bundle_bytes(p) for p in self.cfg.members]
            self.members = [_load_member_bytes(b) for b in self.member_bytes]
        else:
            self.members, self.member_bytes = [], []
            for name in self.cfg.methods:
                if name == "ensemble":
                    raise UserError("an ensemble cannot contain an ensemble method; list base methods")
                m = get_localizer_class(name)().fit(dataset)
                self.members.append(m)
                with tempfile.TemporaryDirectory() as td:
                    self.member_bytes.append(Path(m.save(Path(td) / "m.cgps")).read_bytes())
        if len(self.members) < 1:
            raise UserError("an ensemble needs at least one member: --members A.cgps,B.cgps or --methods A,B")
        self.info["members"] = [{"method": m.method, "config": m.config} for m in self.members]
        self._calibrate(dataset)
        return self

    def _calibrate(self, dataset) -> None:
        """Radius scale and confidence model on (at most 150 of) the val photos; members that indexed them
        must not find them (``exclude_ids``), else their val errors are ~0."""
        val = dataset.subset("val")
        if len(val) < 5:
            return
        val = val.rows(even_sample(len(val), 150))  # bound the fit time
        imgs = [val.load_image(i, max_side=self.input_max_side()) for i in range(len(val))]
        self.confidence_model = None
        p, ev = self._fuse(imgs, exclude_ids=frozenset(val.manifest["id"].astype(str)))
        truth = val.en()
        err = np.hypot(p.east - truth[:, 0], p.north - truth[:, 1])
        raw = np.array([e[3] for e in ev])
        ok = np.isfinite(err) & np.isfinite(raw)
        self.scale, cov = calibrate_radius(raw, err, self.cfg.radius_target)
        self.info["calibration"] = {"radius_scale": self.scale, "val_median_m": float(np.median(err[ok])),
                                    "val_coverage": cov}
        if ok.sum() >= 20:
            self.confidence_model = fit_ensemble_confidence(
                [ev[j][0] for j in np.nonzero(ok)[0]], err[ok], raw[ok], [ev[j][1] for j in np.nonzero(ok)[0]],
                [ev[j][2] for j in np.nonzero(ok)[0]], truth[ok], len(self.members), self.cfg.radius_target)
        if self.confidence_model is not None:
            self.info["confidence"] = self.confidence_model.info

    # ------------------------------------------------------------------ predict
    def _member_en(self, m: Localizer, p: Prediction) -> np.ndarray:
        if m.frame == self.frame:
            return np.stack([p.east, p.north], 1)
        lat, lon = m.frame.to_wgs84(p.east, p.north)
        e, n = self.frame.to_local(lat, lon)
        return np.stack([e, n], 1)

    def _alts_to_frame(self, m: Localizer, p: Prediction) -> None:
        if m.frame == self.frame or not p.alternatives:
            return
        for alts in p.alternatives:
            for a in alts:
                la, lo = m.frame.to_wgs84(a["east"], a["north"])
                e, no = self.frame.to_local(la, lo)
                a["east"], a["north"] = float(e), float(no)

    def predict_arrays(self, images: list[np.ndarray], exclude_ids=()) -> Prediction:
        out, ev = self._fuse(images, exclude_ids)
        if self.confidence_model is not None:
            for j, (x, places, aw, raw) in enumerate(ev):
                apply_ensemble_confidence(self.confidence_model, out, j, x, places, aw, raw)
        return out

    def _fuse(self, images: list[np.ndarray], exclude_ids=()) -> tuple[Prediction, list]:
        """Fused answers (radius = scale x raw) and per photo its evidence (x, places, answer weight, raw)."""
        from campusgps.localizers.retrieval.views import photometric_variants

        n = len(images)
        pts, rad, names, member_preds = [], [], [], []
        variants = [photometric_variants(im) for im in images] if self.cfg.tta else [[im] for im in images]
        nv = max(len(v) for v in variants)
        for mi, m in enumerate(self.members):
            for v in range(nv):
                batch = [vs[v] if v < len(vs) else vs[0] for vs in variants]
                p = m.predict_arrays(batch, exclude_ids)
                pts.append(self._member_en(m, p))
                rad.append(np.asarray(p.radius_m, dtype=np.float64))
                names.append((mi, v))
                if v == 0:
                    self._alts_to_frame(m, p)
                    member_preds.append(p)
        P = np.stack(pts, 1)  # (n, n_candidates, 2)
        R = np.stack(rad, 1)
        out = Prediction(east=np.zeros(n), north=np.zeros(n), radius_m=np.zeros(n))
        ev = []
        for j in range(n):
            c, keep, raw = fuse_members(P[j], R[j], self.cfg.outlier_k, self.cfg.outlier_min_m)
            out.east[j], out.north[j] = c
            out.radius_m[j] = self.scale * raw
            x, places, aw = evidence(P[j, [names.index((mi, 0)) for mi in range(len(self.members))]],
                                     member_preds, j, c, raw, int((~keep).sum()))
            ev.append((x, places, aw, raw))
            flags = set()
            for mi, p in enumerate(member_preds):
                flags.update(f"{self.members[mi].method}:{f}" for f in p.flags[j])
            if all("out_of_area" in p.flags[j] for p in member_preds if p.flags[j] is not None) and any(
                    p.flags[j] for p in member_preds):
                flags.add("out_of_area")
            dropped = sorted({self.members[names[k][0]].method for k in np.nonzero(~keep)[0]})
            flags.update(f"dropped:{d}" for d in dropped)
            out.flags[j] = sorted(flags)
            nb = []
            for mi, p in enumerate(member_preds):
                for d in p.neighbors[j][:5]:
                    d = dict(d)
                    d["member"] = mi
                    if self.members[mi].frame != self.frame and "east" in d:
                        la, lo = self.members[mi].frame.to_wgs84(d["east"], d["north"])
                        e, no = self.frame.to_local(la, lo)
                        d["east"], d["north"] = float(e), float(no)
                    nb.append(d)
            out.neighbors[j] = nb
        return out, ev

    def reference_thumbnail(self, ref_id: str) -> bytes | None:
        for m in self.members:
            t = m.reference_thumbnail(ref_id)
            if t:
                return t
        return None

    def reference_positions(self) -> dict | None:
        for m in self.members:
            rp = m.reference_positions()
            if rp:
                return rp
        return None

    # ------------------------------------------------------------------ persistence
    def _state(self):
        t = {f"member_{i}": np.frombuffer(b, dtype=np.uint8).copy() for i, b in enumerate(self.member_bytes)}
        return t, {"n_members": len(self.member_bytes), "radius_scale": self.scale,
                   "member_methods": [m.method for m in self.members],
                   "confidence": self.confidence_model.to_dict() if self.confidence_model is not None else None}

    @classmethod
    def _from_state(cls, tensors, meta):
        loc = cls()
        n = int(meta["n_members"])
        if n < 1:
            raise BundleError("ensemble bundle has no members")
        loc.member_bytes = [tensors[f"member_{i}"].tobytes() for i in range(n)]
        loc.members = [_load_member_bytes(b) for b in loc.member_bytes]
        loc.scale = float(meta["radius_scale"])
        loc.confidence_model = ConfidenceModel.from_dict(meta.get("confidence"))
        return loc
