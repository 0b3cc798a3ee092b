"""Location-grouped train/val/test split, and applying an audit CSV to a dataset.

Photos taken at the same spot look alike; if one lands in train and its neighbour in test, the test
score measures memory, not localisation. So photos within ``group_radius_m`` of each other (transitively:
connected components of the "closer than R" graph) form one group, and whole groups are assigned to
splits. Groups are visited in a seeded random order and each goes to the split furthest below its target
size, which hits the fractions closely without ever splitting a group.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from campusgps.errors import UserError

AUDIT_COLUMNS = ["id", "file", "label_lat", "label_lon", "pred_lat", "pred_lon", "error_m", "radius_m",
                 "decision", "new_lat", "new_lon", "note"]  # audit.csv, written by evaluation/audit.py
AUDIT_DECISIONS = ("relabel", "keep", "move_to_train", "drop", "")


@dataclass
class SplitConfig:
    val: float = field(default=0.15, metadata={"help": "fraction of photos for validation"})
    test: float = field(default=0.15, metadata={
        "help": "fraction of photos for test; 0 when a separately ingested session is the test set"})
    group_radius_m: float = field(default=5.0, metadata={
        "help": "photos closer than this (transitively) form one group that is never split"})
    seed: int = field(default=0, metadata={"help": "random seed; the same seed gives the same split"})

    def validate(self) -> None:
        for name, v in (("--val", self.val), ("--test", self.test)):
            if not (0.0 <= v < 1.0) or not math.isfinite(v):
                raise UserError(f"{name} {v}: must be a fraction in [0, 1)")
        if self.val + self.test >= 1.0:
            raise UserError(f"--val {self.val} + --test {self.test} leaves nothing to train on; keep the sum below 1")
        if not (self.group_radius_m >= 0 and math.isfinite(self.group_radius_m)):
            raise UserError(f"--group-radius-m {self.group_radius_m}: must be >= 0 metres")


def location_groups(east: np.ndarray, north: np.ndarray, radius_m: float) -> np.ndarray:
    """Group label per point: connected components of the graph linking points closer than ``radius_m``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    pts = np.c_[np.asarray(east, float), np.asarray(north, float)]
    n = len(pts)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if radius_m <= 0:  # radius 0 still groups photos taken at exactly the same position
        _, inv = np.unique(pts, axis=0, return_inverse=True)
        return inv.reshape(-1).astype(np.int64)
    pairs = cKDTree(pts).query_pairs(r=radius_m, output_type="ndarray")
    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(g, directed=False)
    return labels.astype(np.int64)


def assign_splits(groups: np.ndarray, val: float, test: float, seed: int = 0) -> np.ndarray:
    """Split name per point, whole groups at a time, deterministic for ``seed``."""
    groups = np.asarray(groups)
    n = len(groups)
    out = np.full(n, "train", dtype=object)
    if n == 0:
        return out
    ids, sizes = np.unique(groups, return_counts=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    names = ["train", "val", "test"]
    target = np.array([1.0 - val - test, val, test]) * n
    count = np.zeros(3)
    where = {}
    for k in order:
        deficit = np.where(target > 0, target - count, -np.inf)
        s = int(np.argmax(deficit))
        where[ids[k]] = names[s]
        count[s] += sizes[k]
    # a requested split that got nothing (few big groups): give it the smallest train group, if train keeps one
    for s in (1, 2):
        if target[s] > 0 and count[s] == 0:
            train_groups = [g for g in ids if where[g] == "train"]
            if len(train_groups) > 1:
                g = min(train_groups, key=lambda g: (sizes[np.searchsorted(ids, g)], rng.random()))
                where[g] = names[s]
                count[s] += sizes[np.searchsorted(ids, g)]
                count[0] -= sizes[np.searchsorted(ids, g)]
    return np.array([where[g] for g in groups], dtype=object)


@dataclass
class SplitResult:
    sizes: dict[str, int]
    groups: dict[str, int]
    n_groups: int
    requested: dict[str, float] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        n = sum(self.sizes.values()) or 1
        parts = [f"{s} {self.sizes.get(s, 0)} ({100 * self.sizes.get(s, 0) / n:.0f}%, {self.groups.get(s, 0)} groups)"
                 for s in ("train", "val", "test")]
        lines = [f"split {sum(self.sizes.values())} photos in {self.n_groups} location groups: " + ", ".join(parts)]
        empty = [s for s, f in self.requested.items() if f > 0 and not self.sizes.get(s)]
        if empty:
            lines.append(f"warning: {' and '.join(empty)} got no photos: too few location groups "
                         f"({self.n_groups}); lower --group-radius-m or add photos from more spots")
        return lines


def split_dataset(dataset, config: SplitConfig | None = None) -> SplitResult:
    """Assign the ``split`` column (and a ``split_group`` column) of ``dataset`` and save it."""
    cfg = config or SplitConfig()
    cfg.validate()
    df = dataset.manifest
    if len(df) == 0:
        raise UserError(f"{dataset.root}: the dataset has no samples to split (see rejected.csv for why)")
    en = dataset.en()
    groups = location_groups(en[:, 0], en[:, 1], cfg.group_radius_m)
    splits = assign_splits(groups, cfg.val, cfg.test, cfg.seed)
    df = df.copy()
    df["split"] = pd.array(splits, dtype="string")
    df["split_group"] = groups
    dataset.manifest = df
    dataset.save()
    sizes = {s: int((splits == s).sum()) for s in ("train", "val", "test")}
    ngroups = {s: int(len(np.unique(groups[splits == s]))) for s in ("train", "val", "test")}
    return SplitResult(sizes=sizes, groups=ngroups, n_groups=int(len(np.unique(groups))),
                       requested={"val": cfg.val, "test": cfg.test})


# --- audit -----------------------------------------------------------------------------------------
@dataclass
class AuditResult:
    counts: dict[str, int]

    def summary_lines(self) -> list[str]:
        done = ", ".join(f"{k} {v}" for k, v in self.counts.items() if v) or "nothing to do"
        return [f"applied audit: {done}"]


def _float(v) -> float:
    try:
        x = float(str(v).strip())
    except ValueError:
        return float("nan")
    return x


def apply_audit(dataset, audit_csv: str | Path) -> AuditResult:
    """Apply the decisions of an ``audit.csv`` (from ``campusgps audit``) to ``dataset`` and save it."""
    from campusgps.dataset import REJECTED
    from campusgps.ingest.store import read_rejected, write_rejected

    from campusgps.ingest.labels import read_csv_strings

    path = Path(audit_csv)
    audit = read_csv_strings(path, "audit", "id,decision,new_lat,new_lon (as `campusgps audit` writes it)",
                             hint="`campusgps audit MODEL DATASET --out DIR` writes DIR/audit.csv")
    audit.columns = [str(c).strip().lower() for c in audit.columns]
    need = ("id", "decision")
    missing = [c for c in need if c not in audit.columns]
    if missing:
        raise UserError(f"{path}: audit CSV is missing column(s) {', '.join(missing)}; expected columns "
                        f"{','.join(AUDIT_COLUMNS)}")
    df = dataset.manifest.copy()
    index = {sid: i for i, sid in enumerate(df["id"])}
    allowed = ", ".join(d for d in AUDIT_DECISIONS if d) + " or empty"
    plans = []
    for r, row in enumerate(audit.to_dict("records")):
        line = r + 2
        decision = str(row["decision"]).strip().lower()
        if decision not in AUDIT_DECISIONS:
            raise UserError(f"{path}, line {line}: unknown decision {row['decision']!r}; use {allowed}")
        if not decision:
            continue
        sid = str(row["id"]).strip()
        if sid not in index:
            raise UserError(f"{path}, line {line}: id {sid!r} is not in {dataset.root} "
                            f"(was the audit made on another dataset?)")
        new = None
        if decision == "relabel":
            lat, lon = _float(row.get("new_lat", "")), _float(row.get("new_lon", ""))
            if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
                raise UserError(f"{path}, line {line}: decision relabel needs new_lat/new_lon in decimal degrees, "
                                f"got {row.get('new_lat', '')!r}, {row.get('new_lon', '')!r}")
            new = (lat, lon)
        plans.append((index[sid], decision, new))
    counts = {d: 0 for d in AUDIT_DECISIONS if d}
    drop_rows = set()
    for i, decision, new in plans:  # validated in full before anything changes
        counts[decision] += 1
        if decision == "relabel":
            e, n = dataset.frame.to_local(new[0], new[1])
            df.at[i, "lat"], df.at[i, "lon"] = new
            df.at[i, "east_m"], df.at[i, "north_m"] = float(e), float(n)
            df.at[i, "corrected"] = True
            df.at[i, "label_source"] = "correction"
        elif decision == "move_to_train":
            df.at[i, "split"] = "train"
        elif decision == "drop":
            drop_rows.add(i)
    if drop_rows:
        rej_path = Path(dataset.root) / REJECTED
        rejected = read_rejected(rej_path)
        for i in sorted(drop_rows):
            rejected[str(df.at[i, "source_path"]) or str(df.at[i, "file"])] = "dropped_by_audit"
        files = [Path(dataset.root) / str(df.at[i, "file"]) for i in drop_rows]
        df = df.drop(index=sorted(drop_rows)).reset_index(drop=True)
        dataset.manifest = df
        dataset.save()  # manifest first: a crash now leaves unused image files, never missing ones
        write_rejected(rej_path, rejected)
        still_used = set(df["file"])
        for f in files:
            if f.name and f"images/{f.name}" not in still_used:
                f.unlink(missing_ok=True)
    else:
        dataset.manifest = df
        dataset.save()
    return AuditResult(counts=counts)
