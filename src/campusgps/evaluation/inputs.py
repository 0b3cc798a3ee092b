"""What an evaluation reads: the model, the dataset, and an optional truth CSV matched to the dataset's photos."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from campusgps.errors import UserError
from campusgps.ingest.labels import FILE_COLUMNS, read_csv_strings

TRUTH_EXTRAS = ("condition", "area", "zone", "session")


def load_truth(path: str | Path) -> pd.DataFrame:
    """Read a truth CSV: a file-name column and ``true_lat,true_lon`` (any case).

    Returns columns ``path`` (as written, '/' separators), ``base`` (base name), ``true_lat``, ``true_lon``
    and any of ``condition, area, zone, session`` present.
    """
    path = Path(path)
    df = read_csv_strings(path, "truth", f"a file-name column ({', '.join(FILE_COLUMNS)}) and true_lat,true_lon",
                          hint="synth writes one as OUT/truth.csv")
    lower = {c.strip().lower(): c for c in df.columns}
    fcol = next((lower[c] for c in FILE_COLUMNS if c in lower), None)
    missing = [c for c in ("true_lat", "true_lon") if c not in lower]
    if fcol is None or missing:
        need = []
        if fcol is None:
            need.append(f"a file-name column ({', '.join(FILE_COLUMNS)})")
        if missing:
            need.append(", ".join(missing))
        raise UserError(f"{path}: truth CSV is missing {' and '.join(need)}; found columns: "
                        f"{', '.join(map(str, df.columns)) or '(none)'}. Expected e.g. file,true_lat,true_lon "
                        f"(synth's OUT/truth.csv has them)")
    out = pd.DataFrame({
        "path": df[fcol].astype(str).str.strip().str.replace("\\", "/", regex=False),
        "true_lat": pd.to_numeric(df[lower["true_lat"]], errors="coerce"),
        "true_lon": pd.to_numeric(df[lower["true_lon"]], errors="coerce"),
    })
    for c in TRUTH_EXTRAS:
        if c in lower:
            out[c] = df[lower[c]].astype(str).str.strip()
    bad = out["true_lat"].isna() | out["true_lon"].isna() | (out["true_lat"].abs() > 90) | \
        (out["true_lon"].abs() > 180) | (out["path"] == "")
    if bad.all():
        raise UserError(f"{path}: no row has a file name and numeric true_lat/true_lon in range")
    if bad.any():
        rows = ", ".join(str(i + 2) for i in np.flatnonzero(bad.to_numpy())[:5])
        print(f"campusgps: warning: {path}: {int(bad.sum())} row(s) without a usable file/true_lat/true_lon "
              f"ignored (lines {rows}{', ...' if bad.sum() > 5 else ''})", file=sys.stderr)
    out = out[~bad].reset_index(drop=True)
    out["base"] = out["path"].map(lambda p: p.rsplit("/", 1)[-1])
    return out


def _parts(p: str) -> list[str]:
    return [x for x in str(p).replace("\\", "/").split("/") if x not in ("", ".")]


def match_truth(manifest: pd.DataFrame, truth: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Align truth rows to manifest rows by base name of ``source_path`` (then of ``file``).

    When several truth rows share a base name (e.g. ``photos/0001.jpg`` and ``queries/0001.jpg``) the one
    whose path shares the longest trailing run of folders with the sample's source path wins; a tie is
    left unmatched. Returns (frame aligned with manifest: true_lat, true_lon, extras) and counts.
    """
    by_base: dict[str, list[int]] = {}
    for i, b in enumerate(truth["base"]):
        by_base.setdefault(b, []).append(i)
    tparts = [_parts(p) for p in truth["path"]]
    picks, ambiguous = [], 0
    for src, f in zip(manifest["source_path"].astype(str), manifest["file"].astype(str)):
        pick = -1
        for cand in (src, f):
            parts = _parts(cand)
            if not parts:
                continue
            idx = by_base.get(parts[-1], [])
            if len(idx) == 1:
                pick = idx[0]
            elif len(idx) > 1:
                def common(j):
                    k = 0
                    while k < min(len(parts), len(tparts[j])) and parts[-1 - k] == tparts[j][-1 - k]:
                        k += 1
                    return k
                scores = sorted(((common(j), j) for j in idx), reverse=True)
                if scores[0][0] > scores[1][0]:
                    pick = scores[0][1]
                else:
                    ambiguous += 1
            if pick >= 0:
                break
        picks.append(pick)
    picks = np.asarray(picks, dtype=int)
    cols = [c for c in ("true_lat", "true_lon", *TRUTH_EXTRAS) if c in truth.columns]
    aligned = pd.DataFrame(index=range(len(manifest)), columns=cols)
    ok = picks >= 0
    if ok.any():
        aligned.loc[ok, cols] = truth.iloc[picks[ok]][cols].to_numpy()
    aligned["true_lat"] = pd.to_numeric(aligned["true_lat"], errors="coerce")
    aligned["true_lon"] = pd.to_numeric(aligned["true_lon"], errors="coerce")
    return aligned, {"matched": int(ok.sum()), "unmatched": int((~ok).sum()), "ambiguous": ambiguous}


def open_localizer(model):
    """A Localizer instance, or a bundle path to load (BundleError -> exit 2 with the path)."""
    from campusgps.localizers.base import Localizer

    if isinstance(model, Localizer):
        return model
    return Localizer.load(model)


def open_dataset(dataset):
    from campusgps.dataset import Dataset

    return dataset if isinstance(dataset, Dataset) else Dataset.open(dataset)


def align_truth(tdf: pd.DataFrame, manifest: pd.DataFrame, where: str, source) -> tuple[pd.DataFrame, dict]:
    """``tdf`` (a :func:`load_truth` frame) aligned with ``manifest``, and match counts.

    UserError when no photo matches (the CSV belongs to another dataset); a warning when some do not.
    ``where`` names the evaluated photos in messages (dataset root and split), ``source`` the truth CSV.
    """
    aligned, tstats = match_truth(manifest, tdf)
    if tstats["matched"] == 0:
        ex = ", ".join(tdf["base"].head(3))
        mine = ", ".join(Path(str(p)).name for p in manifest["source_path"].head(3))
        raise UserError(f"{source}: none of the {len(manifest)} photos of {where} matched a file "
                        f"name in the truth CSV (truth has e.g. {ex}; dataset has e.g. {mine}); check that the "
                        f"truth CSV belongs to this dataset")
    if tstats["unmatched"]:
        amb = f" ({tstats['ambiguous']} ambiguous base names)" if tstats["ambiguous"] else ""
        print(f"campusgps: warning: {tstats['unmatched']} of {len(manifest)} photos have no row in {source}{amb}; "
              f"vs_truth uses the {tstats['matched']} matched", file=sys.stderr)
    return aligned, tstats
