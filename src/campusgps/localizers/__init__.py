"""Localizers: every method implements :class:`campusgps.localizers.base.Localizer`.

Methods register themselves by name; ``Localizer.load`` dispatches on the bundle's ``method``.
"""
from campusgps.localizers.base import Localizer, Prediction, get_localizer_class, register

__all__ = ["Localizer", "Prediction", "register", "get_localizer_class"]
