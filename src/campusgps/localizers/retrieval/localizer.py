"""``RetrievalLocalizer``: fit (selection, index, calibration), predict, reference bookkeeping, bundles.

The pipeline is described in ``campusgps.localizers.retrieval``; the pieces live next to this module.
"""
from __future__ import annotations

import threading

import numpy as np

from campusgps.errors import BundleError
from campusgps.localizers.base import Localizer, Prediction, register
from campusgps.localizers.method_confidence import ConfidenceModel, apply_retrieval_confidence, fit_retrieval_confidence
from campusgps.localizers.retrieval import descriptors as D
from campusgps.localizers.retrieval import index as X
from campusgps.localizers.retrieval import ood
from campusgps.localizers.retrieval.config import RetrievalConfig
from campusgps.localizers.retrieval.fusion import fuse_with, raw_radius
from campusgps.localizers.retrieval.projection import Projection
from campusgps.localizers.retrieval.views import dark_queries
from campusgps.localizers.spots import times_of
from campusgps.models.onnx_backbone import bundle_parts, from_bundle

STATE_VERSION = 1


@register
class RetrievalLocalizer(Localizer):
    method = "retrieval"
    Config = RetrievalConfig
    uses_references = True

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self._bb = None
        self._bb_lock = threading.Lock()
        self.proj = Projection()
        self.ref_desc = np.zeros((0, 0), np.float32)
        self.ref_en = np.zeros((0, 2))
        self.ref_ids: list[str] = []
        self.ref_files: list[str] = []
        self.ref_time = np.zeros(0)
        self.aug_desc = np.zeros((0, 0), np.float32)  # extra (low-light) descriptors of references ...
        self.aug_of = np.zeros(0, np.int64)             # ... and the reference row each one belongs to
        self._index = None      # AnnIndex of ref_desc (kind from cfg.index), extended as references join
        self.confidence_model: ConfidenceModel | None = None
        self._aug_index = None  # ... and of aug_desc (None without low-light views)
        self._selecting = False  # model selection searches an exact flat index
        self.thumbs: list[bytes] = []
        self.calib: dict = {}
        self.fusion: dict = {}
        self._expected_backbone_key = None
        self._bundle_night_views = None

    # ------------------------------------------------------------------ backbone / descriptors
    @property
    def backbone(self):
        with self._bb_lock:  # loaded once, even when several threads predict at first
            if self._bb is None:
                self._bb = self._load_backbone()
        return self._bb

    def _load_backbone(self):
        from campusgps.models.backbones import get_backbone

        bb = get_backbone(self.cfg.backbone, device=self.cfg.device, options=self.cfg.backbone_opt)
        want = self._expected_backbone_key
        if want and getattr(bb, "key", want) != want:
            raise BundleError(
                f"this model's reference descriptors were computed with backbone {self.cfg.backbone!r} "
                f"(key {want}) but the installed one has key {bb.key}; the bundle comes from another "
                f"campusgps/weights version: retrain it with `campusgps train DATASET --method {self.method}`")
        return bb

    def input_max_side(self) -> int | None:
        return 448

    def _raw_from_images(self, images: list[np.ndarray], tta: bool = False) -> np.ndarray:
        return D.raw_from_images(self.backbone, images, self.cfg.gem_p, self.cfg.batch_size, tta)

    def _raw_from_dataset(self, ds) -> np.ndarray:
        return D.raw_from_dataset(self.backbone, ds, self.cfg.gem_p, self.cfg.batch_size)

    def _n_night_views(self) -> int:
        nv = self._bundle_night_views  # a loaded bundle keeps the views it was built with
        return int((getattr(self.cfg, "night_views", 0) if nv is None else nv) or 0)

    def _raw_views_from_dataset(self, ds) -> list[np.ndarray]:
        return D.raw_views_from_dataset(self.backbone, ds, self._n_night_views(), self.cfg.gem_p, self.cfg.batch_size)

    # ------------------------------------------------------------------ index
    def _build_index(self) -> None:
        kind = "flat" if self._selecting else str(getattr(self.cfg, "index", "auto") or "auto")
        seed = int(getattr(self.cfg, "seed", 0) or 0)
        self._index = X.build_ann(self.ref_desc, kind, seed)
        self._aug_index = X.build_ann(self.aug_desc, kind, seed, "low-light descriptors") if len(self.aug_of) else None

    def _extend_index(self, desc: np.ndarray, n_aug_before: int) -> None:
        """New references (and their low-light rows) join the built indexes; compressed kinds keep their
        trained codebooks (no retraining), flat ones answer exactly as if rebuilt."""
        if self._index is None or self._index.n + len(desc) != len(self.ref_desc):
            return self._build_index()
        self._index.add(desc)
        if self._aug_index is not None:
            self._aug_index.add(self.aug_desc[n_aug_before:])
        elif len(self.aug_of):
            self._aug_index = X.build_ann(self.aug_desc, self._index.kind, int(getattr(self.cfg, "seed", 0) or 0))

    def _dark_queries(self, images: list[np.ndarray]) -> np.ndarray | None:
        """Which queries may match the low-light reference views (None: all)."""
        thr = float(getattr(self.cfg, "night_query_lum", 0.0) or 0.0)
        if thr <= 0 or not len(self.aug_of):
            return None
        return dark_queries(images, thr)

    def _search(self, q: np.ndarray, k: int, use_aug: np.ndarray | None = None, exclude=frozenset()):
        """Read-only search of the reference index (see ``retrieval.index.search``)."""
        if len(self.ref_desc) == 0:
            raise BundleError(f"this {self.method} model has an empty reference index: add mapping photos with "
                              f"`campusgps index add MODEL DATASET` or retrain")
        index = self._index if self._index is not None else X.build_ann(self.ref_desc)
        aug = self._aug_index.index if self._aug_index is not None else None
        return X.search(index.index, aug, self.aug_of, q, k, use_aug, X.excluded(self.ref_ids, exclude))

    # ------------------------------------------------------------------ fit
    def fit(self, dataset, **opts) -> "RetrievalLocalizer":
        self.configure(**opts)
        train = dataset.training_rows()
        val = dataset.subset("val")
        self.frame = dataset.frame
        raw_tr = self._raw_from_dataset(train)
        raw_va = self._raw_from_dataset(val) if len(val) else np.zeros((0, raw_tr.shape[1]), np.float32)
        en_tr, en_va = train.en(), val.en() if len(val) else np.zeros((0, 2))
        views_tr = self._raw_views_from_dataset(train)  # low-light renderings (night_views > 0)
        views_va = self._raw_views_from_dataset(val)
        self._expected_backbone_key = getattr(self.backbone, "key", None)

        # held-out queries for model selection: val, else a random slice of train
        if len(val) >= 5:
            q_raw, q_en, ref_mask = raw_va, en_va, np.ones(len(train), bool)
        else:
            q_sel = np.random.default_rng(self.cfg.seed).random(len(train)) < 0.2
            q_raw, q_en, ref_mask = raw_tr[q_sel], en_tr[q_sel], ~q_sel
        choices: dict = {}
        self._selecting = True
        try:
            proj = self._select_projection(raw_tr, en_tr, ref_mask, q_raw, q_en, choices)
        finally:
            self._selecting = False

        # index of the train references; calibration on the held-out queries
        self._set_refs(proj(raw_tr[ref_mask]), en_tr[ref_mask], train.manifest[ref_mask],
                       aug=[proj(v[ref_mask]) for v in views_tr])
        self._calibrate(proj(q_raw), q_en, q_raw)
        self._fit_extra(train.rows(ref_mask), val if ref_mask.all() else None, q_en, choices)
        if not ref_mask.all():  # the held-out calibration photos join the index as more references
            held = train.rows(~ref_mask)
            self._append_refs(proj(raw_tr[~ref_mask]), en_tr[~ref_mask], held.manifest,
                              aug=[proj(v[~ref_mask]) for v in views_tr])
            self._after_add(held)
        if self.cfg.add_val_to_index and len(val) and ref_mask.all():
            self._append_refs(proj(raw_va), en_va, val.manifest, aug=[proj(v) for v in views_va])
            self._after_add(val)
        self._collect_thumbnails(dataset)
        if self.method == "retrieval":  # the hybrid fits its own (on verified evidence)
            choices["confidence"] = getattr(fit_retrieval_confidence(self, train), "info", None)
        self.info.update({"data": {"n_train": int(len(train)), "n_val": int(len(val)),
                                   "n_references": int(len(self.ref_en)),
                                   "n_low_light_descriptors": int(len(self.aug_of))},
                          "selection": choices, "backbone_key": self._expected_backbone_key,
                          "index": self.index_summary()})
        return self

    def index_summary(self) -> dict:
        """Kind, size and parameters of the reference (and low-light) index."""
        out = {"references": self._index.meta if self._index is not None else None}
        if self._aug_index is not None:
            out["low_light"] = self._aug_index.meta
        return out

    def _select_projection(self, raw_tr, en_tr, ref_mask, q_raw, q_en, choices: dict) -> Projection:
        """PCA-whitening on/off, then the geo-aligned head (kept when it helps), then the fusion settings;
        each judged on the held-out queries searching the plain train references. The head learns from the
        references only, never from the held-out queries that judge it."""
        from campusgps.localizers.retrieval.fusion import select_fusion
        from campusgps.localizers.retrieval.projection import finetune_head

        def evaluate(proj: Projection) -> dict:
            self.proj = proj
            self._set_refs(proj(raw_tr[ref_mask]), en_tr[ref_mask])
            S, I = self._search(proj(q_raw), 30)
            return select_fusion(self.ref_en, S, I, q_en, self.cfg)

        def score(r: dict) -> tuple:
            return r["val_median_m"], r["val_mean_m"]

        mean, P = D.fit_pca_whitening(raw_tr, self.cfg.pca_dim)
        cand = {"off": Projection(mean)}
        if self.cfg.whiten in ("auto", "on"):
            cand["on"] = Projection(mean, P)
        if self.cfg.whiten == "on":
            cand.pop("off")
        res = {name: evaluate(p) for name, p in cand.items()}
        wname = min(res, key=lambda n: score(res[n]))
        choices["whiten"] = {n: {"val_median_m": r["val_median_m"], "val_mean_m": r["val_mean_m"]}
                             for n, r in res.items()}
        proj, sel = cand[wname], res[wname]
        choices["whiten_used"] = wname
        if self.cfg.finetune in ("auto", "on") and ref_mask.sum() >= 8:
            W, b = finetune_head(raw_tr[ref_mask], en_tr[ref_mask], proj, self.cfg)
            ft_proj = Projection(proj.mean, proj.P, W, b)
            ft = evaluate(ft_proj)
            choices["finetune"] = {"val_median_m": ft["val_median_m"], "val_mean_m": ft["val_mean_m"],
                                   "without_median_m": sel["val_median_m"], "loss": self.cfg.ft_loss}
            keep = self.cfg.finetune == "on" or score(ft) < score(sel)
            choices["finetune_used"] = bool(keep)
            if keep:
                proj, sel = ft_proj, ft
        self.proj = proj
        self.fusion = {"k": sel["k"], "tau": sel["tau"], "bandwidth_m": sel["bandwidth_m"], "method": self.cfg.fusion}
        choices["fusion"] = {k: v for k, v in sel.items() if k != "grid"}
        choices["fusion_grid"] = sel["grid"]
        return proj

    def _calibrate(self, q_desc: np.ndarray, q_en: np.ndarray, q_raw: np.ndarray | None = None) -> None:
        """radius_m scale (target coverage) and out-of-area thresholds (``retrieval.ood``) on held-out queries."""
        from campusgps.localizers.selection import calibrate_radius

        S, I = self._search(q_desc, max(30, self.fusion["k"]))
        raw_r, errs = [], []
        for j in range(len(S)):
            f, _, _ = fuse_with(self.ref_en, S[j], I[j], self.fusion)
            raw_r.append(raw_radius(f, self.fusion["bandwidth_m"]))
            errs.append(float(np.hypot(*(f.center - q_en[j]))))
        raw_r, errs = np.array(raw_r), np.array(errs)
        scale, cov = calibrate_radius(raw_r, errs, self.cfg.radius_target)
        top1 = S[:, 0] if len(S) else np.array([0.0])
        ext = self.ref_en
        campus_r = float(np.percentile(np.hypot(*(ext - np.median(ext, 0)).T), 100)) if len(ext) else 100.0
        self.calib = {"radius_scale": scale, **ood.calibrate(S, q_raw, self.proj, self.cfg.ood_percentile,
                                                             self.cfg.ood_margin),
                      "far_radius_m": max(1000.0, 3 * campus_r),
                      "val_top1_sim": {"p1": float(np.percentile(top1, 1)), "median": float(np.median(top1))},
                      "val_coverage": cov if len(errs) else None,
                      "val_median_m": float(np.median(errs)) if len(errs) else None}

    def _fit_extra(self, train, val, val_en, choices: dict) -> None:
        """Hook for subclasses, called with the train references indexed and before validation photos
        join the index (hybrid: local features, its own selection and calibration)."""

    def _after_add(self, sub) -> None:
        """Hook for subclasses (hybrid: local features of the new references)."""

    # ------------------------------------------------------------------ references
    def _set_aug(self, aug, offset: int = 0, append: bool = False) -> None:
        """Low-light descriptors: ``aug`` is a list of (n, D) arrays, row r of each belonging to reference
        ``offset + r``."""
        d = self.ref_desc.shape[1]
        new = [np.asarray(a, np.float32).reshape(-1, d) for a in (aug or [])]
        of = [offset + np.arange(len(a), dtype=np.int64) for a in new]
        if append and len(self.aug_of):
            new, of = [self.aug_desc] + new, [self.aug_of] + of
        self.aug_desc = np.ascontiguousarray(np.concatenate(new, 0) if new else np.zeros((0, d)), dtype=np.float32)
        self.aug_of = np.concatenate(of).astype(np.int64) if of else np.zeros(0, np.int64)

    def _set_refs(self, desc, en, manifest=None, aug=None):
        self.ref_desc = np.ascontiguousarray(desc, dtype=np.float32)
        self._set_aug(aug)
        self.ref_en = np.asarray(en, dtype=np.float64).reshape(-1, 2)
        if manifest is not None:
            self.ref_ids = [str(x) for x in manifest["id"]]
            self.ref_files = [str(x) for x in manifest["file"]]
        else:
            self.ref_ids = [str(i) for i in range(len(self.ref_en))]
            self.ref_files = [""] * len(self.ref_en)
        self.ref_time = times_of(manifest, len(self.ref_en))
        self._build_index()

    def _append_refs(self, desc, en, manifest, aug=None):
        if len(self.ref_desc) and desc.shape[1] != self.ref_desc.shape[1]:
            raise BundleError(f"descriptor size {desc.shape[1]} does not match the index ({self.ref_desc.shape[1]})")
        offset, n_aug = len(self.ref_en), len(self.aug_of)
        desc = np.ascontiguousarray(desc, dtype=np.float32)
        self.ref_desc = np.ascontiguousarray(np.concatenate([self.ref_desc.reshape(-1, desc.shape[1]), desc]),
                                             dtype=np.float32)
        self._set_aug(aug, offset=offset, append=True)
        self.ref_en = np.concatenate([self.ref_en, np.asarray(en, np.float64).reshape(-1, 2)])
        self.ref_ids += [str(x) for x in manifest["id"]]
        self.ref_files += [str(x) for x in manifest["file"]]
        self.ref_time = np.concatenate([np.asarray(self.ref_time, np.float64), times_of(manifest, len(manifest))])
        self._extend_index(desc, n_aug)

    def _collect_thumbnails(self, dataset):
        """Thumbnails for references that do not have one yet (looked up by id in ``dataset``)."""
        if not self.cfg.thumbnails:
            self.thumbs = [b""] * len(self.ref_ids)
            return
        from campusgps.progress import thread_map

        self.thumbs = list(self.thumbs) + [b""] * (len(self.ref_ids) - len(self.thumbs))
        pos = {str(i): j for j, i in enumerate(dataset.manifest["id"])}
        todo = [r for r, rid in enumerate(self.ref_ids) if not self.thumbs[r] and rid in pos]

        def one(k: int) -> bytes:  # decoding and encoding release the GIL: a thread per core, 3x faster here
            try:
                img = dataset.load_image(pos[self.ref_ids[todo[k]]], max_side=4 * self.cfg.thumb_px)
                return D.make_thumbnail(img, self.cfg.thumb_px)
            except Exception:  # a thumbnail is decoration: the web page shows none
                return b""

        for r, t in zip(todo, thread_map(one, len(todo), desc="thumbnails")):
            self.thumbs[r] = t

    def add_references(self, dataset) -> int:
        """Append every row of ``dataset`` as a mapping photo (no retraining). Returns how many were added.

        Labels are converted into this model's frame; rows whose id is already indexed are skipped.
        """
        self.require_fitted()
        keep = ~dataset.manifest["id"].astype(str).isin(set(self.ref_ids)).to_numpy()
        sub = dataset.rows(keep)
        if len(sub) == 0:
            return 0
        lat, lon = sub.manifest["lat"].to_numpy(np.float64), sub.manifest["lon"].to_numpy(np.float64)
        e, n = self.frame.to_local(lat, lon)
        desc = self.proj(self._raw_from_dataset(sub))
        aug = [self.proj(v) for v in self._raw_views_from_dataset(sub)]
        self._append_refs(desc, np.stack([e, n], 1), sub.manifest, aug=aug)
        self._collect_thumbnails(sub)
        self._after_add(sub)
        self.info.setdefault("data", {})["n_references"] = int(len(self.ref_en))
        self.info["index"] = self.index_summary()
        self.info.setdefault("index_additions", []).append({"n": int(len(sub)), "source": str(dataset.root)})
        return int(len(sub))

    # ------------------------------------------------------------------ predict
    def predict_arrays(self, images: list[np.ndarray], exclude_ids=()) -> Prediction:
        raw = self._raw_from_images(images, tta=self.cfg.tta)
        S, I = self._search(self.proj(raw), max(self.fusion["k"], 10), use_aug=self._dark_queries(images),
                            exclude=exclude_ids)
        out = self._predict_from_search(S, I, raw)
        apply_retrieval_confidence(self, out, S, I, images)
        return out

    def _predict_from_search(self, S, I, raw=None) -> Prediction:
        n = len(S)
        far = ood.out_of_area(self.calib, S, raw, self.proj)
        out = Prediction(east=np.zeros(n), north=np.zeros(n), radius_m=np.zeros(n))
        for j in range(n):
            f, sims, idx = fuse_with(self.ref_en, S[j], I[j], self.fusion)
            out.east[j], out.north[j] = f.center
            out.radius_m[j] = self.calib.get("radius_scale", 1.0) * raw_radius(f, self.fusion["bandwidth_m"])
            out.neighbors[j] = self._neighbors(S[j], I[j], agree=set(idx[f.agree].tolist()))
            if far[j]:
                out.flags[j].append("out_of_area")
                out.radius_m[j] = max(out.radius_m[j], self.calib.get("far_radius_m", 1000.0))
        return out

    def _neighbors(self, sims, idx, agree=frozenset(), n: int = 10, extra: dict | None = None) -> list[dict]:
        out = []
        for s, i in list(zip(sims, idx))[:n]:
            if i < 0:
                continue
            d = {"id": self.ref_ids[i], "east": float(self.ref_en[i, 0]), "north": float(self.ref_en[i, 1]),
                 "score": float(s), "file": self.ref_files[i], "agrees": bool(i in agree)}
            if extra and i in extra:
                d.update(extra[i])
            out.append(d)
        return out

    def reference_thumbnail(self, ref_id: str) -> bytes | None:
        try:
            j = self.ref_ids.index(str(ref_id))
        except ValueError:
            return None
        t = self.thumbs[j] if j < len(self.thumbs) else b""
        return bytes(t) or None

    def reference_positions(self) -> dict | None:
        if not len(self.ref_en) or self.frame is None:
            return None
        lat, lon = self.frame.to_wgs84(self.ref_en[:, 0], self.ref_en[:, 1])
        return {"lat": lat, "lon": lon, "id": list(self.ref_ids)}

    # ------------------------------------------------------------------ persistence
    def _state(self):
        from campusgps.localizers.retrieval.bundle import state

        t, meta = state(self, STATE_VERSION)
        bt, bmeta = bundle_parts(self._bb)  # an ONNX backbone: its record (+ the model when small)
        t.update(bt)
        meta = {**bmeta, **meta}
        meta["confidence"] = self.confidence_model.to_dict() if self.confidence_model is not None else None
        return t, meta

    @classmethod
    def _from_state(cls, tensors, meta):
        from campusgps.localizers.retrieval.bundle import restore

        v = meta.get("state_version")
        if v != STATE_VERSION:
            raise BundleError(f"{cls.method} bundle state version {v!r} is not the one this campusgps reads "
                              f"({STATE_VERSION}); retrain with `campusgps train DATASET --method {cls.method}`")
        loc = cls()
        loc.cfg = cls.Config(backbone=meta["backbone"])
        restore(loc, tensors, meta)
        loc._bb = from_bundle(tensors, meta)  # an ONNX backbone comes from the bundle (None: built-in, lazy)
        loc.confidence_model = ConfidenceModel.from_dict(meta.get("confidence"))
        return loc

    @classmethod
    def load(cls, path):
        loc = super().load(path)
        loc.bundle_path = str(path)
        return loc
