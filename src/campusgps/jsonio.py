"""JSON that always loads: numpy values and NaN made plain, and files written atomically.

One helper for every JSON the project writes or serves (metrics.json, run.json, the server's answers):

* :func:`finite_or_none`: a number as a float, or None for NaN/inf/non-numbers (JSON has no NaN).
* :func:`jsonable`: numpy scalars/arrays, tuples and NaN -> plain JSON values, optionally capped in depth and
  length (the server caps what a model's metadata may put into a response).
* :func:`write_json` / :func:`write_text_atomic`: write through a ``.tmp`` file and rename, so a reader never
  sees half a file.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def finite_or_none(x) -> float | None:
    """``float(x)`` when it is a finite number, else None."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def jsonable(v: Any, max_depth: int | None = None, max_items: int | None = None, _depth: int = 0) -> Any:
    """``v`` with numpy scalars/arrays, tuples and non-finite floats turned into plain JSON values.

    NaN/inf become None, bytes become None, unknown objects their ``str()``. With ``max_depth``, values nested
    deeper than that many containers become None; with ``max_items``, lists keep their first ``max_items`` elements and larger
    arrays become None.
    """
    if max_depth is not None and _depth > max_depth:
        return None
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return finite_or_none(v)
    if isinstance(v, bytes):
        return None
    if isinstance(v, np.ndarray):
        if max_items is not None and v.size > max_items:
            return None
        return jsonable(v.tolist(), max_depth, max_items, _depth + 1)
    if isinstance(v, dict):
        return {str(k): jsonable(x, max_depth, max_items, _depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x, max_depth, max_items, _depth + 1) for x in v[:max_items]]
    return str(v)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via ``path.tmp`` and a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path: str | Path, obj) -> None:
    """``obj`` as indented JSON (through :func:`jsonable`, so numpy values and NaN are fine), atomically."""
    write_text_atomic(path, json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")
