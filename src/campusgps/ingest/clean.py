"""Late cleaning decisions of ``campusgps ingest``: near duplicates (difference hashes) and isolated photos."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def hamming_min(h: int, hashes: np.ndarray) -> int:
    if hashes.size == 0:
        return 65
    x = np.bitwise_xor(hashes, np.uint64(h))
    return int(np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1).min())


def parse_hashes(manifest: pd.DataFrame) -> list[int]:
    out = []
    for h in manifest["dhash"] if "dhash" in manifest.columns else []:
        try:
            out.append(int(str(h), 16))
        except ValueError:
            pass
    return out


def remove_unused_image(path: Path, manifest: pd.DataFrame, new_rows: list[dict]) -> None:
    """Delete a stored image that no sample uses (after a late rejection)."""
    rel = f"images/{path.name}"
    if rel in set(manifest["file"]) or any(r["file"] == rel for r in new_rows):
        return
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def drop_isolated(manifest: pd.DataFrame, new_rows: list[dict], radius_m: float, reject, images: Path):
    """Reject new samples with no other sample (old or new) within ``radius_m``."""
    from scipy.spatial import cKDTree

    from campusgps.geo import LocalFrame

    lat = np.concatenate([manifest["lat"].to_numpy(float), [r["lat"] for r in new_rows]])
    lon = np.concatenate([manifest["lon"].to_numpy(float), [r["lon"] for r in new_rows]])
    frame = LocalFrame.from_points(lat, lon)
    e, n = frame.to_local(lat, lon)
    tree = cKDTree(np.c_[e, n])
    counts = tree.query_ball_point(np.c_[e, n], r=radius_m, return_length=True)
    old = len(manifest)
    keep = []
    for j, row in enumerate(new_rows):
        if counts[old + j] <= 1:
            reject(row["source_path"], "isolated")
        else:
            keep.append(row)
    for row in new_rows:
        if row not in keep:
            remove_unused_image(images / f"{row['id']}.jpg", manifest, keep)
    return keep


class Sieve:
    """Decides, result by result, whether a processed photo becomes a sample; collects the new rows.

    ``rejected`` (path -> reason, the whole rejected.csv) and ``run_rejected`` (reason -> count, this run)
    are updated in place.
    """

    def __init__(self, manifest: pd.DataFrame, images_dir: Path, near_dup: bool, near_dup_bits: int,
                 rejected: dict):
        self.manifest, self.images_dir = manifest, images_dir
        self.near_dup, self.near_dup_bits = near_dup, near_dup_bits
        self.rejected, self.run_rejected = rejected, {}
        self.known_sha = dict(zip(manifest["sha256"], manifest["id"]))
        self.hash_arr = np.array(parse_hashes(manifest) if near_dup else [], dtype=np.uint64)
        self.new_rows: list[dict] = []

    def reject(self, ap: str, reason: str) -> None:
        self.rejected[ap] = reason
        self.run_rejected[reason] = self.run_rejected.get(reason, 0) + 1

    def take(self, job, res: dict, extras: dict) -> None:
        from campusgps.dataset import IMAGES, MANIFEST_COLUMNS

        ap = job.path
        if not res["ok"]:
            self.reject(ap, res["reason"])
        elif res["sha256"] in self.known_sha:
            self.reject(ap, "duplicate")
        elif self.near_dup and hamming_min(res["dhash"], self.hash_arr) <= self.near_dup_bits:
            self.reject(ap, "near_duplicate")
            remove_unused_image(self.images_dir / f"{res['id']}.jpg", self.manifest, self.new_rows)
        else:
            self.rejected.pop(ap, None)
            self.known_sha[res["sha256"]] = res["id"]
            if self.near_dup:
                self.hash_arr = np.append(self.hash_arr, np.uint64(res["dhash"]))
            row = {c: res.get(c) for c in MANIFEST_COLUMNS if c in res}
            row.update(file=f"{IMAGES}/{res['id']}.jpg", source_path=ap, label_source=job.label_source,
                       corrected=job.label_source == "correction", split="",
                       dhash=f"{res['dhash']:016x}")
            for c, v in extras.items():
                row[c if c not in MANIFEST_COLUMNS and c != "dhash" else f"label_{c}"] = v
            self.new_rows.append(row)

    def drop_isolated(self, radius_m: float) -> None:
        if radius_m > 0 and self.new_rows:
            self.new_rows = drop_isolated(self.manifest, self.new_rows, radius_m, self.reject, self.images_dir)
