"""``--devices N``: data-parallel training with torch.distributed (DDP).

The parent process prepares the task arrays (cached features etc.), writes them to a temporary folder as
plain ``.npy`` files plus a JSON spec, and starts N worker processes (``torch.multiprocessing.spawn``):
NCCL on CUDA (one GPU per rank), gloo on CPU. Every worker rebuilds the same model from the spec, trains its
shard of every batch (gradients all-reduced by DDP), rank 0 validates/checkpoints and writes the best
weights as safetensors, which the parent loads. Launching under ``torchrun`` also works: when the process
group is already initialised, :func:`campusgps.training.loop.train` uses it directly.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from campusgps.errors import UserError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_task(folder: Path, data, spec: dict, loop_cfg, batch_size: int, extra: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for v, x in enumerate(data.x_views):
        np.save(folder / f"x_view{v}.npy", np.ascontiguousarray(x), allow_pickle=False)
    np.save(folder / "y.npy", data.y, allow_pickle=False)
    np.save(folder / "x_val.npy", data.x_val, allow_pickle=False)
    np.save(folder / "en_val.npy", data.en_val, allow_pickle=False)
    (folder / "task.json").write_text(json.dumps({
        "spec": spec, "loop": asdict(loop_cfg), "batch_size": batch_size, "n_views": len(data.x_views),
        "center": [float(c) for c in data.center], "scale": float(data.scale), **extra}))


def load_task(folder: Path):
    from campusgps.training.loop import LoopConfig
    from campusgps.training.task import TaskData

    meta = json.loads((folder / "task.json").read_text())
    views = [np.load(folder / f"x_view{v}.npy", mmap_mode="r", allow_pickle=False) for v in range(meta["n_views"])]
    data = TaskData(x_views=views, y=np.load(folder / "y.npy"), x_val=np.load(folder / "x_val.npy"),
                    en_val=np.load(folder / "en_val.npy"), center=np.asarray(meta["center"]), scale=meta["scale"])
    return data, meta, LoopConfig(**meta["loop"])


def _worker(rank: int, world: int, folder: str, port: int, use_cuda: bool) -> None:
    import torch
    import torch.distributed as dist

    from campusgps.training.loop import train
    from campusgps.training.task import build_model, make_batches, make_loss, make_validate

    os.environ.setdefault("CAMPUSGPS_PROGRESS", "0" if rank else os.environ.get("CAMPUSGPS_PROGRESS", ""))
    folder = Path(folder)
    data, meta, loop_cfg = load_task(folder)
    threads = max(1, int(meta.get("threads", 1)) // world)
    torch.set_num_threads(threads)
    if use_cuda:
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if use_cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world)
    try:
        spec = meta["spec"]
        model = build_model(spec, device=device)
        # every rank starts from rank 0's weights (DDP also broadcasts at wrap time)
        batches, steps = make_batches(data, spec, meta["batch_size"], device)
        res = train(model, make_loss(spec, data.scale, meta["delta_m"]), batches, make_validate(data, device),
                    loop_cfg, steps, device=device, checkpoint=meta.get("checkpoint") or None,
                    resume=bool(meta.get("resume")), fingerprint=meta.get("fingerprint"),
                    progress=bool(meta.get("progress")) and rank == 0)
        if rank == 0:
            from safetensors.numpy import save_file

            save_file({k: v.detach().cpu().contiguous().numpy() for k, v in res.best_state.items()},
                      str(folder / "best.safetensors"))
            (folder / "result.json").write_text(json.dumps({
                "best_epoch": res.best_epoch, "best_val": res.best_val, "history": res.history,
                "bad_batches": res.bad_batches, "epochs_run": res.epochs_run, "seconds": res.seconds,
                "resumed_from": res.resumed_from, "stopped_early": res.stopped_early}))
    except UserError as e:
        if rank == 0:
            (folder / "error.txt").write_text(str(e))
        raise
    finally:
        dist.destroy_process_group()


def train_distributed(devices: int, data, spec: dict, loop_cfg, batch_size: int, delta_m: float,
                      checkpoint=None, resume: bool = False, fingerprint: dict | None = None,
                      progress: bool = True, device_type: str = "cpu"):
    """Train on ``devices`` processes; returns (best_state: dict of torch tensors, result dict)."""
    import torch
    import torch.multiprocessing as mp

    use_cuda = device_type == "cuda"
    if use_cuda and torch.cuda.device_count() < devices:
        raise UserError(f"--devices {devices} asked for, but only {torch.cuda.device_count()} CUDA device(s) "
                        f"are visible; lower --devices")
    if not torch.distributed.is_available():
        raise UserError("this torch build has no torch.distributed; use --devices 1")
    with tempfile.TemporaryDirectory(prefix="campusgps-ddp-") as tmp:
        folder = Path(tmp)
        save_task(folder, data, spec, loop_cfg, batch_size,
                  {"delta_m": delta_m, "checkpoint": str(checkpoint) if checkpoint else "", "resume": resume,
                   "fingerprint": fingerprint or {}, "progress": progress, "threads": torch.get_num_threads()})
        try:
            mp.spawn(_worker, args=(devices, str(folder), _free_port(), use_cuda), nprocs=devices, join=True)
        except Exception as e:
            err = folder / "error.txt"
            if err.exists():
                raise UserError(err.read_text())
            raise UserError(f"distributed training failed ({type(e).__name__}: {str(e)[-500:]})")
        from safetensors.torch import load_file

        state = load_file(str(folder / "best.safetensors"))
        result = json.loads((folder / "result.json").read_text())
    return state, result
