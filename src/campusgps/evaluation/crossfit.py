"""Out-of-fold ("cross-fit") predictions: the method refitted K times, each time without a part of the photos.

Shared by ``campusgps evaluate --cross-fit K`` and ``campusgps audit`` (which cross-fits its training photos).
Photos are assigned to folds by *location group* (photos closer than ``group_radius_m`` to each other,
transitively, as ``campusgps split`` groups them), so a photo is never scored by a model that was fitted on
another photo of the same spot: a retrieval index holding the neighbour taken two metres away would make the
score measure memory instead of localisation.

For fold k, the photos of fold k are taken out of training (split ``test``); the other photos of ``rows``
train (their ``train``/``val`` split is kept, ``test``/unassigned become ``train``); every other row of the
dataset keeps its split. A fresh localizer of the same class and config is fitted on that and locates fold k.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass

import numpy as np

from campusgps.errors import UserError

DEFAULT_GROUP_RADIUS_M = 5.0


@dataclass
class CrossFit:
    """Out-of-fold result over *all* rows of the dataset (rows not cross-fitted stay NaN / empty)."""

    prediction: object               # Prediction with one entry per dataset row
    fold: np.ndarray                 # fold number per row, -1 for rows not cross-fitted
    baseline_en: np.ndarray          # (n, 2): mean training position of the model that scored the row
    folds: int
    n_groups: int
    seconds_fit: float
    seconds_predict: float


def _say(msg: str, quiet: bool, who: str) -> None:
    if not quiet:
        print(f"{who}: {msg}", file=sys.stderr, flush=True)


def fold_groups(dataset, rows: np.ndarray, group_radius_m: float = DEFAULT_GROUP_RADIUS_M) -> np.ndarray:
    """Location group per row of ``rows`` (connected components of "closer than group_radius_m")."""
    from campusgps.ingest.split import location_groups

    en = dataset.en()[rows]
    return location_groups(en[:, 0], en[:, 1], group_radius_m)


def assign_folds(groups: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Fold number per point; whole groups go to one fold, folds balanced by photo count, deterministic."""
    ids, sizes = np.unique(groups, return_counts=True)
    if len(ids) < folds:
        raise UserError(f"only {len(ids)} location groups for --cross-fit {folds}: use at most {len(ids)} folds, "
                        f"or photos from more places")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    order = order[np.argsort(-sizes[order], kind="stable")]  # biggest groups first, ties in random order
    load = np.zeros(folds, dtype=np.int64)
    fold_of = {}
    for j in order:
        k = int(np.argmin(load))
        fold_of[ids[j]] = k
        load[k] += sizes[j]
    return np.array([fold_of[g] for g in groups], dtype=np.int64)


def _store(out, p, held: np.ndarray) -> None:
    """Copy every per-image field of the fold's Prediction ``p`` into rows ``held`` of ``out``."""
    n_out = len(out.east)
    for f in dataclasses.fields(p):
        src, dst = getattr(p, f.name), getattr(out, f.name)
        if isinstance(src, np.ndarray) and isinstance(dst, np.ndarray) and len(dst) == n_out and len(src) == len(held):
            dst[held] = src
        elif isinstance(src, list) and isinstance(dst, list) and len(dst) == n_out and len(src) == len(held):
            for j, i in enumerate(held):
                dst[i] = src[j]


def _empty_like(n: int):
    from campusgps.localizers.base import Prediction

    out = Prediction.empty(n)
    for f in dataclasses.fields(out):  # fields added later (e.g. per-image scores) start empty as well
        v = getattr(out, f.name)
        if isinstance(v, np.ndarray) and len(v) != n:
            setattr(out, f.name, np.full(n, np.nan))
        elif isinstance(v, list) and len(v) != n:
            setattr(out, f.name, [None] * n)
    return out


def take(pred, idx: np.ndarray):
    """The entries ``idx`` of a Prediction (every per-image field), as a new Prediction."""
    out = _empty_like(len(idx))
    n = len(pred.east)
    for f in dataclasses.fields(pred):
        v = getattr(pred, f.name)
        if isinstance(v, np.ndarray) and len(v) == n:
            setattr(out, f.name, v[idx].copy())
        elif isinstance(v, list) and len(v) == n:
            setattr(out, f.name, [v[i] for i in idx])
    return out


def cross_fit_predictions(localizer, dataset, rows: np.ndarray, folds: int, seed: int = 0, batch_size: int = 32,
                          quiet: bool = False, group_radius_m: float = DEFAULT_GROUP_RADIUS_M,
                          who: str = "cross-fit") -> CrossFit:
    """Out-of-fold predictions for ``rows`` (row positions in ``dataset``), see the module docstring.

    Raises UserError when there are too few location groups or a refit fails (the message then ends with
    a hint to run without cross-fitting).
    """
    from campusgps.dataset import Dataset

    rows = np.asarray(rows, dtype=np.int64)
    if folds < 2:
        raise UserError("--cross-fit must be at least 2 folds")
    groups = fold_groups(dataset, rows, group_radius_m)
    assign = assign_folds(groups, folds, seed)
    n = len(dataset)
    out = _empty_like(n)
    fold = np.full(n, -1, dtype=np.int64)
    fold[rows] = assign
    baseline = np.full((n, 2), np.nan)
    paths = dataset.paths()
    klass = type(localizer)
    base_split = dataset.manifest["split"].astype(str).to_numpy(dtype=object).copy()
    others = base_split[rows]
    base_split[rows] = np.where(np.isin(others, ["train", "val"]), others, "train")
    t_fit = t_pred = 0.0
    for k in range(folds):
        held = rows[assign == k]
        m = dataset.manifest.copy()
        split = base_split.copy()
        split[held] = "test"
        m["split"] = split
        fold_ds = Dataset(root=dataset.root, manifest=m, frame=dataset.frame)
        _say(f"fold {k + 1}/{folds}: refitting {localizer.method} without {len(held)} photos", quiet, who)
        t0 = time.perf_counter()
        try:
            model = klass(localizer.cfg).fit(fold_ds)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"refitting {localizer.method} for out-of-fold predictions failed ({type(e).__name__}: "
                            f"{e}); re-run with --cross-fit 0 to use the model as it is")
        t1 = time.perf_counter()
        p = model.predict([paths[i] for i in held], batch_size=batch_size)
        t_fit, t_pred = t_fit + (t1 - t0), t_pred + (time.perf_counter() - t1)
        _store(out, p, held)  # lat/lon come from predict(); neighbours carry lat/lon
        baseline[held] = fold_ds.training_rows().en().mean(axis=0)
        _say(f"fold {k + 1}/{folds} done in {time.perf_counter() - t0:.1f} s", quiet, who)
    return CrossFit(prediction=out, fold=fold, baseline_en=baseline, folds=folds, n_groups=int(len(np.unique(groups))),
                    seconds_fit=t_fit, seconds_predict=t_pred)


def cross_fit_split(localizer, full, split: str, folds: int, seed: int = 0, batch_size: int = 32,
                    quiet: bool = False, group_radius_m: float = DEFAULT_GROUP_RADIUS_M):
    """Out-of-fold (Prediction, seconds, info) for the rows of ``split`` of ``full`` (in manifest order).

    ``info`` is stored under ``cross_fit`` in metrics.json; it carries the per-row out-of-fold baseline
    centres as ``baseline_en`` (removed before writing).
    """
    if split in (None, "all"):
        rows = np.arange(len(full))
    else:
        rows = np.flatnonzero((full.manifest["split"] == split).to_numpy())
    if len(rows) == 0:
        raise UserError(f"{full.root}: no samples in split {split!r} to cross-fit")
    cf = cross_fit_predictions(localizer, full, rows, folds, seed, batch_size, quiet, group_radius_m,
                               who="evaluate")
    info = {"folds": folds, "location_groups": cf.n_groups, "group_radius_m": group_radius_m, "seed": seed,
            "seconds_refitting": round(cf.seconds_fit, 3), "baseline_en": cf.baseline_en[rows],
            "fold_sizes": [int((cf.fold[rows] == k).sum()) for k in range(folds)]}
    return take(cf.prediction, rows), cf.seconds_predict, info
