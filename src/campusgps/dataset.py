"""The on-disk dataset that ``campusgps ingest`` writes and everything else reads.

Layout of ``DATASET/``::

    manifest.parquet   one row per sample (schema: MANIFEST_COLUMNS, plus any extra label columns)
    frame.json         the local metric frame (origin) used for east_m/north_m
    images/            each accepted photo stored once, resized, orientation applied, as JPEG
    rejected.csv       path,reason for every input file that did not become a sample

Rows are identified by ``id`` (stable, derived from the content hash). ``file`` is the stored image
path relative to the dataset root; ``source_path`` is where it came from. ``split`` is one of
``train``, ``val``, ``test`` or ``""`` (unassigned).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from campusgps.errors import UserError
from campusgps.geo import LocalFrame

MANIFEST = "manifest.parquet"
FRAME = "frame.json"
REJECTED = "rejected.csv"
IMAGES = "images"

# name -> pandas dtype. Extra label columns (e.g. condition, session, heading_deg) may follow.
MANIFEST_COLUMNS: dict[str, str] = {
    "id": "string",            # stable sample id (first 16 hex chars of sha256)
    "file": "string",          # stored image, relative to the dataset root (images/<id>.jpg)
    "source_path": "string",   # original file (absolute or as given)
    "sha256": "string",        # content hash of the original file
    "width": "int64",          # stored image size (after orientation + resize)
    "height": "int64",
    "lat": "float64",          # label (EXIF, labels CSV or correction), WGS84 degrees
    "lon": "float64",
    "alt": "float64",          # NaN when unknown
    "accuracy_m": "float64",   # GPS horizontal accuracy, NaN when unknown
    "taken_at": "string",      # ISO 8601 capture time, "" when unknown
    "camera": "string",        # "Make Model"
    "focal_35mm": "float64",   # 35 mm-equivalent focal length, NaN when unknown
    "label_source": "string",  # exif | labels | correction
    "corrected": "bool",       # True when --corrections changed the label
    "east_m": "float64",       # label in the local frame
    "north_m": "float64",
    "split": "string",         # train | val | test | ""
}
SPLITS = ("train", "val", "test")


def empty_manifest() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in MANIFEST_COLUMNS.items()})


def normalise_manifest(df: pd.DataFrame) -> pd.DataFrame:
    """Ensure every schema column exists with its dtype; keep extra columns after them."""
    df = df.copy()
    for c, t in MANIFEST_COLUMNS.items():
        if c not in df.columns:
            df[c] = pd.Series([pd.NA if t == "string" else (False if t == "bool" else np.nan)] * len(df),
                              dtype=t if t != "int64" else "float64")
        if t == "string":
            df[c] = df[c].astype("string").fillna("")
        elif t == "bool":
            df[c] = df[c].fillna(False).astype(bool)
        elif t == "int64":
            df[c] = pd.to_numeric(df[c], errors="coerce").fillna(0).astype("int64")
        else:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    extra = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    return df[list(MANIFEST_COLUMNS) + extra].reset_index(drop=True)


@dataclass
class Dataset:
    """An ingested dataset: a manifest table, its local frame and its stored images."""

    root: Path
    manifest: pd.DataFrame
    frame: LocalFrame

    # --- opening / saving ------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path) -> "Dataset":
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"dataset folder not found: {root} (create one with `campusgps ingest SRC --out {root}`)")
        mpath, fpath = root / MANIFEST, root / FRAME
        if not mpath.exists() or not fpath.exists():
            raise UserError(f"{root} is not a campusgps dataset: missing {MANIFEST} or {FRAME} "
                            f"(create one with `campusgps ingest SRC --out {root}`)")
        try:
            df = pd.read_parquet(mpath)
        except Exception as e:
            raise UserError(f"{mpath}: unreadable manifest ({e}); re-run `campusgps ingest` to rebuild it")
        return cls(root=root, manifest=normalise_manifest(df), frame=LocalFrame.load(fpath))

    def save(self) -> None:
        """Write manifest and frame atomically (write to a temp file, then rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        df = normalise_manifest(self.manifest)
        tmp = self.root / (MANIFEST + ".tmp")
        df.to_parquet(tmp, index=False)
        os.replace(tmp, self.root / MANIFEST)
        self.frame.save(self.root / FRAME)
        self.manifest = df

    # --- access ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.manifest)

    def subset(self, split: str | None) -> "Dataset":
        """Rows of one split (``None`` or ``"all"``: every row). Shares root and frame."""
        if split in (None, "all"):
            df = self.manifest
        else:
            if split not in SPLITS:
                raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} or all")
            df = self.manifest[self.manifest["split"] == split]
        return Dataset(root=self.root, manifest=df.reset_index(drop=True), frame=self.frame)

    def training_rows(self, require_split: bool = False) -> "Dataset":
        """The rows every method trains on (the one place that decides it).

        The ``train`` split when any row has it. A dataset with no ``train`` row (never split) trains on
        every row, unless ``require_split``: methods that need a val split of their own (regression's early
        stopping) then refuse with a pointer to ``campusgps split``. No rows at all is a UserError too.
        """
        if (self.manifest["split"] == "train").any():
            return self.subset("train")
        if require_split:
            raise UserError(f"{self.root}: no training split (every sample's split is empty); "
                            f"run `campusgps split {self.root}` first")
        if len(self) == 0:
            raise UserError(f"{self.root}: no training samples (run `campusgps split {self.root}`)")
        return self

    def rows(self, mask) -> "Dataset":
        """The rows selected by a boolean mask (or index array). Shares root and frame."""
        sel = np.asarray(mask)
        df = self.manifest[sel] if sel.dtype == bool else self.manifest.iloc[sel]
        return Dataset(root=self.root, manifest=df.reset_index(drop=True), frame=self.frame)

    def paths(self) -> list[Path]:
        return [self.root / f for f in self.manifest["file"]]

    def latlon(self) -> np.ndarray:
        return self.manifest[["lat", "lon"]].to_numpy(np.float64)

    def en(self) -> np.ndarray:
        """Labels in the local frame, shape (N, 2): east, north metres."""
        return self.manifest[["east_m", "north_m"]].to_numpy(np.float64)

    def load_image(self, i: int, max_side: int | None = None) -> np.ndarray:
        from campusgps.exif import load_image

        return load_image(self.root / self.manifest["file"].iloc[i], max_side=max_side)

    def summary(self) -> dict:
        en = self.en()
        counts = self.manifest["split"].replace("", "unassigned").value_counts().to_dict()
        return {
            "n": int(len(self)),
            "splits": {str(k): int(v) for k, v in counts.items()},
            "extent_m": [float(np.ptp(en[:, 0])), float(np.ptp(en[:, 1]))] if len(en) else [0.0, 0.0],
            "frame": self.frame.to_dict(),
        }
