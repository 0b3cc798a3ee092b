"""Procedural campus simulator: geotagged photo sets with known ground truth (``campusgps synth``).

``synthesize(out, preset, seed, cfg)`` renders everything; ``build_world`` / ``render`` / ``plan`` are the
pieces (world.py, render.py, capture.py), ``writer.py`` writes JPEG+EXIF, truth.csv and world.json.
"""
from __future__ import annotations

PRESET_NAMES = ("tiny", "small", "medium")


def synthesize(*args, **kwargs):
    from campusgps.synth.writer import synthesize as _s

    return _s(*args, **kwargs)


__all__ = ["synthesize", "PRESET_NAMES"]
