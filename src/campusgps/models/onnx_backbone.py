"""Bring your own backbone: ``--backbone onnx:PATH`` runs any image model exported to ONNX through ONNX
Runtime, frozen, as the feature extractor of regression, retrieval and hybrid (and of the feature cache).

How to feed it (size, normalisation, layout) and what it returns (a global vector or feature maps) are its
settings: ``onnx_settings.py`` (defaults < ``PATH.json`` < ``--backbone-opt``). Loading validates the graph
(one 4-D image input, 3 channels, a 2-D or 4-D output) with a probe run; anything wrong is a ``UserError``
naming the file and the fix. Nothing downloads.

Identity: the key is ``onnx-<sha256 of the .onnx>-<hash of the settings>``, so the feature cache keeps one
folder per model and settings. A bundle records the model's path, sha256, size and resolved settings; models
up to ``EMBED_MAX_BYTES`` (50 MiB) are also stored IN the bundle (self-contained, the file may move), larger
ones are re-opened from the recorded path at load and must have the same sha256.
"""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from campusgps.errors import BundleError, UserError
from campusgps.models import onnx_settings
from campusgps.models.pooling import embed_in_batches, gem

ONNX_PREFIX = "onnx:"
EMBED_MAX_BYTES = 50 * 1024 * 1024
BUNDLE_TENSOR = "byo_onnx_model"
RECORD_VERSION = 1
_FIX = "see README 'Bring your own backbone'"


def is_onnx_name(name) -> bool:
    return isinstance(name, str) and name.startswith(ONNX_PREFIX)


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dims(shape) -> list:
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


class OnnxBackbone:
    """A frozen ONNX Runtime feature extractor with the :class:`~campusgps.models.backbones.Backbone` interface
    the localizers and the feature cache use (``embed``, ``feature_maps``, ``key``, ``describe``, ...)."""

    path = "onnx"
    fast_check: dict = {}
    net = None

    def __init__(self, name: str, model_path: str, sha256: str, size_bytes: int, settings: dict, session,
                 device, data: bytes | None = None):
        self.name, self.model_path, self.sha256, self.size_bytes = name, model_path, sha256, size_bytes
        self.settings = dict(settings)
        self.device = device
        self._sess, self._data = session, data
        self._in, self._out, self._batch, self._dtype = self._check_io(session)
        self.output_kind, self.feature_dim = self._probe()

    # --- identity ------------------------------------------------------------------------------------
    @property
    def input_hw(self) -> tuple[int, int]:
        return tuple(self.settings["input_size"])

    @property
    def input_size(self) -> int:
        return max(self.input_hw)

    @property
    def key(self) -> str:
        from campusgps.models.preprocess import PREPROC_VERSION

        s = json.dumps({k: self.settings[k] for k in sorted(self.settings)}, sort_keys=True)
        h = hashlib.sha256(f"{PREPROC_VERSION}|{s}".encode()).hexdigest()[:8]
        return f"onnx-{self.sha256[:16]}-{h}"

    def record(self, embedded: bool = False) -> dict:
        """What a bundle needs to use this model again."""
        return {"version": RECORD_VERSION, "name": self.name, "path": self.model_path, "sha256": self.sha256,
                "bytes": self.size_bytes, "settings": self.settings, "embedded": bool(embedded)}

    def describe(self) -> dict:
        s = self.settings
        return {"name": self.name, "key": self.key, "input_size": self.input_size, "feature_dim": self.feature_dim,
                "mean": s["mean"], "std": s["std"], "resize": "full-image", "path": self.path,
                "device": str(self.device), "fast_check": {}, "output_kind": self.output_kind,
                "onnx": self.record(embedded=self.size_bytes <= EMBED_MAX_BYTES)}

    # --- graph checks --------------------------------------------------------------------------------
    def _check_io(self, sess):
        s, where = self.settings, self.model_path
        ins = {i.name: i for i in sess.get_inputs()}
        if s["input_name"] is None and len(ins) != 1:
            raise UserError(f"{where}: the graph has {len(ins)} inputs ({', '.join(ins)}); name the image input "
                            f"with \"input_name\" in {onnx_settings.json_path(where).name} or --backbone-opt "
                            f"input_name=NAME")
        inp = ins.get(s["input_name"]) if s["input_name"] else next(iter(ins.values()))
        if inp is None:
            raise UserError(f"{where}: no input named {s['input_name']!r}; the graph's inputs: {', '.join(ins)}")
        dims = _dims(inp.shape)
        if len(dims) != 4:
            raise UserError(f"{where}: input {inp.name!r} has rank {len(dims)} (shape {inp.shape}); campusgps feeds "
                            f"a 4-D image batch (N,3,H,W, or N,H,W,3 with \"layout\": \"NHWC\"); re-export the "
                            f"model with an image input")
        c_at, other = (1, 3) if s["layout"] == "NCHW" else (3, 1)
        if dims[c_at] not in (None, 3):
            hint = (f"; it looks like {'NHWC' if s['layout'] == 'NCHW' else 'NCHW'}: set \"layout\""
                    if dims[other] == 3 else "")
            raise UserError(f"{where}: input {inp.name!r} shape {inp.shape} has {dims[c_at]} channels where "
                            f"{s['layout']} puts them; campusgps feeds 3 (RGB/BGR){hint}")
        hw = [dims[2], dims[3]] if s["layout"] == "NCHW" else [dims[1], dims[2]]
        if s["input_size"] is None:
            if None in hw:
                raise UserError(f"{where}: the model's input size is not fixed (shape {inp.shape}); give it with "
                                f"\"input_size\": 224 in {onnx_settings.json_path(where).name} or "
                                f"--backbone-opt input_size=224")
            self.settings["input_size"] = [int(hw[0]), int(hw[1])]
        elif None not in hw and list(hw) != list(s["input_size"]):
            raise UserError(f"{where}: input_size {s['input_size']} does not match the graph's fixed input "
                            f"{hw}; drop input_size or set it to {hw}")
        dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}.get(inp.type)
        if dtype is None:
            raise UserError(f"{where}: input {inp.name!r} has type {inp.type}; campusgps feeds float32 (or "
                            f"float16) images: re-export with a float input")
        outs = [o.name for o in sess.get_outputs()]
        out = s["output_name"] or outs[0]
        if out not in outs:
            raise UserError(f"{where}: no output named {out!r}; the graph's outputs: {', '.join(outs)}")
        self.settings["input_name"], self.settings["output_name"] = inp.name, out
        return inp.name, out, dims[0], dtype

    def _probe(self) -> tuple[str, int]:
        from campusgps.models.fastpaths import probe_images

        where, declared = self.model_path, self.settings["output"]
        try:
            y = self._run(self.preprocess(probe_images(2, size=64)))
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"{where}: ONNX Runtime failed on a {self.input_hw[0]}x{self.input_hw[1]} image batch "
                            f"({type(e).__name__}: {str(e)[:200]}); check input_size/layout ({_FIX})")
        kind = {2: "vector", 4: "maps"}.get(y.ndim)
        if kind is None or y.shape[0] != 2:
            raise UserError(f"{where}: output {self._out!r} has shape {list(y.shape)} for 2 images; campusgps needs "
                            f"(N, D) (a global vector) or (N, C, h, w) (feature maps); re-export, or pick another "
                            f"output with \"output_name\"")
        if declared != "auto" and declared != kind:
            raise UserError(f"{where}: output {self._out!r} is {kind} (shape {list(y.shape)}) but the settings say "
                            f"\"output\": \"{declared}\"; set it to {kind} or auto")
        if not np.isfinite(y).all():
            raise UserError(f"{where}: the model returns NaN/inf on plain images; check mean/std/range ({_FIX})")
        self.settings["output"] = kind
        return kind, int(y.shape[1])

    # --- preprocessing and inference -----------------------------------------------------------------
    def load_max_side(self) -> int:
        return 2 * self.input_size

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB arrays of any size -> (N, H, W, 3) uint8: the WHOLE image resized (no crop)."""
        from campusgps.models.preprocess import resize_batch

        return resize_batch(images, self.input_hw)

    def _normalise(self, batch: np.ndarray) -> np.ndarray:
        s = self.settings
        x = batch.astype(np.float32)
        if s["channels"] == "BGR":
            x = x[..., ::-1]
        if s["range"] == "0-1":
            x *= np.float32(1.0 / 255.0)
        x = (x - np.asarray(s["mean"], np.float32)) / np.asarray(s["std"], np.float32)
        if s["layout"] == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=self._dtype)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed uint8 batch -> the chosen output (float32); a fixed batch size runs in chunks."""
        step = self._batch or max(1, len(batch))
        outs = [self._sess.run([self._out], {self._in: self._normalise(batch[s:s + step])})[0]
                for s in range(0, len(batch), step)]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def embed(self, images: Sequence[np.ndarray], batch_size: int = 32, pooling: str = "gap",
              progress: bool = False) -> np.ndarray:
        """(N, D) float32: the model's global vector as it is, or its maps pooled (gap: average, gem: p=3)."""
        def pool_batch(imgs):
            y = self._run(self.preprocess(imgs))
            if self.output_kind == "maps":
                y = gem(y) if pooling == "gem" else y.mean((2, 3))
            return y

        return embed_in_batches(images, batch_size, self.feature_dim, pooling, f"features {self.name}", progress,
                                pool_batch)

    def feature_maps(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """(N, C, h, w) float32 maps (models whose output is feature maps)."""
        if self.output_kind != "maps":
            raise UserError(f"{self.model_path}: this model outputs a global vector, not feature maps; use it with "
                            f"GeM p=3 (the default) or export its feature maps with \"output\": \"maps\"")
        outs = [self._run(self.preprocess(images[s:s + batch_size])) for s in range(0, len(images), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, self.feature_dim, 1, 1), np.float32)

    def features_below(self, images, n_top: int, batch_size: int = 32):
        raise UserError(f"{self.name}: ONNX backbones are frozen; use --finetune frozen")

    def split_index(self, n_top: int) -> int:
        raise UserError(f"{self.name}: ONNX backbones are frozen; use --finetune frozen")

    def select_path(self, fast: str) -> str:
        if fast not in ("auto", "onnx"):
            raise UserError(f"{self.name}: an ONNX backbone always runs on ONNX Runtime; use --fast auto")
        return self.path


# --------------------------------------------------------------------------------------------------------
# opening: from a file (training) or from a bundle's record (prediction)
# --------------------------------------------------------------------------------------------------------
_CACHE: dict[tuple, OnnxBackbone] = {}
_LOCK = threading.Lock()


def _session(model, device):
    from campusgps.models.fastpaths import onnx_session

    try:
        return onnx_session(model, cuda=getattr(device, "type", "cpu") == "cuda")
    except Exception as e:
        what = "the model stored in the bundle" if isinstance(model, bytes) else str(model)
        raise UserError(f"{what}: ONNX Runtime cannot load it ({type(e).__name__}: {str(e)[:200]}); export the "
                        f"model again with torch.onnx.export (opset >= 13)")


def _resolve_device(device):
    from campusgps.models.backbones import _resolve_device as resolve

    return resolve(device)


def load_onnx_backbone(name: str, options=None, device: str = "auto", fast: str = "auto",
                       trainable: bool = False) -> OnnxBackbone:
    """``name`` = ``onnx:PATH``; ``options`` override ``PATH.json`` (dict or ``KEY=VALUE`` strings)."""
    if trainable:
        raise UserError(f"{name}: ONNX backbones are frozen and cannot be fine-tuned; use --finetune frozen")
    raw = name[len(ONNX_PREFIX):]
    if not raw:
        raise UserError("--backbone onnx:PATH needs the path of an .onnx file, e.g. onnx:models/dinov2_s.onnx")
    p = Path(raw).expanduser()
    if not p.is_file():
        raise UserError(f"ONNX model not found: {p} (--backbone {name}); give the path of a model exported "
                        f"with torch.onnx.export ({_FIX})")
    p = p.resolve()
    st = p.stat()
    opts = onnx_settings.parse_options(options)
    dev = _resolve_device(device)
    jp = onnx_settings.json_path(p)
    jtag = jp.stat().st_mtime_ns if jp.exists() else None
    ck = (str(p), st.st_size, st.st_mtime_ns, jtag, json.dumps(opts, sort_keys=True), str(dev))
    with _LOCK:
        if ck in _CACHE:
            _CACHE[ck].select_path(fast)
            return _CACHE[ck]
    settings = onnx_settings.resolve(p, opts)
    from campusgps.models.backbones import _file_sha256

    bb = OnnxBackbone(name, str(p), _file_sha256(str(p)), st.st_size, settings, _session(p, dev), dev)
    bb.select_path(fast)
    with _LOCK:
        _CACHE[ck] = bb
    return bb


def bundle_parts(bb) -> tuple[dict, dict]:
    """(tensors, meta) a localizer adds to its bundle for backbone ``bb`` ({} and {} for built-in ones)."""
    if not isinstance(bb, OnnxBackbone):
        return {}, {}
    tensors = {}
    embed = bb.size_bytes <= EMBED_MAX_BYTES and not _has_external_data(bb)
    if embed:
        data = bb._data if bb._data is not None else _read_checked(bb.model_path, bb.sha256, "save")
        tensors[BUNDLE_TENSOR] = np.frombuffer(data, np.uint8)
    return tensors, {"backbone_onnx": bb.record(embedded=embed)}


def _has_external_data(bb) -> bool:
    if bb._data is not None:
        return False
    try:
        import onnx

        m = onnx.load(bb.model_path, load_external_data=False)
        return any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    except Exception:
        return False


def _read_checked(path: str, sha: str, what: str) -> bytes:
    data = Path(path).read_bytes()
    if _sha256_bytes(data) != sha:
        raise BundleError(f"{path}: the ONNX model changed since it was loaded; {what} again with the file "
                          f"unchanged")
    return data


def from_bundle(tensors: dict, meta: dict, device: str = "auto") -> OnnxBackbone | None:
    """The ONNX backbone a bundle was trained with (None when it used a built-in one).

    Uses the bytes stored in the bundle when present, else the recorded path, which must hold a file with
    the recorded sha256 (a moved or changed model is a BundleError saying where it was and what to do).
    """
    rec = meta.get("backbone_onnx")
    if not rec:
        return None
    if int(rec.get("version", 0)) > RECORD_VERSION:
        raise BundleError(f"the bundle's ONNX backbone record is v{rec.get('version')}; upgrade campusgps")
    path, sha = rec["path"], rec["sha256"]
    dev = _resolve_device(device)
    blob = tensors.get(BUNDLE_TENSOR)
    if blob is not None:
        data = np.ascontiguousarray(blob, np.uint8).tobytes()
        if _sha256_bytes(data) != sha:
            raise BundleError(f"the ONNX model stored in the bundle is corrupt (sha256 differs from the record); "
                              f"retrain, or copy the bundle again")
        model = data
    else:
        p = Path(path)
        if not p.is_file():
            raise BundleError(f"this model uses the ONNX backbone {path} (sha256 {sha[:12]}..., {rec['bytes']} "
                              f"bytes, not stored in the bundle: over {EMBED_MAX_BYTES >> 20} MiB), which is "
                              f"missing; put the same file back at {path}, or retrain with the new location")
        from campusgps.models.backbones import _file_sha256

        got = _file_sha256(str(p))
        if got != sha:
            raise BundleError(f"{path}: the ONNX backbone changed since this model was trained (sha256 "
                              f"{got[:12]}... instead of {sha[:12]}...); restore the original file or retrain")
        model, data = p, None
    settings = {**onnx_settings.DEFAULTS, **rec["settings"]}
    bb = OnnxBackbone(rec["name"], path, sha, int(rec["bytes"]), settings, _session(model, dev), dev, data=data)
    want = meta.get("backbone_key")
    if want and bb.key != want:
        raise BundleError(f"the bundle's ONNX backbone resolves to key {bb.key}, not the recorded {want}; retrain")
    return bb
