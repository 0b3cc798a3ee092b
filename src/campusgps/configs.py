"""Typed configuration: dataclasses with working defaults, exposed on the command line automatically.

``add_dataclass_arguments(parser, Cls)`` adds ``--field-name`` for every field of ``Cls`` (bool fields get
``--flag/--no-flag``); ``from_args(Cls, args)`` builds an instance using only the values the user gave,
so each class keeps its own defaults. Every run writes ``asdict(config)`` next to its outputs.
A field's ``metadata`` may give ``help``, ``choices``, ``metavar``, ``flag`` (a flag name other than
``--field-name``) and, for list fields, ``repeat=True`` (the flag is given once per item instead of
comma-separated).
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, group_title: str | None = None,
                            skip: set[str] = frozenset()) -> None:
    group = parser.add_argument_group(group_title) if group_title else parser
    hints = typing.get_type_hints(cls)
    existing = {a.dest for a in parser._actions}
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name in existing or f.name.startswith("_"):
            continue
        typ = hints[f.name]
        origin = typing.get_origin(typ)
        if origin is typing.Union or origin is types.UnionType:  # Optional[X], X | None
            typ = next(a for a in typing.get_args(typ) if a is not type(None))
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        helptext = f.metadata.get("help", "") + f" (default: {default})"
        kw: dict[str, Any] = {"default": None, "help": helptext, "dest": f.name}
        kw.update({k: f.metadata[k] for k in ("choices", "metavar") if k in f.metadata})
        if typ is bool:
            group.add_argument(_flag(f), action=argparse.BooleanOptionalAction, **kw)
        elif typ in (int, float, str):
            group.add_argument(_flag(f), type=typ, **kw)
        elif typing.get_origin(typ) in (list, tuple):
            inner = (typing.get_args(typ) or (str,))[0]
            if f.metadata.get("repeat"):
                group.add_argument(_flag(f), action="append", type=inner, **{**kw, "help": helptext + " (repeatable)"})
            else:
                group.add_argument(_flag(f), type=lambda s, inner=inner: [inner(x) for x in s.split(",") if x],
                                   **{**kw, "help": helptext + " (comma-separated)"})
        existing.add(f.name)


def from_args(cls, args: argparse.Namespace, **overrides):
    """Instance of ``cls`` from parsed args: only the values given on the command line override defaults."""
    kw = {}
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            kw[f.name] = v
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**kw)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def update(cfg, values: dict):
    """Copy of ``cfg`` with known keys from ``values`` (unknown keys raise a clear error)."""
    names = {f.name for f in dataclasses.fields(cfg)}
    bad = set(values) - names
    if bad:
        from campusgps.errors import UserError

        raise UserError(f"unknown option(s) for {type(cfg).__name__}: {', '.join(sorted(bad))}; "
                        f"known: {', '.join(sorted(names))}")
    return dataclasses.replace(cfg, **values)


def run_record(config=None, **extra) -> dict:
    """What every run writes next to its outputs: config, package versions, host, time."""
    import platform
    import time

    from campusgps import __version__

    versions = {"campusgps": __version__, "python": platform.python_version()}
    for mod in ("numpy", "torch", "faiss", "cv2", "onnxruntime", "PIL", "pandas"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "?")
        except Exception:
            pass
    rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(),
           "platform": platform.platform(), "versions": versions}
    if config is not None:
        rec["config"] = to_dict(config) if dataclasses.is_dataclass(config) else config
    rec.update(extra)
    return rec
