"""What the model was trained on: reference positions, thumbnails, and the mean-position baseline."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from campusgps.evaluation.inputs import match_truth, open_dataset


def _find_dataset_paths(obj, depth: int = 0):
    keys = ("dataset", "dataset_root", "data_root", "root", "train_dataset", "path")
    if depth > 3:
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, str) and k in keys:
                yield v
            elif isinstance(v, (dict, list)):
                yield from _find_dataset_paths(v, depth + 1)
    elif isinstance(obj, list):
        for v in obj[:20]:
            yield from _find_dataset_paths(v, depth + 1)


@dataclass
class References:
    """The model's training (reference) photos as far as they can be known, in the localizer's frame."""

    en: np.ndarray                    # (M, 2)
    ids: list[str]
    source: str                       # human-readable: where the positions came from
    dataset: object | None = None     # Dataset (train rows) with images, when known
    localizer: object | None = None
    _row_of: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.dataset is not None:
            self._row_of = {str(i): k for k, i in enumerate(self.dataset.manifest["id"].astype(str))}

    def thumbnail(self, ref_id) -> bytes | None:
        from campusgps.evaluation.plots import thumbnail

        if ref_id is None:
            return None
        ref_id = str(ref_id)
        if self.localizer is not None:
            try:
                b = self.localizer.reference_thumbnail(ref_id)
            except Exception:
                b = None
            if b:
                return thumbnail(b)
        if ref_id in self._row_of:
            try:
                return thumbnail(self.dataset.load_image(self._row_of[ref_id], max_side=400))
            except Exception:
                return None
        return None

    def has_images(self) -> bool:
        return self.dataset is not None

    def nearest(self, point_en, k: int = 3, exclude: set | None = None) -> list[int]:
        """Indices (into en/ids) of the k reference photos nearest to ``point_en``."""
        if len(self.en) == 0 or not np.isfinite(point_en).all():
            return []
        d = np.hypot(*(self.en - np.asarray(point_en, float)).T)
        out = []
        for j in np.argsort(d):
            if exclude and self.ids[j] in exclude:
                continue
            out.append(int(j))
            if len(out) == k:
                break
        return out


def find_references(localizer, evaluated, reference=None) -> References | None:
    """Where the model's training photos are. Order: explicit ``reference`` dataset (its train split), the
    model's own reference positions (retrieval-style models), a dataset path recorded in the bundle info, the
    evaluated dataset's train split. None when nothing is known. Thumbnails come from the model when it
    keeps them, else from the dataset's images."""
    from campusgps.dataset import Dataset

    frame = localizer.frame
    ds = None
    if reference is not None:
        ds = open_dataset(reference)
    else:
        for p in _find_dataset_paths(getattr(localizer, "info", {}) or {}):
            try:
                if (Path(p) / "manifest.parquet").exists():
                    ds = Dataset.open(p)
                    break
            except Exception:
                continue
        if ds is None and (evaluated.manifest["split"] == "train").any():
            ds = evaluated
    train = None
    if ds is not None:
        has_train = (ds.manifest["split"] == "train").any()
        train = ds.subset("train") if has_train else ds
    pos = None
    if reference is None:  # an explicit training dataset wins, so every model is compared to one baseline
        try:
            pos = localizer.reference_positions()
        except Exception:
            pos = None
    if pos is not None and len(pos.get("lat", [])):
        e, n = frame.to_local(np.asarray(pos["lat"], float), np.asarray(pos["lon"], float))
        ids = [str(x) for x in pos.get("id", [""] * len(e))]
        return References(en=np.stack([e, n], axis=1).reshape(-1, 2), ids=ids,
                          source="the model's reference photos", dataset=train, localizer=localizer)
    if train is not None and len(train):
        e, n = frame.to_local(train.manifest["lat"].to_numpy(float), train.manifest["lon"].to_numpy(float))
        what = "train split" if (ds.manifest["split"] == "train").any() else "all samples"
        return References(en=np.stack([e, n], axis=1).reshape(-1, 2), ids=list(train.manifest["id"].astype(str)),
                          source=f"{what} of {ds.root}", dataset=train, localizer=localizer)
    return None


def baseline_center(refs: References | None, label_en: np.ndarray) -> tuple[np.ndarray, str]:
    """Where the mean-position baseline stands (local frame) and a sentence saying where that came from."""
    if refs is not None and len(refs.en):
        return refs.en.mean(axis=0), f"mean position of {refs.source}"
    ok = np.isfinite(label_en).all(axis=1)
    return label_en[ok].mean(axis=0), ("mean of the evaluated photos' own labels (the model's training "
                                       "positions are unknown: pass --reference TRAIN_DATASET)")


def reference_labels(refs: References | None, truth) -> dict | None:
    """How good the positions the model learned from are: the mapping photos' GPS labels. ``claimed_*``: the
    accuracy the phones wrote (EXIF GPSHPositioningError, ``accuracy_m``); ``vs_truth``: the labels' distance
    from where the photos were taken (``metrics.summarize``, like the evaluated photos' ``label_noise``), when
    ``truth`` (a :func:`load_truth` frame) covers them. A method that answers with these
    positions inherits their error: it is the floor under the median. None when the photos are unknown."""
    from campusgps.evaluation.metrics import summarize
    from campusgps.geo import haversine_m

    if refs is None or refs.dataset is None or not len(refs.dataset):
        return None
    m = refs.dataset.manifest
    out: dict = {"n": int(len(m)), "source": refs.source}
    acc = pd.to_numeric(m["accuracy_m"], errors="coerce").to_numpy(float) if "accuracy_m" in m else np.zeros(0)
    acc = acc[np.isfinite(acc) & (acc > 0)]
    if len(acc):
        out.update(n_claimed=int(len(acc)), claimed_accuracy_median_m=round(float(np.median(acc)), 2))
    if truth is not None:
        aligned, _ = match_truth(m, truth)
        vs = summarize(haversine_m(m["lat"].to_numpy(float), m["lon"].to_numpy(float),
                                   aligned["true_lat"].to_numpy(float), aligned["true_lon"].to_numpy(float)))
        if vs["n"]:
            out["vs_truth"] = vs
    return out
