"""Exceptions with messages meant for a person. The CLI turns ``UserError`` into exit status 2."""
from __future__ import annotations


class UserError(Exception):
    """Bad arguments or unusable input. The message says what was wrong, where, and the fix."""


class ImageError(UserError):
    """An input file could not be used as an image. ``reason`` is a short machine-friendly tag."""

    def __init__(self, message: str, reason: str = "unreadable"):
        super().__init__(message)
        self.reason = reason


class BundleError(UserError):
    """A model bundle is missing, corrupt, foreign or from an incompatible version."""
