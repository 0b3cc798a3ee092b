"""The training loop shared by every trainable method.

AdamW, linear warm-up + cosine decay (per step), gradient clipping, early stopping on the validation median
error (metres) -- or, with ``select="last"``, the full schedule keeping the last weights --, seeds, a
checkpoint after every epoch (``torch.save`` of plain tensors/numbers, read back with
``weights_only=True``) and ``resume``; AMP on CUDA; a progress bar with the live train loss and val median.

Batches whose inputs, loss or gradients are NaN/inf are skipped (weights untouched) and counted; when more
than ``max_bad_fraction`` of an epoch's batches are bad, training stops with a message saying what to change.

Under torch.distributed (``training/ddp.py``) the model is wrapped in DDP, each rank trains on its shard of
every batch, and rank 0 validates, checkpoints and decides early stopping (broadcast to the others).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from campusgps.errors import UserError


class TrainingDiverged(UserError):
    """Too many NaN/inf batches."""


@dataclass
class LoopConfig:
    epochs: int = 60
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    min_lr_ratio: float = 0.02
    patience: int = 12
    clip_grad: float = 1.0
    seed: int = 0
    max_bad_fraction: float = 0.25
    amp: bool = True            # CUDA only
    param_groups: dict = field(default_factory=dict)  # name prefix -> lr multiplier
    select: str = "best"        # keep the weights of the best val epoch (early stopping) or the "last" epoch


def set_seed(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def lr_lambda(step: int, total: int, warmup: int, min_ratio: float) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


@dataclass
class TrainResult:
    best_state: dict
    best_epoch: int
    best_val: float
    history: list
    bad_batches: int
    epochs_run: int
    seconds: float
    resumed_from: int | None = None
    stopped_early: bool = False


def _fingerprint(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _all_finite(tensors) -> bool:
    import torch

    return all(bool(torch.isfinite(t).all()) for t in tensors if t is not None)


@dataclass
class _Run:
    """Everything one training run carries from epoch to epoch (and through a checkpoint)."""
    model: object
    net: object                 # model, or its DDP wrapper
    opt: object
    sched: object
    scaler: object
    cfg: LoopConfig
    device: object
    dist: bool
    rank: int
    world: int
    use_amp: bool
    amp_dtype: object
    fp: str
    best_state: dict
    start_epoch: int = 0
    best_val: float = float("inf")
    best_epoch: int = -1
    history: list = field(default_factory=list)
    bad_total: int = 0
    since_best: int = 0
    resumed_from: int | None = None


def _optimizer(model, cfg: LoopConfig, steps_per_epoch: int):
    """AdamW over the trainable parameters (per-prefix lr multipliers) + warm-up/cosine schedule per step."""
    import torch

    groups: dict[float, list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mult = 1.0
        for prefix, m in cfg.param_groups.items():
            if name.startswith(prefix):
                mult = m
        groups.setdefault(mult, []).append(p)
    if not groups:
        raise UserError("nothing to train: every parameter is frozen")
    opt = torch.optim.AdamW([{"params": ps, "lr": cfg.lr * m} for m, ps in groups.items()], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, total, warm, cfg.min_lr_ratio))
    return opt, sched


def _resume(r: _Run, ckpt: Path, log) -> None:
    import torch

    state = torch.load(ckpt, map_location=r.device, weights_only=True)
    if state.get("fingerprint") != r.fp:
        raise UserError(f"{ckpt}: checkpoint is from a different configuration or dataset; "
                        f"drop --resume to start over (or delete the checkpoint)")
    r.model.load_state_dict(state["model"])
    r.opt.load_state_dict(state["opt"])
    r.sched.load_state_dict(state["sched"])
    r.start_epoch = int(state["epoch"]) + 1
    r.best_val, r.best_epoch = float(state["best_val"]), int(state["best_epoch"])
    r.best_state, r.history = state["best_state"], json.loads(state["history"])
    r.bad_total, r.since_best = int(state["bad_total"]), int(state["since_best"])
    torch.set_rng_state(state["torch_rng"].cpu())
    r.resumed_from = r.start_epoch
    if log:
        log(f"resumed from {ckpt} at epoch {r.start_epoch + 1}")


def _save_checkpoint(r: _Run, ckpt: Path, epoch: int) -> None:
    import torch

    ckpt.parent.mkdir(parents=True, exist_ok=True)
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    torch.save({"fingerprint": r.fp, "epoch": epoch, "model": r.model.state_dict(), "opt": r.opt.state_dict(),
                "sched": r.sched.state_dict(), "best_val": r.best_val, "best_epoch": r.best_epoch,
                "best_state": r.best_state, "history": json.dumps(r.history), "bad_total": r.bad_total,
                "since_best": r.since_best, "torch_rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, ckpt)


def _step(r: _Run, loss_fn: Callable, x, y):
    """One optimisation step; -> the loss value, or None when the batch was bad (weights untouched)."""
    import torch

    if r.dist:  # each rank takes its shard of the batch (same global batch order on every rank)
        x, y = x[r.rank::r.world], y[r.rank::r.world]
    r.opt.zero_grad(set_to_none=True)
    ok = _all_finite([x, y]) if x.is_floating_point() else _all_finite([y])
    loss = None
    if ok:
        with torch.autocast(r.device.type, dtype=r.amp_dtype, enabled=r.use_amp):
            loss = loss_fn(r.net, x, y)
        ok = bool(torch.isfinite(loss))
    if r.dist:  # all ranks must agree to step (DDP needs every rank to run backward)
        flag = torch.tensor([1.0 if ok else 0.0], device=r.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        ok = bool(flag.item() > 0)
    if not ok:
        return None
    r.scaler.scale(loss).backward()
    r.scaler.unscale_(r.opt)
    grads = [p.grad for p in r.model.parameters() if p.grad is not None]
    gnorm = torch.nn.utils.clip_grad_norm_(r.model.parameters(), r.cfg.clip_grad) if r.cfg.clip_grad > 0 \
        else torch.sqrt(sum((g.float() ** 2).sum() for g in grads))
    if not torch.isfinite(gnorm):
        r.opt.zero_grad(set_to_none=True)
        if r.scaler.is_enabled():
            r.scaler.update()
        return None
    r.scaler.step(r.opt)
    r.scaler.update()
    return float(loss.detach())


def _train_epoch(r: _Run, loss_fn: Callable, batches: Callable, epoch: int, bar) -> list:
    """One pass over ``batches``; -> the losses of the good batches. Raises TrainingDiverged."""
    rng = np.random.default_rng([r.cfg.seed, epoch])
    r.net.train()
    losses, bad, n_batches = [], 0, 0
    for x, y in batches(epoch, rng):
        n_batches += 1
        loss = _step(r, loss_fn, x, y)
        if loss is None:
            bad += 1
        else:
            losses.append(loss)
            r.sched.step()  # the schedule counts applied updates
        if losses:
            bar.set_postfix(loss=f"{losses[-1]:.4g}", val_median=f"{r.best_val:.2f}m" if r.best_val < 1e30 else "-",
                            refresh=False)
    r.bad_total += bad
    if n_batches and bad / n_batches > r.cfg.max_bad_fraction:
        bar.close()
        raise TrainingDiverged(
            f"training stopped at epoch {epoch + 1}: {bad} of {n_batches} batches had NaN/inf inputs, loss or "
            f"gradients (weights were not updated by them). Lower the learning rate (--lr), keep gradient "
            f"clipping on (--clip-grad), or check the dataset for broken labels")
    return losses


def _validate_epoch(r: _Run, validate: Callable, epoch: int, losses: list, bad: int, bar,
                    ckpt: Path | None) -> bool:
    """Rank 0: validate, keep the best weights, checkpoint; -> whether early stopping says stop."""
    r.net.eval()
    v = validate(r.model)
    med = float(v.get("median_m", float("nan")))
    rec = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
           "bad_batches": bad, "lr": float(r.opt.param_groups[0]["lr"]),
           **{k: float(val) for k, val in v.items()}}
    r.history.append(rec)
    if np.isfinite(med) and med < r.best_val:
        r.best_val, r.best_epoch, r.since_best = med, epoch + 1, 0
        r.best_state = {k: t.detach().clone() for k, t in r.model.state_dict().items()}
    else:
        r.since_best += 1
    stop = r.since_best >= r.cfg.patience and r.cfg.select == "best"
    bar.set_postfix(loss=f"{rec['train_loss']:.4g}", val_median=f"{med:.2f}m", best=f"{r.best_val:.2f}m")
    if ckpt:
        _save_checkpoint(r, ckpt, epoch)
    return stop


def _start(model, cfg: LoopConfig, steps_per_epoch: int, device, fingerprint: dict | None) -> _Run:
    import torch

    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    device = device or next(model.parameters()).device
    set_seed(cfg.seed)
    net = model
    if dist:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt, sched = _optimizer(model, cfg, steps_per_epoch)
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if (use_amp and torch.cuda.is_bf16_supported()) else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    return _Run(model=model, net=net, opt=opt, sched=sched, scaler=scaler, cfg=cfg, device=device, dist=dist,
                rank=torch.distributed.get_rank() if dist else 0,
                world=torch.distributed.get_world_size() if dist else 1, use_amp=use_amp, amp_dtype=amp_dtype,
                fp=_fingerprint({"loop": asdict(cfg), **(fingerprint or {})}),
                best_state={k: v.detach().clone() for k, v in model.state_dict().items()})


def train(model, loss_fn: Callable, batches: Callable[[int, np.random.Generator], Iterator],
          validate: Callable[[object], dict], cfg: LoopConfig, steps_per_epoch: int, device=None,
          checkpoint: str | Path | None = None, resume: bool = False, fingerprint: dict | None = None,
          progress: bool = True, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``model`` in place; returns the best state (by ``validate(model)['median_m']``, lower is better).

    ``batches(epoch, rng)`` yields ``(inputs, targets)`` tensors (already on ``device``);
    ``loss_fn(model, inputs, targets)`` returns a scalar loss tensor.
    """
    import torch

    from campusgps.progress import progress_bar

    r = _start(model, cfg, steps_per_epoch, device, fingerprint)
    ckpt = Path(checkpoint) if checkpoint else None
    if resume and ckpt and ckpt.exists():
        _resume(r, ckpt, log)
    elif resume and ckpt and log:
        log(f"no checkpoint at {ckpt}; starting from scratch")
    t0 = time.time()
    bar = progress_bar(total=cfg.epochs, desc="training", unit="epoch", enable=progress and r.rank == 0,
                       initial=r.start_epoch)
    stopped_early, epoch = False, r.start_epoch - 1
    for epoch in range(r.start_epoch, cfg.epochs):
        bad_before = r.bad_total
        losses = _train_epoch(r, loss_fn, batches, epoch, bar)
        # validation (rank 0 decides; others follow)
        stop = _validate_epoch(r, validate, epoch, losses, r.bad_total - bad_before, bar, ckpt) if r.rank == 0 \
            else False
        if r.dist:
            flag = torch.tensor([1.0 if stop else 0.0], device=r.device)
            torch.distributed.broadcast(flag, src=0)
            stop = bool(flag.item() > 0)
        bar.update(1)
        if stop:
            stopped_early = True
            break
    bar.close()
    if cfg.select == "last":  # full schedule; report the last epoch's validation
        r.best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
        if r.history:
            r.best_val, r.best_epoch = float(r.history[-1].get("median_m", r.best_val)), int(r.history[-1]["epoch"])
    model.load_state_dict(r.best_state)
    return TrainResult(best_state=r.best_state, best_epoch=r.best_epoch, best_val=r.best_val, history=r.history,
                       bad_batches=r.bad_total, epochs_run=epoch + 1, seconds=time.time() - t0,
                       resumed_from=r.resumed_from, stopped_early=stopped_early)
