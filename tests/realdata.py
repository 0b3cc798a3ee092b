"""Where the real-file corpus lives, and the skip used when it is absent.

The corpus (``../shared/data/exif-corpus`` next to the repository, or ``$CAMPUSGPS_EXIF_CORPUS``) holds 151
real camera and phone files; see its SOURCES.md. A clone without it still passes: those tests are skipped.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

CORPUS = Path(os.environ.get("CAMPUSGPS_EXIF_CORPUS")
              or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "exif-corpus")
needs_corpus = pytest.mark.skipif(
    not (CORPUS / "SOURCES.md").is_file(),
    reason=f"real-file corpus not found at {CORPUS} (../shared/data/exif-corpus or $CAMPUSGPS_EXIF_CORPUS); "
           f"these tests need the real camera/phone files")
