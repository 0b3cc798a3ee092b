"""Settings of a bring-your-own ONNX backbone (``--backbone onnx:PATH``): how to feed it and read it.

Where they come from, later wins::

    built-in defaults  <  PATH.json (beside the model)  <  options (``--backbone-opt KEY=VALUE``, or
                                                            ``get_backbone(..., options={...})``)

and ``input_size`` left unset everywhere is read from the graph when its input has a fixed size.
A bundle stores the resolved settings, so a trained model never re-reads PATH.json.

Fields (all optional):

* ``input_size``  224 or [H, W]: every photo is resized WHOLE (no crop) to this size.
* ``layout``      ``NCHW`` (default) or ``NHWC``: the input tensor's layout.
* ``channels``    ``RGB`` (default) or ``BGR``: channel order the model expects.
* ``range``       ``0-1`` (default: pixels divided by 255) or ``0-255``: pixel scale before mean/std.
* ``mean``/``std`` 3 numbers each, in the units of ``range`` and in the model's channel order;
                  default ImageNet ``[0.485, 0.456, 0.406]`` / ``[0.229, 0.224, 0.225]``.
* ``output``      ``auto`` (default: a 2-D output is a global vector, a 4-D one feature maps), ``vector``
                  (N, D: used as the descriptor as it is) or ``maps`` (N, C, h, w: pooled with GeM/average).
* ``input_name`` / ``output_name``: which input/output to use when the graph has several (default: first).
"""
from __future__ import annotations

import json
from pathlib import Path

from campusgps.errors import UserError

DEFAULTS: dict = {
    "input_size": None, "layout": "NCHW", "channels": "RGB", "range": "0-1",
    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "output": "auto",
    "input_name": None, "output_name": None,
}
_CHOICES = {"layout": ("NCHW", "NHWC"), "channels": ("RGB", "BGR"), "range": ("0-1", "0-255"),
            "output": ("auto", "vector", "maps")}
_FIX = "see README 'Bring your own backbone'"


def json_path(model_path: str | Path) -> Path:
    """The settings file beside a model: ``model.onnx`` -> ``model.onnx.json``."""
    p = Path(model_path)
    return p.with_name(p.name + ".json")


def _numbers(value, n: int | None, where: str, key: str) -> list[float]:
    if isinstance(value, str):
        value = [v for v in value.replace("x", ",").split(",") if v.strip()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        raise UserError(f"{where}: {key} must be numbers, got {value!r}; {_FIX}")
    if n is not None and len(out) != n:
        raise UserError(f"{where}: {key} needs {n} numbers (one per channel), got {len(out)}; {_FIX}")
    return out


def _coerce(key: str, value, where: str):
    """One setting, validated and converted to its canonical form."""
    if key not in DEFAULTS:
        raise UserError(f"{where}: unknown setting {key!r}; known: {', '.join(DEFAULTS)}; {_FIX}")
    if value is None:
        return None
    if key == "input_size":
        nums = _numbers(value, None, where, key)
        if len(nums) == 1:
            nums = nums * 2
        if len(nums) != 2 or any(v != int(v) or v < 8 or v > 4096 for v in nums):
            raise UserError(f"{where}: input_size must be one size or [H, W] in pixels (8..4096), got {value!r}")
        return [int(nums[0]), int(nums[1])]
    if key in ("mean", "std"):
        nums = _numbers(value, 3, where, key)
        if key == "std" and any(v <= 0 for v in nums):
            raise UserError(f"{where}: std values must be > 0, got {nums}")
        return nums
    if key in _CHOICES:
        v = str(value).strip()
        match = [c for c in _CHOICES[key] if c.lower() == v.lower()]
        if not match:
            raise UserError(f"{where}: {key} must be one of {', '.join(_CHOICES[key])}, got {value!r}")
        return match[0]
    if not isinstance(value, str) or not value:
        raise UserError(f"{where}: {key} must be a name (text), got {value!r}")
    return value


def read_json(model_path: str | Path) -> dict:
    """Settings from ``PATH.json`` ({} when there is none); a broken file is a UserError naming it."""
    jp = json_path(model_path)
    if not jp.exists():
        return {}
    try:
        data = json.loads(jp.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{jp}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); fix it or delete it "
                        f"and give the settings with --backbone-opt KEY=VALUE")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{jp}: cannot read the backbone settings ({e})")
    if not isinstance(data, dict):
        raise UserError(f"{jp}: must hold one JSON object such as {{\"input_size\": 224}}, got "
                        f"{type(data).__name__}")
    return {k: _coerce(k, v, str(jp)) for k, v in data.items() if not k.startswith("_") and k != "description"}


def parse_options(options) -> dict:
    """Overrides as a dict or a list of ``KEY=VALUE`` strings (``--backbone-opt``) -> canonical dict."""
    if not options:
        return {}
    if isinstance(options, dict):
        items = list(options.items())
    else:
        items = []
        for s in options:
            if "=" not in str(s):
                raise UserError(f"--backbone-opt {s!r}: use KEY=VALUE, e.g. --backbone-opt input_size=224")
            k, v = str(s).split("=", 1)
            items.append((k.strip(), v.strip()))
    return {k: _coerce(k, v, f"--backbone-opt {k}") for k, v in items}


def resolve(model_path: str | Path, options=None) -> dict:
    """The settings of the model at ``model_path``: defaults < PATH.json < options."""
    settings = dict(DEFAULTS)
    for layer in (read_json(model_path), parse_options(options)):
        settings.update({k: v for k, v in layer.items() if v is not None})
    return settings
