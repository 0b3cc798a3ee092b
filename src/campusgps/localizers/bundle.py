"""Model bundle: ONE file, tensors in safetensors, metadata as JSON in the safetensors header.

Nothing is ever unpickled: safetensors stores raw arrays, the header is JSON. Non-tensor binary state
(e.g. a serialised FAISS index) is stored as a uint8 tensor.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from campusgps.errors import BundleError

FORMAT = "campusgps-bundle"
FORMAT_VERSION = 1
_META_KEY = "campusgps"


def write_bundle(path: str | Path, tensors: dict[str, np.ndarray], meta: dict) -> None:
    """Atomically write tensors (numpy arrays) + JSON metadata to ``path``."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = dict(meta, format=FORMAT, format_version=FORMAT_VERSION)
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    if not arrays:  # safetensors needs at least a valid (possibly empty) dict; keep a marker
        arrays = {"__empty__": np.zeros(0, dtype=np.uint8)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(arrays, str(tmp), metadata={_META_KEY: json.dumps(header)})
    os.replace(tmp, path)


def read_bundle_meta(path: str | Path) -> dict:
    """Only the JSON metadata (cheap: reads the header)."""
    return _read(path, tensors=False)[1]


def read_bundle(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    return _read(path, tensors=True)


def _read(path: str | Path, tensors: bool):
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise BundleError(f"model file not found: {path} (train one with `campusgps train DATASET --out {path}`)")
    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
            arrays = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except Exception as e:
        raise BundleError(f"{path}: not a campusgps model bundle (cannot read it as safetensors: {e})")
    if raw is None:
        raise BundleError(f"{path}: a safetensors file but not a campusgps model bundle (no campusgps metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: corrupt bundle metadata ({e})")
    if meta.get("format") != FORMAT:
        raise BundleError(f"{path}: unknown bundle format {meta.get('format')!r}")
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format v{meta.get('format_version')} is newer than this campusgps "
                          f"(reads v{FORMAT_VERSION}); upgrade campusgps")
    arrays.pop("__empty__", None)
    return arrays, meta
