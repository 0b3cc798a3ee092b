"""Inference paths of a :class:`~campusgps.models.backbones.Backbone` and how ``fast="auto"`` picks one.

* ``eager``   fp32 PyTorch, channels-last memory format (the reference).
* ``bf16``    PyTorch with CPU bfloat16 autocast, channels-last.
* ``onnx``    ONNX Runtime on a graph exported once with ``torch.onnx.export`` into the local cache
              (``$CAMPUSGPS_CACHE`` or ``~/.cache/campusgps``)/onnx/<key>.onnx. Local generation, no download.
* ``cuda``    fp16 autocast on a CUDA device.

``fast="auto"`` picks, on CPU, ONNX Runtime if its features match fp32 eager (cosine >= 0.99 on probe
images), else bf16 if it matches, else eager; on CUDA, fp16 autocast. The check runs once per backbone key
and its result is remembered in the cache folder.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from campusgps.errors import UserError

FAST_PATHS = ("eager", "bf16", "onnx", "cuda")
COSINE_MIN = 0.99


def cache_root() -> Path:
    """Local cache of generated artefacts (ONNX graphs, fast-path checks). Env CAMPUSGPS_CACHE overrides."""
    env = os.environ.get("CAMPUSGPS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "campusgps"


def probe_images(n: int = 4, size: int = 256, seed: int = 7) -> list[np.ndarray]:
    """Deterministic natural-looking test images (sky gradient, blocks, texture) for fast-path checks."""
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(n):
        img = np.zeros((size, size, 3), np.float32)
        img[..., 0] = 90 + 120 * (1 - yy) + 20 * rng.standard_normal()
        img[..., 1] = 130 + 100 * (1 - yy) * xx
        img[..., 2] = 200 - 80 * yy
        for _ in range(6):
            x0, y0 = rng.integers(0, size - 40, 2)
            w, h = rng.integers(20, size // 2, 2)
            img[y0:y0 + h, x0:x0 + w] = rng.uniform(30, 230, 3)
        img += 12 * np.sin(xx * rng.uniform(20, 80))[..., None] + rng.normal(0, 6, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def _cpu_bf16_ok() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False



def export_onnx(bb, path: Path) -> Path:
    """Export ``bb``'s frozen extractor (input uint8 NHWC ``x``; outputs ``maps`` and ``pooled``) once."""
    import torch

    path = Path(path)
    if path.exists() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)

    class _Export(torch.nn.Module):
        def __init__(self, net, bb):
            super().__init__()
            self.net, self.bb = net, bb

        def forward(self, x):
            y = self.net(self.bb.normalise(x))
            return y, y.mean((2, 3))

    net_cpu = bb.net if bb.device.type == "cpu" else None
    if net_cpu is None:
        import copy

        net_cpu = copy.deepcopy(bb.net).cpu()
    mod = _Export(net_cpu, bb).eval()
    x = torch.zeros(2, bb.input_size, bb.input_size, 3, dtype=torch.uint8)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(mod, (x,), str(tmp), input_names=["x"], output_names=["maps", "pooled"],
                          dynamic_axes={"x": {0: "n"}, "maps": {0: "n"}, "pooled": {0: "n"}},
                          opset_version=17, do_constant_folding=True, dynamo=False)
    os.replace(tmp, path)
    return path


def onnx_session(model_path: Path | bytes, cuda: bool = False):
    """ONNX Runtime session (CPU; CUDA first when ``cuda`` and this onnxruntime has it) with the process's
    torch thread count. ``model_path``: a file, or the model's bytes."""
    import onnxruntime as ort
    import torch

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, torch.get_num_threads())
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    model = model_path if isinstance(model_path, bytes) else str(model_path)
    return ort.InferenceSession(model, so, providers=providers)


def _explicit_path(bb, fast: str) -> str:
    if fast == "cuda" and bb.device.type != "cuda":
        raise UserError("fast path 'cuda' needs a CUDA device")
    if fast in ("onnx", "bf16") and bb.device.type != "cpu":
        raise UserError(f"fast path {fast!r} is a CPU path; use device cpu or fast cuda")
    return fast


def _measure(bb, ort_version) -> tuple[str, dict]:
    """Try the CPU fast paths, fastest first (measured on this CPU class); the first that matches eager wins."""
    chosen, checks = "eager", {}
    candidates = (["onnx"] if ort_version else []) + (["bf16"] if _cpu_bf16_ok() else [])
    for cand in candidates:
        try:
            cos = bb.check_path(cand)
        except Exception as e:  # export or runtime problem: fall back, remember why
            checks[cand] = f"failed: {type(e).__name__}: {e}"[:300]
            continue
        checks[cand] = cos
        if cos >= COSINE_MIN:
            chosen = cand
            break
    return chosen, checks


def choose_path(bb, fast: str) -> tuple[str, dict]:
    """-> (inference path, fast-path check record) for ``fast`` in auto|eager|bf16|onnx|cuda.

    ``auto`` on CPU measures once per backbone key and torch/onnxruntime versions, remembered under
    ``cache_root()/fastpath/<key>.json``.
    """
    import torch

    if fast not in ("auto",) + FAST_PATHS:
        raise UserError(f"unknown fast path {fast!r}; use auto, eager, bf16, onnx or cuda")
    if fast != "auto":
        return _explicit_path(bb, fast), bb.fast_check
    if bb.device.type == "cuda":
        return "cuda", bb.fast_check
    if bb.spec.name == "tiny-cnn":  # already fast; keep tests free of export time
        return "eager", bb.fast_check
    memo = cache_root() / "fastpath" / f"{bb.key}.json"
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except Exception:
        ort_version = None
    tag = f"torch={torch.__version__}|ort={ort_version}"
    try:
        rec = json.loads(memo.read_text())
        if rec.get("tag") == tag and rec.get("path") in FAST_PATHS:
            return rec["path"], rec.get("cosine", {})
    except Exception:
        pass
    chosen, checks = _measure(bb, ort_version)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(memo.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"tag": tag, "path": chosen, "cosine": checks}))
        os.replace(tmp, memo)
    except OSError:
        pass
    return chosen, checks
