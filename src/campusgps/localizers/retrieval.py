"""Method ``retrieval``: global image descriptors + FAISS nearest neighbours + robust position fusion.

Pipeline (fit):
  1. Backbone feature maps of every mapping (train) photo -> GeM pooling -> L2 normalisation
     (features come from the dataset's feature cache when it offers GeM, else they are computed).
  2. PCA-whitening fitted on train (regularised; on/off chosen on validation), L2 again.
  3. Optional geo-aligned projection head fine-tuned on the cached descriptors (multi-similarity loss with
     hard negatives = look-alike photos taken far away, and/or the seed's pairwise cosine-vs-distance loss);
     kept only when it lowers the validation median error.
  4. FAISS inner-product index of the reference descriptors, serialised into the bundle.
  5. Fusion settings (k, similarity temperature, kernel bandwidth) chosen on validation; ``radius_m``
     calibrated on validation (``calibration.fit_radius_scale``); out-of-area threshold from the validation
     top-1 similarities.
  6. Validation photos join the index afterwards (``add_val_to_index``), as more mapping photos.
  7. Low-light reference views (``night_views``, default 2): descriptors of a deterministic night rendering
     (darker, lower contrast, blue cast, noise) and dusk rendering (warm tint) of every reference are indexed
     too, mapped to the same reference; selection (steps 2-3, 5's fusion grid) uses the plain references,
     calibration the full index. Measured on the simulated small campus (seed 1, 252 queries, errors vs
     truth): night median 50.6 -> 35.9 m, dusk 33.2 -> 15.1 m, overall 13.4 -> 12.0 m, day 11.1 -> 11.7 m
     (paired: as many day queries better as worse); see the commit message for the table.

Prediction: top-k neighbours (low-light views merged: each reference once, at its best similarity), weights exp((s - s_top)/tau), robust fusion (density mode + geometric
median of the agreeing neighbours, see ``geometry.robust_fuse``), radius from the agreeing neighbours'
spread. Weak best similarity -> flag ``out_of_area`` and a large radius.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from campusgps.errors import BundleError, UserError
from campusgps.localizers.base import Localizer, Prediction, register
from campusgps.localizers.geometry import per_spot_weights, robust_fuse
from campusgps.localizers.method_confidence import (ConfidenceModel, apply_retrieval_confidence,
                                                    fit_retrieval_confidence)

STATE_VERSION = 1


@dataclass
class RetrievalConfig:
    backbone: str = field(default="efficientnet-lite0", metadata={"help": "pretrained backbone for global descriptors"})
    device: str = field(default="auto", metadata={"help": "auto|cpu|cuda"})
    gem_p: float = field(default=3.0, metadata={"help": "GeM pooling exponent (1 = average pooling)"})
    whiten: str = field(default="auto", metadata={"help": "PCA-whitening: auto (chosen on val), on, off",
                                                     "choices": ["auto", "on", "off"]})
    pca_dim: int = field(default=256, metadata={"help": "dimensions kept by PCA-whitening"})
    finetune: str = field(default="auto", metadata={
        "help": "geo-aligned projection head: auto (trained, kept only if val improves), on, off",
        "choices": ["auto", "on", "off"]})
    ft_loss: str = field(default="ms", metadata={"help": "ms (multi-similarity, hard negatives), pairwise "
                                                         "(seed's cosine-vs-distance MSE) or both",
                                                 "choices": ["ms", "pairwise", "both"]})
    ft_steps: int = field(default=300, metadata={"help": "fine-tuning steps"})
    ft_pos_m: float = field(default=8.0, metadata={"help": "pairs closer than this are positives"})
    ft_neg_m: float = field(default=30.0, metadata={"help": "pairs farther than this are negatives"})
    k: int = field(default=0, metadata={"help": "neighbours used for the position (0: chosen on val)"})
    tau: float = field(default=0.0, metadata={"help": "similarity temperature for weights (0: chosen on val)"})
    bandwidth_m: float = field(default=0.0, metadata={"help": "fusion kernel bandwidth in m (0: chosen on val)"})
    fusion: str = field(default="mode", metadata={"help": "mode|median|mean|top1",
                                                    "choices": ["mode", "median", "mean", "top1"]})
    radius_target: float = field(default=0.9, metadata={"help": "fraction of val truths inside radius_m"})
    ood_percentile: float = field(default=1.0, metadata={"help": "val top-1 similarity percentile below which "
                                                                 "(minus ood_margin) a photo is out of area"})
    ood_margin: float = field(default=0.05, metadata={"help": "margin below that percentile"})
    add_val_to_index: bool = field(default=True, metadata={"help": "add validation photos to the index after "
                                                                  "calibration"})
    thumbnails: bool = field(default=True, metadata={"help": "keep ~128 px JPEG thumbnails of references"})
    thumb_px: int = 128
    tta: bool = field(default=False, metadata={"help": "photometric test-time augmentation of query descriptors"})
    night_views: int = field(default=2, metadata={
        "help": "extra low-light descriptors indexed per reference (0: none, 1: + night, 2: + night and dusk); "
                "a reference hit several times counts once, at its best similarity"})
    night_query_lum: float = field(default=0.0, metadata={
        "help": "search the low-light views only for queries darker than this mean luminance (0-255); "
                "0: for every query"})
    batch_size: int = 32
    seed: int = 0


def gem(maps: np.ndarray, p: float = 3.0, eps: float = 1e-6) -> np.ndarray:
    """Generalised-mean pooling of (N, C, h, w) feature maps -> (N, C)."""
    x = np.clip(np.asarray(maps, dtype=np.float32), eps, None)
    if p == 1.0:
        return x.mean(axis=(2, 3))
    return np.power(np.power(x, p).mean(axis=(2, 3)), 1.0 / p)


def l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def photometric_variants(img: np.ndarray) -> list[np.ndarray]:
    """Identity plus gamma brighten/darken and a contrast stretch (for TTA)."""
    a = img.astype(np.float32) / 255.0
    out = [img]
    for g in (0.7, 1.4):
        out.append(np.clip(255 * a ** g, 0, 255).astype(np.uint8))
    lo, hi = np.percentile(a, 2), np.percentile(a, 98)
    if hi - lo > 1e-3:
        out.append(np.clip(255 * (a - lo) / (hi - lo), 0, 255).astype(np.uint8))
    return out


def low_light_view(img: np.ndarray, kind: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """Deterministic-per-rng photometric 'night' or 'dusk' rendering of a photo (no geometric change).

    night: lower contrast, keep 20-45 % of the light, blue cast, slight blur and sensor noise (the seeds'
    night simulation, darker); dusk: keep 60-80 % of the light, warm (orange) tint, mild contrast loss.
    """
    import cv2

    rng = rng or np.random.default_rng(0)
    f = np.asarray(img, np.float32)
    mean = f.mean()
    if kind == "night":
        f = (f - mean) * rng.uniform(0.55, 0.75) + mean
        f = f * rng.uniform(0.2, 0.45) * np.float32([0.8, 0.9, 1.15])
        f = cv2.GaussianBlur(f, (0, 0), 0.7)
        f += rng.normal(0, 3.0, size=f.shape).astype(np.float32)
    elif kind == "dusk":
        f = (f - mean) * rng.uniform(0.8, 0.95) + mean
        f = f * rng.uniform(0.6, 0.8) * np.float32([1.05, 0.82, 0.65])
        f += rng.normal(0, 2.0, size=f.shape).astype(np.float32)
    else:
        raise ValueError(f"unknown low-light view {kind!r}")
    return np.clip(f, 0, 255).astype(np.uint8)


class LowLightView:
    """Feature-cache augmenter (``aug(image, rng)`` + ``key``) producing :func:`low_light_view` images."""

    def __init__(self, kind: str):
        self.kind = kind
        self.key = f"lowlight-{kind}-1"

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        return low_light_view(image, self.kind, rng)


def low_light_kind(view: int) -> str:
    """Extra reference view v (1-based): odd = night, even = dusk."""
    return "night" if view % 2 == 1 else "dusk"


def make_thumbnail(img: np.ndarray, px: int = 128) -> bytes:
    from PIL import Image

    im = Image.fromarray(np.asarray(img, dtype=np.uint8))
    im.thumbnail((px, px))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _times_of(manifest, n: int) -> np.ndarray:
    """Capture times (s) of manifest rows (NaN where unknown): they group reference photos into spots."""
    if manifest is None or "taken_at" not in getattr(manifest, "columns", ()):
        return np.full(n, np.nan)
    from campusgps.localizers.geometry import parse_times_s

    return parse_times_s(manifest["taken_at"].astype(str).replace({"<NA>": "", "nan": "", "None": ""}))


def pack_bytes(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offs = np.zeros(len(blobs) + 1, dtype=np.int64)
    offs[1:] = np.cumsum([len(b) for b in blobs])
    data = np.frombuffer(b"".join(blobs), dtype=np.uint8).copy() if blobs else np.zeros(0, np.uint8)
    return data, offs


def merge_hits(S: np.ndarray, I: np.ndarray, k: int, bad: np.ndarray | None = None):
    """Per row: best similarity per reference id (ignoring -1 and ``bad`` rows), sorted, top ``k``;
    padded with (-1.0, -1) like a FAISS search with too few results."""
    S = np.asarray(S, np.float32)
    I = np.asarray(I, np.int64)
    outS = np.full((len(S), k), -1.0, np.float32)
    outI = np.full((len(S), k), -1, np.int64)
    for j in range(len(S)):
        best: dict[int, float] = {}
        for s, i in zip(S[j].tolist(), I[j].tolist()):
            if i < 0 or (bad is not None and bad[i]):
                continue
            if s > best.get(i, -np.inf):
                best[i] = s
        top = sorted(best.items(), key=lambda t: -t[1])[:k]
        if top:
            outI[j, :len(top)], outS[j, :len(top)] = zip(*top)
    return outS, outI


class _Projection:
    """L2(GeM) -> [centre, PCA-whiten] -> L2 -> [head] -> L2, all numpy at prediction time."""

    def __init__(self, mean=None, P=None, W=None, b=None):
        self.mean, self.P, self.W, self.b = mean, P, W, b

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        x = l2n(raw)
        if self.P is not None:
            x = l2n((x - self.mean) @ self.P)
        elif self.mean is not None:  # centring only: sharper cosine contrast, same dimensions
            x = l2n(x - self.mean)
        if self.W is not None:
            x = l2n(x @ self.W + self.b)
        return np.ascontiguousarray(x, dtype=np.float32)

    def tensors(self) -> dict:
        out = {}
        for k in ("mean", "P", "W", "b"):
            v = getattr(self, k)
            if v is not None:
                out[f"proj_{k}"] = np.asarray(v, dtype=np.float32)
        return out

    @classmethod
    def from_tensors(cls, t: dict) -> "_Projection":
        return cls(*(t.get(f"proj_{k}") for k in ("mean", "P", "W", "b")))


def fit_pca_whitening(x: np.ndarray, dim: int, shrink: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Regularised PCA-whitening of L2-normalised descriptors: returns (mean, P) with P (D, d)."""
    x = l2n(x).astype(np.float64)
    mean = x.mean(0)
    xc = x - mean
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    d = int(max(1, min(dim, len(s) - 1 if len(s) > 1 else 1, x.shape[1])))
    var = s[:d] ** 2 / max(1, len(x) - 1)
    var = var + shrink * var.mean()
    P = vt[:d].T / np.sqrt(var)[None, :]
    return mean.astype(np.float32), P.astype(np.float32)


@register
class RetrievalLocalizer(Localizer):
    method = "retrieval"
    Config = RetrievalConfig

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self._bb = None
        self.proj = _Projection()
        self.ref_desc = np.zeros((0, 0), np.float32)
        self.ref_en = np.zeros((0, 2))
        self.ref_ids: list[str] = []
        self.ref_files: list[str] = []
        self.ref_time = np.zeros(0)
        self.aug_desc = np.zeros((0, 0), np.float32)  # extra (low-light) descriptors of references ...
        self.aug_of = np.zeros(0, np.int64)             # ... and the reference row each one belongs to
        self._aug_index = None
        self.thumbs: list[bytes] = []
        self.calib: dict = {}
        self._index = None
        self.confidence_model: ConfidenceModel | None = None

    # ------------------------------------------------------------------ backbone / descriptors
    @property
    def backbone(self):
        if self._bb is None:
            from campusgps.models.backbones import get_backbone

            self._bb = get_backbone(self.cfg.backbone, device=self.cfg.device)
            want = getattr(self, "_expected_backbone_key", None)
            if want and getattr(self._bb, "key", want) != want:
                raise BundleError(
                    f"this model's reference descriptors were computed with backbone {self.cfg.backbone!r} "
                    f"(key {want}) but the installed one has key {self._bb.key}; the bundle comes from another "
                    f"campusgps/weights version: retrain it with `campusgps train DATASET --method {self.method}`")
        return self._bb

    def input_max_side(self) -> int | None:
        return 448

    def _raw_from_images(self, images: list[np.ndarray], tta: bool = False) -> np.ndarray:
        bb = self.backbone
        out = []
        bs = max(1, int(self.cfg.batch_size))
        if tta:
            for img in images:
                v = photometric_variants(img)
                out.append(l2n(gem(bb.feature_maps(v), self.cfg.gem_p)).mean(0, keepdims=True))
            return np.concatenate(out, 0) if out else np.zeros((0, bb.feature_dim), np.float32)
        for s in range(0, len(images), bs):
            if self.cfg.gem_p == 3.0:
                out.append(bb.embed(images[s:s + bs], batch_size=bs, pooling="gem"))
            else:
                out.append(gem(bb.feature_maps(images[s:s + bs]), self.cfg.gem_p))
        return np.concatenate(out, 0) if out else np.zeros((0, bb.feature_dim), np.float32)

    def _raw_from_dataset(self, ds) -> np.ndarray:
        """GeM descriptors of every row of ``ds``: from the feature cache when it supports GeM."""
        if len(ds) == 0:
            return np.zeros((0, self.backbone.feature_dim), np.float32)
        try:
            from campusgps.models.features import FeatureCache

            cache = FeatureCache.for_dataset(ds)
            pooling = "gem" if self.cfg.gem_p == 3.0 else f"gem{self.cfg.gem_p:g}"
            return np.asarray(cache.get(ds, self.backbone, pooling=pooling), dtype=np.float32)
        except (ImportError, ValueError, KeyError, TypeError, NotImplementedError, UserError):
            pass
        imgs = []
        raw = []
        for i in range(len(ds)):
            imgs.append(ds.load_image(i, max_side=self.backbone.load_max_side()))
            if len(imgs) == self.cfg.batch_size:
                raw.append(self._raw_from_images(imgs))
                imgs = []
        if imgs:
            raw.append(self._raw_from_images(imgs))
        return np.concatenate(raw, 0)

    def _n_night_views(self) -> int:
        nv = getattr(self, "_bundle_night_views", None)  # a loaded bundle keeps the views it was built with
        return int((getattr(self.cfg, "night_views", 0) if nv is None else nv) or 0)

    def _raw_views_from_dataset(self, ds) -> list[np.ndarray]:
        """GeM descriptors of the ``night_views`` low-light renderings of every row of ``ds`` (cached)."""
        nv = self._n_night_views()
        if nv <= 0 or len(ds) == 0:
            return []
        out = []
        pooling = "gem" if self.cfg.gem_p == 3.0 else f"gem{self.cfg.gem_p:g}"
        for v in range(1, nv + 1):
            aug = LowLightView(low_light_kind(v))
            try:
                from campusgps.models.features import FeatureCache

                cache = FeatureCache.for_dataset(ds)
                out.append(np.asarray(cache.get(ds, self.backbone, pooling=pooling, view=v, augment=aug),
                                      dtype=np.float32))
                continue
            except (ImportError, ValueError, KeyError, TypeError, NotImplementedError, UserError):
                pass
            raw = []
            for s in range(0, len(ds), self.cfg.batch_size):
                imgs = [aug(ds.load_image(i, max_side=self.backbone.load_max_side()),
                            np.random.default_rng((i + 1) * 7919 + v))
                        for i in range(s, min(len(ds), s + self.cfg.batch_size))]
                raw.append(self._raw_from_images(imgs))
            out.append(np.concatenate(raw, 0))
        return out

    # ------------------------------------------------------------------ index
    def _build_index(self):
        import faiss

        d = self.ref_desc.shape[1]
        idx = faiss.IndexFlatIP(d)
        if len(self.ref_desc):
            idx.add(np.ascontiguousarray(self.ref_desc, dtype=np.float32))
        self._index = idx
        self._aug_index = None
        if len(getattr(self, "aug_of", ())):
            aidx = faiss.IndexFlatIP(d)
            aidx.add(np.ascontiguousarray(self.aug_desc, dtype=np.float32))
            self._aug_index = aidx

    def _dark_queries(self, images: list[np.ndarray]) -> np.ndarray | None:
        """Which queries may match the low-light reference views (None: all)."""
        thr = float(getattr(self.cfg, "night_query_lum", 0.0) or 0.0)
        if thr <= 0 or not len(getattr(self, "aug_of", ())):
            return None
        return np.array([float((np.asarray(im, np.float32)[..., :3] @ np.float32([0.299, 0.587, 0.114])).mean())
                         < thr for im in images], bool)

    def _search(self, q: np.ndarray, k: int, use_aug: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if len(self.ref_desc) == 0:
            raise BundleError(f"this {self.method} model has an empty reference index: add mapping photos with "
                              f"`campusgps index add MODEL DATASET` or retrain")
        if self._index is None:
            self._build_index()
        ex = getattr(self, "_exclude_ids", None)
        if self._aug_index is not None:
            if use_aug is None or use_aug.all():
                return self._search_merged(q, k, ex)
            S, I = self._search_merged(q, k, ex)  # bright queries: the plain references only
            if (~use_aug).any():
                aug_index, self._aug_index = self._aug_index, None
                try:
                    s0, i0 = self._search(q[~use_aug], k)
                finally:
                    self._aug_index = aug_index
                S[~use_aug], I[~use_aug] = merge_hits(s0, i0, S.shape[1])
            return S, I
        if ex:  # leave-out search (e.g. an ensemble calibrating on photos this index already holds)
            bad = np.array([r in ex for r in self.ref_ids])
            kk = int(min(k + bad.sum(), len(self.ref_desc)))
            s, i = self._index.search(np.ascontiguousarray(q, dtype=np.float32), kk)
            S = np.full((len(q), k), -1.0, np.float32)
            I = np.full((len(q), k), -1, np.int64)
            for j in range(len(q)):
                good = [(a, b) for a, b in zip(s[j], i[j]) if b >= 0 and not bad[b]][:k]
                if good:
                    S[j, :len(good)], I[j, :len(good)] = zip(*good)
            return S, I
        k = int(min(k, len(self.ref_desc)))
        s, i = self._index.search(np.ascontiguousarray(q, dtype=np.float32), k)
        return s, i

    def _search_merged(self, q: np.ndarray, k: int, ex=None) -> tuple[np.ndarray, np.ndarray]:
        """Search the references and their low-light views; each reference counts once, at its best
        similarity (so the fusion never sees one photo several times)."""
        q = np.ascontiguousarray(q, dtype=np.float32)
        bad = np.array([r in ex for r in self.ref_ids]) if ex else np.zeros(len(self.ref_ids), bool)
        nb = int(bad.sum())
        n = len(self.ref_desc)
        kk = int(min(k + nb, n))
        s, i = self._index.search(q, kk)
        views = max(1, int(np.ceil(len(self.aug_of) / max(1, n))))
        ka = int(min((k + nb) * views, len(self.aug_of)))
        sa, ia = self._aug_index.search(q, ka)
        ra = np.where(ia >= 0, self.aug_of[np.maximum(ia, 0)], -1)
        return merge_hits(np.concatenate([s, sa], 1), np.concatenate([i, ra], 1), k, bad)

    # ------------------------------------------------------------------ fusion
    def _fuse_one(self, sims: np.ndarray, idx: np.ndarray, k: int, tau: float, bw: float, method: str):
        sims, idx = sims[:k], idx[:k]
        ok = idx >= 0
        sims, idx = sims[ok], idx[ok]
        pts = self.ref_en[idx]
        w = np.exp((sims - sims.max()) / max(tau, 1e-6))
        f = robust_fuse(pts, w, bandwidth_m=bw, method=method)
        return f, sims, idx

    @staticmethod
    def _raw_radius(f, bw: float) -> float:
        return float(np.sqrt(f.spread_m ** 2 + (0.25 * bw) ** 2) / max(f.support, 0.2) ** 0.5)

    def _grid_select(self, S: np.ndarray, I: np.ndarray, truth_en: np.ndarray) -> dict:
        """Choose k, tau, bandwidth minimising the median (then mean) error on held-out queries."""
        ks = [self.cfg.k] if self.cfg.k > 0 else [1, 3, 5, 10, 20]
        taus = [self.cfg.tau] if self.cfg.tau > 0 else [0.02, 0.05, 0.15]
        bws = [self.cfg.bandwidth_m] if self.cfg.bandwidth_m > 0 else [4.0, 8.0, 16.0]
        best, table = None, []
        for k in ks:
            for tau in (taus if k > 1 else taus[:1]):
                for bw in (bws if k > 1 else bws[:1]):
                    c = np.array([self._fuse_one(S[j], I[j], k, tau, bw, self.cfg.fusion)[0].center
                                  for j in range(len(S))])
                    err = np.hypot(*(c - truth_en).T)
                    score = (float(np.median(err)), float(err.mean()))
                    table.append({"k": k, "tau": tau, "bandwidth_m": bw, "median_m": score[0], "mean_m": score[1]})
                    if best is None or score < best[0]:
                        best = (score, {"k": k, "tau": tau, "bandwidth_m": bw})
        return {**best[1], "val_median_m": best[0][0], "val_mean_m": best[0][1], "grid": table}

    # ------------------------------------------------------------------ fit
    def fit(self, dataset, **opts) -> "RetrievalLocalizer":
        self.configure(**opts)
        has_split = (dataset.manifest["split"] == "train").any()
        train = dataset.subset("train") if has_split else dataset
        val = dataset.subset("val") if has_split else dataset.subset("val")
        if len(train) == 0:
            raise UserError(f"{dataset.root}: no training samples (run `campusgps split {dataset.root}`)")
        self.frame = dataset.frame
        rng = np.random.default_rng(self.cfg.seed)
        raw_tr = self._raw_from_dataset(train)
        raw_va = self._raw_from_dataset(val) if len(val) else np.zeros((0, raw_tr.shape[1]), np.float32)
        en_tr, en_va = train.en(), val.en() if len(val) else np.zeros((0, 2))
        views_tr = self._raw_views_from_dataset(train)  # low-light renderings (night_views > 0)
        views_va = self._raw_views_from_dataset(val)
        self._expected_backbone_key = getattr(self.backbone, "key", None)

        # held-out queries for model selection: val, else a spot-disjoint slice of train
        if len(val) >= 5:
            q_raw, q_en, ref_mask = raw_va, en_va, np.ones(len(train), bool)
        else:
            q_sel = rng.random(len(train)) < 0.2
            q_raw, q_en, ref_mask = raw_tr[q_sel], en_tr[q_sel], ~q_sel
        choices: dict = {}

        def evaluate(proj: _Projection) -> dict:
            self.proj = proj
            self._set_refs(proj(raw_tr[ref_mask]), en_tr[ref_mask])
            S, I = self._search(proj(q_raw), 30)
            return self._grid_select(S, I, q_en)

        # 2. PCA-whitening
        mean, P = fit_pca_whitening(raw_tr, self.cfg.pca_dim)
        cand = {"off": _Projection(mean)}
        if self.cfg.whiten in ("auto", "on"):
            cand["on"] = _Projection(mean, P)
        if self.cfg.whiten == "on":
            cand.pop("off")
        res = {name: evaluate(p) for name, p in cand.items()}
        wname = min(res, key=lambda n: (res[n]["val_median_m"], res[n]["val_mean_m"]))
        choices["whiten"] = {n: {"val_median_m": r["val_median_m"], "val_mean_m": r["val_mean_m"]}
                             for n, r in res.items()}
        proj, sel = cand[wname], res[wname]
        choices["whiten_used"] = wname

        # 3. geo-aligned projection head
        if self.cfg.finetune in ("auto", "on") and len(train) >= 8:
            head = self._finetune_head(raw_tr, en_tr, proj)
            ft_proj = _Projection(proj.mean, proj.P, head[0], head[1])
            ft = evaluate(ft_proj)
            choices["finetune"] = {"val_median_m": ft["val_median_m"], "val_mean_m": ft["val_mean_m"],
                                   "without_median_m": sel["val_median_m"], "loss": self.cfg.ft_loss}
            keep = self.cfg.finetune == "on" or (ft["val_median_m"], ft["val_mean_m"]) < (
                sel["val_median_m"], sel["val_mean_m"])
            choices["finetune_used"] = bool(keep)
            if keep:
                proj, sel = ft_proj, ft
        self.proj = proj
        self.fusion = {"k": sel["k"], "tau": sel["tau"], "bandwidth_m": sel["bandwidth_m"], "method": self.cfg.fusion}
        choices["fusion"] = {k: v for k, v in sel.items() if k != "grid"}
        choices["fusion_grid"] = sel["grid"]

        # 4. index of all train references; 5. calibration on held-out queries
        self._set_refs(proj(raw_tr[ref_mask]), en_tr[ref_mask], train.manifest[ref_mask],
                       aug=[proj(v[ref_mask]) for v in views_tr])
        self._calibrate_queries = (q_raw, q_en)
        self._calibrate(proj(q_raw), q_en, query_images=None)
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
            self.confidence_model = fit_retrieval_confidence(self, train)
            choices["confidence"] = self.confidence_model.info if self.confidence_model is not None else None
        self.info.update({"data": {"n_train": int(len(train)), "n_val": int(len(val)),
                                   "n_references": int(len(self.ref_en)),
                                   "n_low_light_descriptors": int(len(self.aug_of))},
                          "selection": choices, "backbone_key": self._expected_backbone_key})
        return self

    def _calibrate(self, q_desc: np.ndarray, q_en: np.ndarray, query_images=None) -> None:
        """radius_m scale (target coverage) and out-of-area similarity threshold on held-out queries."""
        from campusgps.localizers.calibration import fit_radius_scale

        S, I = self._search(q_desc, max(30, self.fusion["k"]))
        raw_r, errs = [], []
        for j in range(len(S)):
            f, _, _ = self._fuse_one(S[j], I[j], self.fusion["k"], self.fusion["tau"], self.fusion["bandwidth_m"],
                                     self.fusion["method"])
            raw_r.append(self._raw_radius(f, self.fusion["bandwidth_m"]))
            errs.append(float(np.hypot(*(f.center - q_en[j]))))
        raw_r, errs = np.array(raw_r), np.array(errs)
        scale = float(fit_radius_scale(raw_r, errs, target=self.cfg.radius_target)) if len(errs) else 1.0
        top1 = S[:, 0] if len(S) else np.array([0.0])
        thr = float(np.percentile(top1, self.cfg.ood_percentile) - self.cfg.ood_margin)
        ext = self.ref_en
        campus_r = float(np.percentile(np.hypot(*(ext - np.median(ext, 0)).T), 100)) if len(ext) else 100.0
        self.calib = {"radius_scale": scale, "ood_threshold": thr, "far_radius_m": max(1000.0, 3 * campus_r),
                      "val_top1_sim": {"p1": float(np.percentile(top1, 1)), "median": float(np.median(top1))},
                      "val_coverage": float(np.mean(errs <= scale * raw_r)) if len(errs) else None,
                      "val_median_m": float(np.median(errs)) if len(errs) else None}

    # ------------------------------------------------------------------ fine-tuning
    def _finetune_head(self, raw: np.ndarray, en: np.ndarray, base: _Projection):
        """Linear head initialised at the (whitened) projection, trained with geo-aligned losses."""
        import torch

        torch.manual_seed(self.cfg.seed)
        x0 = torch.from_numpy(base(raw))  # start from the current descriptor space
        d = x0.shape[1]
        W = torch.nn.Parameter(torch.eye(d))
        b = torch.nn.Parameter(torch.zeros(d))
        pos = torch.from_numpy(en.astype(np.float32))
        dist = torch.cdist(pos, pos)
        opt = torch.optim.AdamW([W, b], lr=1e-3, weight_decay=1e-4)
        n = len(x0)
        g = torch.Generator().manual_seed(self.cfg.seed)
        alpha, beta, lam = 2.0, 40.0, 0.5
        for step in range(self.cfg.ft_steps):
            bs = min(n, 256)
            sel = torch.randperm(n, generator=g)[:bs]
            z = torch.nn.functional.normalize(x0[sel] @ W + b, dim=1)
            s = z @ z.T
            dd = dist[sel][:, sel]
            eye = torch.eye(bs, dtype=torch.bool)
            loss = torch.zeros(())
            if self.cfg.ft_loss in ("ms", "both"):
                posm = (dd < self.cfg.ft_pos_m) & ~eye
                negm = dd > self.cfg.ft_neg_m
                # hard mining: negatives more similar than the hardest positive, positives less similar
                # than the hardest negative (Wang et al., CVPR 2019)
                big = torch.tensor(1e4)
                min_pos = torch.where(posm, s, big).min(1, keepdim=True).values
                max_neg = torch.where(negm, s, -big).max(1, keepdim=True).values
                negh = negm & (s + 0.1 > min_pos)
                posh = posm & (s - 0.1 < max_neg)
                lp = torch.log1p((torch.exp(-alpha * (s - lam)) * posh).sum(1)) / alpha
                ln = torch.log1p((torch.exp(beta * (s - lam)) * negh).sum(1)) / beta
                has = posm.any(1)
                if has.any():
                    loss = loss + (lp + ln)[has].mean()
            if self.cfg.ft_loss in ("pairwise", "both"):
                target = torch.exp(-dd / max(self.cfg.ft_pos_m, 1e-3))
                loss = loss + ((s - target) ** 2)[~eye].mean()
            loss = loss + 1e-3 * ((W - torch.eye(d)) ** 2).sum()  # stay near the start
            opt.zero_grad()
            loss.backward()
            opt.step()
        Wn = W.detach().numpy().astype(np.float32)
        bn = b.detach().numpy().astype(np.float32)
        return Wn, bn

    # ------------------------------------------------------------------ references
    def _set_aug(self, aug, offset: int = 0, append: bool = False) -> None:
        """Low-light descriptors: ``aug`` is a list of (n, D) arrays, row r of each belonging to reference
        ``offset + r``."""
        d = self.ref_desc.shape[1]
        new = [np.asarray(a, np.float32).reshape(-1, d) for a in (aug or [])]
        of = [offset + np.arange(len(a), dtype=np.int64) for a in new]
        if append and len(getattr(self, "aug_of", ())):
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
        self.ref_time = _times_of(manifest, len(self.ref_en))
        self._index = None

    def _append_refs(self, desc, en, manifest, aug=None):
        if len(self.ref_desc) and desc.shape[1] != self.ref_desc.shape[1]:
            raise BundleError(f"descriptor size {desc.shape[1]} does not match the index ({self.ref_desc.shape[1]})")
        offset = len(self.ref_en)
        self.ref_desc = np.ascontiguousarray(np.concatenate([self.ref_desc.reshape(-1, desc.shape[1]), desc]),
                                             dtype=np.float32)
        self._set_aug(aug, offset=offset, append=True)
        self.ref_en = np.concatenate([self.ref_en, np.asarray(en, np.float64).reshape(-1, 2)])
        self.ref_ids += [str(x) for x in manifest["id"]]
        self.ref_files += [str(x) for x in manifest["file"]]
        self.ref_time = np.concatenate([np.asarray(getattr(self, "ref_time", np.zeros(0)), np.float64),
                                        _times_of(manifest, len(manifest))])
        self._index = None

    def _collect_thumbnails(self, dataset, rows=None):
        """Thumbnails for references that do not have one yet (looked up by id in ``dataset``)."""
        if not self.cfg.thumbnails:
            self.thumbs = [b""] * len(self.ref_ids)
            return
        self.thumbs = list(self.thumbs) + [b""] * (len(self.ref_ids) - len(self.thumbs))
        pos = {str(i): j for j, i in enumerate(dataset.manifest["id"])}
        for r, rid in enumerate(self.ref_ids):
            if self.thumbs[r] or rid not in pos:
                continue
            try:
                self.thumbs[r] = make_thumbnail(dataset.load_image(pos[rid], max_side=4 * self.cfg.thumb_px),
                                                self.cfg.thumb_px)
            except Exception:
                self.thumbs[r] = b""

    def add_references(self, dataset) -> int:
        """Append every row of ``dataset`` as a mapping photo (no retraining). Returns how many were added.

        Labels are converted into this model's frame; rows whose id is already indexed are skipped.
        """
        self._require_fitted()
        have = set(self.ref_ids)
        keep = ~dataset.manifest["id"].astype(str).isin(have).to_numpy()
        sub = dataset.subset("all")
        sub.manifest = sub.manifest[keep].reset_index(drop=True)
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
        self.info.setdefault("index_additions", []).append({"n": int(len(sub)), "source": str(dataset.root)})
        return int(len(sub))

    def _fit_extra(self, train, val, val_en, choices: dict) -> None:
        """Hook for subclasses, called with the train references indexed and before validation photos
        join the index (hybrid: local features, its own selection and calibration on ``val``)."""

    def _after_add(self, sub) -> None:
        """Hook for subclasses (hybrid: local features of the new references)."""

    # ------------------------------------------------------------------ predict
    def _predict_arrays(self, images: list[np.ndarray]) -> Prediction:
        q = self.proj(self._raw_from_images(images, tta=self.cfg.tta))
        S, I = self._search(q, max(self.fusion["k"], 10), use_aug=self._dark_queries(images))
        out = self._predict_from_search(S, I)
        apply_retrieval_confidence(self, out, S, I, images)
        return out

    def _predict_from_search(self, S, I) -> Prediction:
        n = len(S)
        out = Prediction(east=np.zeros(n), north=np.zeros(n), radius_m=np.zeros(n))
        for j in range(n):
            f, sims, idx = self._fuse_one(S[j], I[j], self.fusion["k"], self.fusion["tau"],
                                          self.fusion["bandwidth_m"], self.fusion["method"])
            out.east[j], out.north[j] = f.center
            out.radius_m[j] = self.calib.get("radius_scale", 1.0) * self._raw_radius(f, self.fusion["bandwidth_m"])
            out.neighbors[j] = self._neighbors(S[j], I[j], agree=set(idx[f.agree].tolist()))
            if S[j][0] < self.calib.get("ood_threshold", -np.inf):
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
        import faiss

        if self._index is None:
            self._build_index()
        t = {"ref_en": self.ref_en.astype(np.float64),
             "faiss_index": faiss.serialize_index(self._index).astype(np.uint8)}
        if len(getattr(self, "ref_time", ())) == len(self.ref_en):
            t["ref_time"] = np.asarray(self.ref_time, dtype=np.float64)
        t.update(self.proj.tensors())
        if len(getattr(self, "aug_of", ())):  # optional: bundles without them load as before
            t["aug_desc"] = np.asarray(self.aug_desc, np.float32)
            t["aug_of"] = np.asarray(self.aug_of, np.int64)
        t["thumbs"], t["thumb_offsets"] = pack_bytes([bytes(b) for b in self.thumbs])
        meta = {"state_version": STATE_VERSION, "ref_ids": self.ref_ids, "ref_files": self.ref_files,
                "fusion": self.fusion, "calib": self.calib, "backbone": self.cfg.backbone,
                "backbone_key": getattr(self, "_expected_backbone_key", None), "dim": int(self.ref_desc.shape[1]),
                "night_views": self._n_night_views()}
        if self.method == "retrieval":
            cm = getattr(self, "confidence_model", None)
            meta["confidence"] = cm.to_dict() if cm is not None else None
        return t, meta

    @classmethod
    def _from_state(cls, tensors, meta):
        import faiss

        v = meta.get("state_version")
        if v != STATE_VERSION:
            raise BundleError(f"{cls.method} bundle state version {v!r} is not the one this campusgps reads "
                              f"({STATE_VERSION}); retrain with `campusgps train DATASET --method {cls.method}`")
        loc = cls()
        loc.cfg = cls.Config(backbone=meta["backbone"])
        loc._bundle_night_views = int(meta.get("night_views", 0) or 0)  # older bundles: none
        loc.proj = _Projection.from_tensors(tensors)
        idx = faiss.deserialize_index(np.ascontiguousarray(tensors["faiss_index"], dtype=np.uint8))
        loc._index = idx
        loc.ref_desc = idx.reconstruct_n(0, idx.ntotal) if idx.ntotal else np.zeros((0, int(meta["dim"])), np.float32)
        loc.ref_en = np.asarray(tensors["ref_en"], dtype=np.float64).reshape(-1, 2)
        loc._set_aug(None)
        if tensors.get("aug_of") is not None and len(tensors["aug_of"]):
            loc.aug_desc = np.ascontiguousarray(tensors["aug_desc"], dtype=np.float32).reshape(-1, loc.ref_desc.shape[1])
            loc.aug_of = np.asarray(tensors["aug_of"], np.int64)
            if len(loc.aug_desc) != len(loc.aug_of) or loc.aug_of.max() >= len(loc.ref_en) or loc.aug_of.min() < 0:
                raise BundleError(f"inconsistent {cls.method} bundle: low-light descriptors do not match the "
                                  f"references; retrain with `campusgps train DATASET --method {cls.method}`")
            loc._build_index()
        loc.ref_ids, loc.ref_files = list(meta["ref_ids"]), list(meta["ref_files"])
        rt = tensors.get("ref_time")
        loc.ref_time = (np.asarray(rt, np.float64) if rt is not None and len(rt) == len(loc.ref_en)
                        else np.full(len(loc.ref_en), np.nan))
        if not (len(loc.ref_ids) == len(loc.ref_en) == idx.ntotal):
            raise BundleError(f"inconsistent {cls.method} bundle: {idx.ntotal} indexed descriptors, "
                              f"{len(loc.ref_en)} positions, {len(loc.ref_ids)} ids")
        data, offs = tensors.get("thumbs", np.zeros(0, np.uint8)), tensors.get("thumb_offsets", np.zeros(1, np.int64))
        loc.thumbs = [data[offs[i]:offs[i + 1]].tobytes() for i in range(len(offs) - 1)]
        loc.fusion, loc.calib = dict(meta["fusion"]), dict(meta["calib"])
        loc._expected_backbone_key = meta.get("backbone_key")
        loc.confidence_model = ConfidenceModel.from_dict(meta.get("confidence")) if cls.method == "retrieval" else None
        return loc

    @classmethod
    def load(cls, path):
        loc = super().load(path)
        loc.bundle_path = str(path)
        return loc
