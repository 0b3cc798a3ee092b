"""What the regression trainer trains: models for each fine-tune depth, batches, validation.

Fine-tune depths (``spec["mode"]``):

* ``frozen`` -- inputs are cached pooled features (one array per augmented view); model = head.
* ``top``    -- inputs are cached activations entering the last ``n_top`` blocks (per view);
               model = those blocks + head conv + pooling + head. BatchNorm statistics stay frozen.
* ``full``   -- inputs are uint8 images at the backbone's input size, augmented on the fly;
               model = the whole backbone + head (meant for GPUs).

Everything here is deterministic given the seed, and runs identically in each DDP worker.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TaskData:
    """Training arrays. ``x_views``: list of arrays (views) with identical first dimension N."""

    x_views: list
    y: np.ndarray            # (N, 2) normalised targets
    x_val: np.ndarray
    en_val: np.ndarray       # (M, 2) metres (labels)
    center: np.ndarray       # (2,) metres
    scale: float             # metres per normalised unit


def _bn_types():
    import torch.nn as nn

    return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def build_model(spec: dict, device=None, backbone_state: dict | None = None):
    """nn.Module mapping the task's inputs to ``(mu, log_sigma)``."""
    import torch
    import torch.nn as nn

    from campusgps.models.heads import head_from_spec

    head = head_from_spec(spec["head"])
    mode = spec["mode"]
    if mode == "frozen":
        model = _Wrap(None, head)
    else:
        from campusgps.models.backbones import backbone_from_state, get_backbone

        if backbone_state:
            bb = backbone_from_state(spec["backbone"], backbone_state, device="cpu", fast="eager")
        else:
            bb = get_backbone(spec["backbone"], device="cpu", fast="eager", trainable=True)
        if mode == "top":
            split = bb.split_index(int(spec["n_top"]))
            body = nn.Sequential(*list(bb.net.stages)[split:])
            model = _Wrap(body, head)
        elif mode == "full":
            model = _Wrap(_FullBody(bb), head)
        else:
            raise ValueError(f"unknown fine-tune mode {mode!r}")
        for p in model.body.parameters():
            p.requires_grad_(True)
        object.__setattr__(model, "bb_net", bb.net)  # shares modules with body; not a registered child
    if device is not None:
        model = model.to(device)
        if mode != "frozen":
            model = model.to(memory_format=torch.channels_last)
    return model


def _FullBody(bb):
    import torch.nn as nn

    from campusgps.models import preprocess

    class FullBody(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = bb.net
            self.spec = bb.spec

        def forward(self, x):  # uint8 NHWC
            return self.net(preprocess.normalise(self.spec, x))

    return FullBody()


def _wrap_class():
    import torch.nn as nn

    class Wrap(nn.Module):
        def __init__(self, body, head):
            super().__init__()
            self.body = body if body is not None else nn.Identity()
            self.head = head
            self.frozen_bn = body is not None

        def forward(self, x):
            return self.head(self.body(x))

        def train(self, mode: bool = True):
            super().train(mode)
            if self.frozen_bn:  # fine-tuning on small batches: keep ImageNet BN statistics
                for m in self.body.modules():
                    if isinstance(m, _bn_types()):
                        m.eval()
            return self

    return Wrap


_WRAP = None


def _Wrap(body, head):
    global _WRAP
    if _WRAP is None:
        _WRAP = _wrap_class()
    return _WRAP(body, head)


def backbone_state_of(model) -> dict:
    """Fine-tuned backbone weights (names as in the backbone's ``net``) as numpy arrays."""
    net = getattr(model, "bb_net", None)
    if net is None:
        return {}
    return {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}


def make_batches(data: TaskData, spec: dict, batch_size: int, device):
    """``batches(epoch, rng)`` for :func:`campusgps.training.loop.train`."""
    import torch

    n = len(data.y)
    views = data.x_views
    mode = spec["mode"]
    aug = None
    if mode == "full":
        from campusgps.models.augment import Augmenter

        aug = Augmenter()
    y_all = torch.from_numpy(np.asarray(data.y, np.float32))

    def batches(epoch: int, rng: np.random.Generator):
        perm = rng.permutation(n)
        nb = max(1, n // batch_size) if n >= batch_size else 1
        for b in range(nb):
            idx = perm[b * batch_size:(b + 1) * batch_size] if b < nb - 1 else perm[b * batch_size:]
            if mode == "full":
                imgs = [aug(views[0][i], rng) if rng.random() < 0.8 else views[0][i] for i in idx]
                x = torch.from_numpy(np.stack(imgs))
            else:
                v = rng.integers(0, len(views), size=len(idx))
                x = np.stack([views[vi][i] for vi, i in zip(v, idx)])
                x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            yield x.to(device, non_blocking=True), y_all[idx].to(device, non_blocking=True)

    steps = max(1, n // batch_size) if n >= batch_size else 1
    return batches, steps


def predict_model(model, x: np.ndarray, device, batch_size: int = 256):
    """(mu (M,2) normalised, log_sigma (M,) or None) for inputs ``x`` (numpy)."""
    import torch

    mus, sigs = [], []
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[s:s + batch_size]))
            if xb.is_floating_point():
                xb = xb.float()
            mu, ls = model(xb.to(device))[:2]
            mus.append(mu.float().cpu().numpy())
            if ls is not None:
                sigs.append(ls.float().cpu().numpy())
    mu = np.concatenate(mus) if mus else np.zeros((0, 2), np.float32)
    return mu, (np.concatenate(sigs) if sigs else None)


def make_validate(data: TaskData, device):
    def validate(model) -> dict:
        mu, _ = predict_model(model, data.x_val, device)
        en = mu.astype(np.float64) * data.scale + data.center
        err = np.hypot(*(en - data.en_val).T)
        if not np.isfinite(err).all():
            return {"median_m": float("nan"), "mean_m": float("nan"), "p90_m": float("nan")}
        return {"median_m": float(np.median(err)), "mean_m": float(err.mean()), "p90_m": float(np.percentile(err, 90))}

    return validate


def make_loss(spec: dict, scale: float, delta_m: float):
    from campusgps.models.losses import cells_loss, total_loss

    name = spec["loss"]

    def loss_fn(net, x, y):
        out = net(x)
        if len(out) > 2:  # cells head: (mu, log_sigma, logits)
            head = getattr(net, "module", net).head  # DDP wraps the model
            return cells_loss(name, out[0], out[1], out[2], head.cell_targets(y), y, scale, delta_m)
        return total_loss(name, out[0], out[1], y, scale, delta_m)

    return loss_fn
