"""GPS regression: an ImageNet CNN (EfficientNet-Lite) + an MLP head that predicts the photo's position.

Default on CPU: the backbone stays frozen, its features (plain + K augmented views per image) are cached on
disk once, and only the head trains -- seconds to a couple of minutes. ``finetune="top-2"`` also trains the
last 2 blocks (activations below them are cached); ``finetune="full"`` trains everything (GPUs).

The head (default ``head="cells"``) classifies the photo into k-means cells of the training positions and
predicts the probability-weighted centre of the cells near the most likely one (``--head direct`` regresses
east/north directly, the seeds' approach); positions are normalised by the training extent. It also predicts
a per-image sigma; the radius is ``sigma`` scaled on validation so the truth falls inside it for ~90 % of
photos (:mod:`campusgps.localizers.calibration`). By default the whole cosine schedule runs and the last
weights are kept (``select="last"``): on the simulated campus the grouped val split's median was too noisy
to pick an epoch. Measured in benchmarks/regression.py.
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from campusgps.errors import BundleError, UserError
from campusgps.localizers.base import Localizer, Prediction, register
from campusgps.localizers.method_confidence import (ConfidenceModel, apply_regression_confidence,
                                                    fit_regression_confidence)

_FINETUNE_RE = re.compile(r"^(frozen|full|top-(\d+))$")


@dataclass
class RegressionConfig:
    backbone: str = field(default="efficientnet-lite0", metadata={
        "help": "feature extractor: efficientnet-lite0/1/2, tiny-cnn, or onnx:PATH (an ONNX image model; "
                "settings in PATH.json)"})
    backbone_opt: list[str] = field(default_factory=list, metadata={
        "help": "onnx:PATH backbone setting overriding PATH.json, e.g. input_size=224", "metavar": "KEY=VALUE",
        "repeat": True})
    finetune: str = field(default="frozen", metadata={
        "help": "fine-tune depth: frozen (train the head on cached features; CPU default), top-N (also the last "
                "N backbone blocks), full (everything; for GPUs)"})
    views: int = field(default=2, metadata={"help": "augmented views per training image cached as features "
                                                    "(frozen/top-N); 0 = no augmentation"})
    head: str = field(default="cells", metadata={
        "help": "cells: classify into k-means cells of the training positions, predict the probability-weighted "
                "centre (halves the median error on the simulated campus); direct: regress east/north",
        "choices": ["cells", "direct"]})
    cells: int = field(default=256, metadata={"help": "number of cells (cells head; at most 1 per 4 training photos)"})
    cell_bandwidth: float = field(default=1.0, metadata={
        "help": "soft cell targets: Gaussian width as a multiple of the typical spacing between cell centres"})
    cell_predict: str = field(default="local", metadata={
        "help": "cells head at prediction: local (mean of the cells near the most likely one) or soft (mean "
                "over all cells)", "choices": ["local", "soft"]})
    hidden: list[int] = field(default_factory=lambda: [512, 256], metadata={"help": "MLP head hidden sizes"})
    dropout: float = field(default=0.2, metadata={"help": "head dropout"})
    activation: str = field(default="gelu", metadata={"help": "head activation", "choices": ["gelu", "silu"]})
    loss: str = field(default="haversine", metadata={
        "help": "position loss", "choices": ["haversine", "huber", "mse", "mse+geodesic", "gaussian-nll"]})
    huber_delta_m: float = field(default=5.0, metadata={"help": "Huber transition (metres)"})
    predict_sigma: bool = field(default=True, metadata={"help": "also predict a per-image sigma (radius)"})
    epochs: int = field(default=40, metadata={"help": "epochs (maximum with --select best)"})
    select: str = field(default="last", metadata={
        "help": "weights to keep: last (run the whole cosine schedule; default: on the simulated campus the "
                "grouped val split's median is too noisy to pick an epoch and early stopping stopped too soon) "
                "or best (early stopping on the val median, --patience)", "choices": ["last", "best"]})
    batch_size: int = field(default=64, metadata={"help": "training batch size"})
    lr: float = field(default=2e-3, metadata={"help": "head learning rate (AdamW)"})
    backbone_lr_mult: float = field(default=0.05, metadata={"help": "backbone lr = lr x this (top-N/full)"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    warmup_epochs: float = field(default=2.0, metadata={"help": "linear warm-up before cosine decay"})
    patience: int = field(default=15, metadata={"help": "early stopping: epochs without a better val median"})
    clip_grad: float = field(default=1.0, metadata={"help": "gradient norm clip (0 = off)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    devices: int = field(default=1, metadata={"help": "processes for data-parallel training (DDP; gloo on CPU, "
                                                      "NCCL on GPUs)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, ..."})
    fast: str = field(default="auto", metadata={"help": "feature inference path: auto (fastest verified), onnx, "
                                                        "bf16, eager, cuda",
                                                "choices": ["auto", "onnx", "bf16", "eager", "cuda"]})
    radius_target: float = field(default=0.9, metadata={"help": "radius calibrated to hold the truth this often"})
    min_train: int = field(default=8, metadata={"help": "refuse to train with fewer training photos"})
    checkpoint: str = field(default="", metadata={"help": "checkpoint file written every epoch (CLI: MODEL.ckpt)"})
    resume: bool = field(default=False, metadata={"help": "continue from the checkpoint"})
    max_bad_fraction: float = field(default=0.25, metadata={"help": "stop if more NaN/inf batches than this"})


def parse_finetune(s: str) -> tuple[str, int]:
    m = _FINETUNE_RE.match(str(s).strip().lower())
    if not m:
        raise UserError(f"--finetune {s!r}: use frozen, top-N (e.g. top-2) or full")
    if m.group(2) is not None:
        return "top", int(m.group(2))
    return m.group(1), 0


@register
class RegressionLocalizer(Localizer):
    method = "regression"
    Config = RegressionConfig

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self._bb = None
        self._model = None
        self._backbone_state: dict | None = None
        self.confidence_model: ConfidenceModel | None = None

    # --- training ------------------------------------------------------------------------------------
    def fit(self, dataset, progress: bool = True, log=None, **opts) -> "RegressionLocalizer":
        from campusgps.models.backbones import get_backbone
        from campusgps.models.features import FeatureCache

        cfg = self.configure(**opts).cfg
        log = log or (lambda msg: print(msg, file=sys.stderr) if progress else None)
        mode, n_top = parse_finetune(cfg.finetune)
        train_ds, val_ds, val_note = _splits(dataset, cfg.min_train, cfg.seed)
        bb = get_backbone(cfg.backbone, device=cfg.device, fast=cfg.fast, options=cfg.backbone_opt)
        cache = FeatureCache.for_dataset(dataset)
        en_tr, en_val = train_ds.en(), val_ds.en()
        center = en_tr.mean(axis=0)
        scale = float(max(np.ptp(en_tr[:, 0]), np.ptp(en_tr[:, 1]), 1.0) / 2.0)
        y = ((en_tr - center) / scale).astype(np.float32)

        t0 = time.time()
        x_views, x_val = _training_inputs(mode, n_top, train_ds, val_ds, bb, cache, cfg.views, progress)
        feat_s = time.time() - t0
        for x in x_views + [x_val]:
            if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
                log("warning: some cached features are NaN/inf; those batches will be skipped")
                break
        spec = _model_spec(cfg, mode, n_top, bb.feature_dim, y)
        from campusgps.training.task import TaskData

        data = TaskData(x_views=x_views, y=y, x_val=x_val, en_val=en_val, center=center, scale=scale)
        model, res = self._train(cfg, spec, data, bb, progress, log)
        self.frame = dataset.frame
        self.center, self.scale, self.spec = center, scale, spec
        self._keep(model, spec, bb, mode)

        # calibrate the radius on validation predictions (what predict() will really return)
        val_feats = x_val if mode == "frozen" else cache.get(val_ds, self._bb, progress=progress)
        mu, ls = _head_predict(self._model, val_feats, self._bb.device)
        en_pred = mu.astype(np.float64) * scale + center
        err = np.hypot(*(en_pred - en_val).T)
        from campusgps.localizers.calibration import calibration_info

        cal = calibration_info(self._raw_radius(ls, len(err)), err, cfg.radius_target)
        self.radius_scale = cal["radius_scale"]
        self.confidence_model = fit_regression_confidence(self._raw_radius(ls, len(err)) * self.radius_scale, err,
                                                          val_ds, cfg.radius_target)
        self.ref_en = en_tr.astype(np.float32)  # training positions: the server's offline basemap
        self.info.update({
            "backbone": self._bb.describe(),
            "data": {**dataset.summary(), "n_train": int(len(train_ds)), "n_val": int(len(val_ds)),
                     "val_source": val_note},
            "training": {**{k: v for k, v in res.items() if k != "history"}, "feature_seconds": feat_s,
                         "history": res["history"][-200:]},
            "val": {"median_m": float(np.median(err)), "mean_m": float(err.mean()),
                    "p90_m": float(np.percentile(err, 90))},
            "calibration": cal,
            "confidence": self.confidence_model.info if self.confidence_model is not None else None,
        })
        return self

    def _train(self, cfg, spec, data, bb, progress, log):
        """Train the model (one process, or ``cfg.devices`` with DDP). Returns (model, result summary)."""
        import torch

        from campusgps.training.loop import LoopConfig, train
        from campusgps.training.task import build_model, make_batches, make_loss, make_validate

        device, mode, y = bb.device, spec["mode"], data.y
        loop_cfg = LoopConfig(epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                              warmup_epochs=cfg.warmup_epochs, patience=cfg.patience, clip_grad=cfg.clip_grad,
                              seed=cfg.seed, max_bad_fraction=cfg.max_bad_fraction, select=cfg.select,
                              param_groups={"body.": cfg.backbone_lr_mult} if mode != "frozen" else {})
        fingerprint = {"spec": spec, "bb": bb.key, "n": len(y), "views": cfg.views,
                       "y": float(np.round(y.sum(), 4)), "batch": cfg.batch_size}
        bs = min(cfg.batch_size, len(y))
        if cfg.devices > 1:
            from campusgps.training.ddp import train_distributed

            state, res = train_distributed(cfg.devices, data, spec, loop_cfg, bs, cfg.huber_delta_m,
                                           checkpoint=cfg.checkpoint or None, resume=cfg.resume,
                                           fingerprint=fingerprint, progress=progress, device_type=device.type)
            model = build_model(spec, device=device)
            model.load_state_dict({k: v.to(device) for k, v in state.items()})
            model.eval()
            return model, res
        torch.manual_seed(cfg.seed)
        model = build_model(spec, device=device)
        batches, steps = make_batches(data, spec, bs, device)
        threads = torch.get_num_threads()
        if mode == "frozen" and device.type == "cpu":
            torch.set_num_threads(1)  # a small MLP: one thread beats two (no sync overhead, shared CPUs)
        try:
            r = train(model, make_loss(spec, data.scale, cfg.huber_delta_m), batches, make_validate(data, device),
                      loop_cfg, steps, device=device, checkpoint=cfg.checkpoint or None, resume=cfg.resume,
                      fingerprint=fingerprint, progress=progress, log=log)
        finally:
            torch.set_num_threads(threads)
        model.eval()
        return model, {"best_epoch": r.best_epoch, "best_val": r.best_val, "history": r.history,
                       "bad_batches": r.bad_batches, "epochs_run": r.epochs_run, "seconds": r.seconds,
                       "resumed_from": r.resumed_from, "stopped_early": r.stopped_early}

    def _keep(self, model, spec, bb, mode: str) -> None:
        """Keep the trained model; a fine-tuned backbone becomes a frozen backbone + head for prediction."""
        self._model = model
        if mode == "frozen":
            self._bb = bb
            return
        from campusgps.models.backbones import backbone_from_state
        from campusgps.training.task import backbone_state_of, build_model

        cfg = self.cfg
        self._backbone_state = backbone_state_of(model)
        self._bb = backbone_from_state(cfg.backbone, self._backbone_state, device=cfg.device, fast=cfg.fast)
        self._model = build_model({**spec, "mode": "frozen"}, device=self._bb.device)
        self._model.head.load_state_dict(model.head.state_dict())
        self._model.eval()

    def _raw_radius(self, log_sigma, n: int) -> np.ndarray:
        if log_sigma is None:
            return np.ones(n)
        # 90 % radius of a 2-D isotropic Gaussian is sigma * sqrt(-2 ln 0.1) ~ 2.146 sigma
        return np.exp(log_sigma.astype(np.float64)) * self.scale * np.sqrt(-2 * np.log(0.1))

    # --- prediction ----------------------------------------------------------------------------------
    def predict_arrays(self, images: list[np.ndarray], exclude_ids=()) -> Prediction:
        feats = self._bb.embed(images, batch_size=32)
        mu, ls = _head_predict(self._model, feats, self._bb.device)
        en = mu.astype(np.float64) * self.scale + self.center
        radius = self._raw_radius(ls, len(en)) * self.radius_scale
        flags = [[] for _ in range(len(en))]
        for i in range(len(en)):
            if not np.all(np.isfinite(en[i])):
                flags[i].append("non_finite")
        out = Prediction(east=en[:, 0], north=en[:, 1], radius_m=radius, flags=flags)
        apply_regression_confidence(getattr(self, "confidence_model", None), radius, images, out)
        return out

    def predict_features(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(east/north (N,2) metres, radius (N,)) from pooled backbone features (used by ensembles)."""
        mu, ls = _head_predict(self._model, feats, self._bb.device)
        return mu.astype(np.float64) * self.scale + self.center, self._raw_radius(ls, len(mu)) * self.radius_scale

    @property
    def backbone(self):
        return self._bb

    def reference_positions(self) -> dict | None:
        ref = getattr(self, "ref_en", None)
        if ref is None or not len(ref) or self.frame is None:
            return None
        lat, lon = self.frame.to_wgs84(ref[:, 0], ref[:, 1])
        return {"lat": lat, "lon": lon}

    def input_max_side(self) -> int | None:
        return self._bb.load_max_side() if self._bb is not None else 448

    # --- persistence ---------------------------------------------------------------------------------
    def _state(self):
        tensors = {f"head.{k}": v.detach().cpu().numpy() for k, v in self._model.head.state_dict().items()}
        tensors["center"] = np.asarray(self.center, np.float64)
        if getattr(self, "ref_en", None) is not None:
            tensors["ref_en"] = np.asarray(self.ref_en, np.float32)
        if self._backbone_state:
            tensors.update({f"backbone.{k}": np.asarray(v) for k, v in self._backbone_state.items()})
        from campusgps.models.onnx_backbone import bundle_parts

        bt, bmeta = bundle_parts(self._bb)  # an ONNX backbone: its record (+ the model when small)
        tensors.update(bt)
        meta = {**bmeta, "spec": self.spec, "scale": self.scale, "radius_scale": self.radius_scale,
                "backbone": self._bb.describe(), "backbone_key": self._bb.key,
                "finetuned_backbone": bool(self._backbone_state),
                "normalisation": {"center_m": [float(c) for c in self.center], "scale_m": self.scale},
                "confidence": cm.to_dict() if (cm := getattr(self, "confidence_model", None)) is not None else None}
        return tensors, meta

    @classmethod
    def _from_state(cls, tensors, meta):
        import torch

        from campusgps.models.backbones import backbone_from_state, get_backbone
        from campusgps.training.task import build_model

        for k in ("spec", "scale", "radius_scale", "backbone_key"):
            if k not in meta:
                raise BundleError(f"regression bundle lacks {k!r} (corrupt or from an incompatible version)")
        loc = cls()
        spec = meta["spec"]
        name = spec["backbone"]
        bstate = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
        from campusgps.models.onnx_backbone import from_bundle

        bb = from_bundle(tensors, meta)  # an ONNX backbone: from the bundle (None: built-in)
        if bb is None:
            bb = (backbone_from_state(name, bstate, device="auto", fast="auto") if bstate
                  else get_backbone(name, device="auto", fast="auto"))
        if bb.key != meta["backbone_key"]:
            raise BundleError(f"the model was trained on backbone {meta['backbone_key']} but this installation's "
                              f"{name} is {bb.key} (different weights or preprocessing); reinstall the same "
                              f"efficientnet weight package / campusgps version, or retrain")
        model = build_model({**spec, "mode": "frozen"}, device=bb.device)
        head_sd = {k[len("head."):]: torch.from_numpy(np.asarray(v).copy()) for k, v in tensors.items()
                   if k.startswith("head.")}
        model.head.load_state_dict(head_sd)
        model.eval()
        loc._bb, loc._model, loc.spec = bb, model, spec
        loc._backbone_state = bstate or None
        loc.center = np.asarray(tensors["center"], np.float64)
        loc.ref_en = np.asarray(tensors["ref_en"], np.float32) if "ref_en" in tensors else None
        loc.scale, loc.radius_scale = float(meta["scale"]), float(meta["radius_scale"])
        loc.confidence_model = ConfidenceModel.from_dict(meta.get("confidence"))
        return loc


def _head_predict(model, feats: np.ndarray, device):
    from campusgps.training.task import predict_model

    return predict_model(model, np.asarray(feats, np.float32), device)


def _training_inputs(mode: str, n_top: int, train_ds, val_ds, bb, cache, views: int, progress: bool):
    """(training inputs per augmented view, validation inputs): cached features (frozen / top-N pooled
    below the tuned blocks) or images at input size (full fine-tuning, augmented on the fly)."""
    if mode == "frozen":
        x_views = [cache.get(train_ds, bb, view=v, progress=progress) for v in range(views + 1)]
        return x_views, cache.get(val_ds, bb, progress=progress)
    if mode == "top":
        pool = f"below:{n_top}"
        bb.split_index(n_top)  # validates N
        x_views = [cache.get(train_ds, bb, pooling=pool, view=v, progress=progress) for v in range(views + 1)]
        return x_views, cache.get(val_ds, bb, pooling=pool, progress=progress)
    return [_images_at_input(train_ds, bb, progress)], _images_at_input(val_ds, bb, progress)


def _model_spec(cfg, mode: str, n_top: int, in_dim: int, y: np.ndarray) -> dict:
    from campusgps.models.heads import head_spec

    if cfg.head not in ("cells", "direct"):
        raise UserError(f"--head {cfg.head!r}: use cells or direct")
    centres, bw = None, 0.1
    if cfg.head == "cells":
        from campusgps.models.heads import cell_bandwidth, kmeans_centres

        if cfg.cells < 2:
            raise UserError(f"--cells {cfg.cells}: need at least 2 cells (or use --head direct)")
        centres = kmeans_centres(y, min(cfg.cells, max(2, len(y) // 4)), seed=cfg.seed)
        bw = cell_bandwidth(centres, cfg.cell_bandwidth)
    return {"mode": mode, "n_top": n_top, "backbone": cfg.backbone, "loss": cfg.loss,
            "head": head_spec(in_dim, cfg.hidden, cfg.dropout, cfg.activation,
                              cfg.predict_sigma or cfg.loss == "gaussian-nll", centres=centres,
                              cell_bandwidth=bw, cell_predict=cfg.cell_predict)}


def _splits(dataset, min_train: int, seed: int):
    """(train, val, note). No val split: hold out ~15 % of training rows for early stopping/calibration."""
    splits = dataset.manifest["split"]
    train = dataset.training_rows(require_split=True)
    if len(train) < min_train:
        raise UserError(f"{dataset.root}: only {len(train)} training photos; regression needs at least {min_train}. "
                        f"Add photos, or re-split with smaller --val/--test (`campusgps split {dataset.root} "
                        f"--val 0.1 --test 0`)")
    if (splits == "val").any():
        return train, dataset.subset("val"), "val split"
    rng = np.random.default_rng(seed)
    n = len(train)
    hold = np.zeros(n, bool)
    hold[rng.choice(n, size=max(2, n // 7), replace=False)] = True
    from campusgps.dataset import Dataset

    df = train.manifest
    tr = Dataset(root=train.root, manifest=df[~hold].reset_index(drop=True), frame=train.frame)
    va = Dataset(root=train.root, manifest=df[hold].reset_index(drop=True), frame=train.frame)
    return tr, va, "held out 1/7 of train (no val split)"


def _images_at_input(ds, bb, progress: bool) -> np.ndarray:
    from campusgps.progress import progress_bar

    out = np.empty((len(ds), bb.input_size, bb.input_size, 3), np.uint8)
    bar = progress_bar(total=len(ds), desc="loading images", unit="img", enable=progress)
    for i in range(len(ds)):
        out[i] = bb.preprocess([ds.load_image(i, bb.load_max_side())])[0]
        bar.update(1)
    bar.close()
    return out


Config = RegressionConfig
