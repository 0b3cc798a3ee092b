"""What ``campusgps ingest`` writes: rejected.csv, and the manifest merged with the new rows (checkpoints)."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def read_rejected(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        return dict(zip(df["path"], df["reason"]))
    except Exception:
        return {}


def write_rejected(path: Path, rejected: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(sorted(rejected.items()), columns=["path", "reason"]).to_csv(tmp, index=False)
    os.replace(tmp, path)


def merge_rows(manifest: pd.DataFrame, new_rows: list[dict]) -> pd.DataFrame:
    from campusgps.dataset import normalise_manifest

    if not new_rows:
        return manifest.copy()
    new = pd.DataFrame(new_rows)
    df = new if not len(manifest) else pd.concat([manifest, new], ignore_index=True)
    return normalise_manifest(df)
