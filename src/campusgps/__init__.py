"""campusgps: tell where on a campus a photo was taken, from the pixels alone.

Public API (see CONTRACT): ``Localizer.load(path)``, ``loc.predict_gps(image)``, ``loc.predict(images)``.
Heavy modules (torch, faiss, cv2) are imported lazily so ``import campusgps`` stays cheap.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Localizer", "__version__"]


def __getattr__(name: str):
    if name == "Localizer":
        from campusgps.localizers.base import Localizer

        return Localizer
    raise AttributeError(name)
