"""Score a localizer on a dataset: metrics.json, predictions.csv and a self-contained report.html.

Python API::

    from campusgps.evaluation import evaluate
    metrics = evaluate(localizer_or_bundle_path, dataset_or_path, split="test", truth="truth.csv", out_dir="eval/")

Errors are measured against the dataset's labels (the GPS the phone wrote, ``error_m``) and, when a truth
CSV is given, against where the camera really was (``vs_truth``). The mean-position baseline is the centroid
of the model's training positions: the model's own reference positions when it keeps them, else the training
split of ``reference`` (a dataset path found in the bundle's info, or the evaluated dataset's train split);
``baseline.source`` in metrics.json says which one was used.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from campusgps.errors import UserError
from campusgps.evaluation.metrics import grouped, radius_coverage, summarize
from campusgps.ingest.labels import FILE_COLUMNS, read_csv_strings

TRUTH_EXTRAS = ("condition", "area", "zone", "session")
PREDICTION_COLUMNS = ["file", "lat", "lon", "radius_m", "label_lat", "label_lon", "error_m"]
TRUTH_COLUMNS = ["true_lat", "true_lon", "error_vs_truth_m"]
COMPASS_3x3 = [["NW", "N", "NE"], ["W", "C", "E"], ["SW", "S", "SE"]]


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# what the model was trained on: positions, thumbnails, baseline
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# running a model
# ------------------------------------------------------------------------------------------------
@dataclass
class EvalResult:
    metrics: dict
    table: pd.DataFrame               # one row per evaluated photo (predictions.csv + internal columns)
    neighbors: list[list[dict]]
    refs: References | None
    localizer: object
    dataset: object                   # evaluated subset
    has_truth: bool


def area_labels(pos_en: np.ndarray, bounds_en: np.ndarray, grid: int = 3) -> tuple[list[str], dict]:
    """Grid cells over the campus bounding box: compass names for 3x3 (NW..SE), else r{row}c{col}."""
    ok = np.isfinite(bounds_en).all(axis=1)
    lo, hi = bounds_en[ok].min(axis=0), bounds_en[ok].max(axis=0)
    span = np.maximum(hi - lo, 1e-6)
    names, cells = [], {}
    for p in pos_en:
        if not np.isfinite(p).all():
            names.append("")
            continue
        col = int(np.clip((p[0] - lo[0]) / span[0] * grid, 0, grid - 1))
        row = int(np.clip((hi[1] - p[1]) / span[1] * grid, 0, grid - 1))  # row 0 = north
        name = COMPASS_3x3[row][col] if grid == 3 else f"r{row + 1}c{col + 1}"
        names.append(name)
        cw, ch = span / grid
        cells[name] = [round(float(lo[0] + col * cw), 1), round(float(lo[0] + (col + 1) * cw), 1),
                       round(float(hi[1] - (row + 1) * ch), 1), round(float(hi[1] - row * ch), 1)]
    return names, cells


def predict_dataset(localizer, ds, batch_size: int = 32, progress: bool | None = None):
    """(Prediction, seconds) for every photo of ``ds``."""
    t0 = time.perf_counter()
    pred = localizer.predict(ds.paths(), batch_size=batch_size, progress=True if progress is None else progress)
    return pred, time.perf_counter() - t0


def _en(frame, lat, lon) -> np.ndarray:
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    out = np.full((len(lat), 2), np.nan)
    ok = np.isfinite(lat) & np.isfinite(lon)
    if ok.any():
        e, n = frame.to_local(lat[ok], lon[ok])
        out[ok, 0], out[ok, 1] = e, n
    return out


def _baseline(frame, refs: References | None, label_en: np.ndarray) -> tuple[np.ndarray, str]:
    if refs is not None and len(refs.en):
        return refs.en.mean(axis=0), f"mean position of {refs.source}"
    ok = np.isfinite(label_en).all(axis=1)
    return label_en[ok].mean(axis=0), ("mean of the evaluated photos' own labels (the model's training "
                                       "positions are unknown: pass --reference TRAIN_DATASET)")


def run_evaluation(model, dataset, split: str = "test", truth=None, reference=None, *, batch_size: int = 32,
                   robustness: bool = True, robustness_n: int = 100, area_grid: int = 3, seed: int = 0,
                   progress: bool | None = None, prediction=None) -> EvalResult:
    """Everything evaluate() computes, without writing files. ``prediction``: reuse a (Prediction, seconds)."""
    from campusgps.geo import haversine_m

    loc = open_localizer(model)
    full = open_dataset(dataset)
    ds = full.subset(split)
    if len(ds) == 0:
        counts = full.summary()["splits"]
        hint = ("use --split all for a separately ingested query session" if split != "all" else
                "ingest some photos first")
        raise UserError(f"{full.root}: no samples in split {split!r} (splits: {counts}); {hint}, or run "
                        f"`campusgps split {full.root}`")
    m = ds.manifest
    frame = loc.frame

    truth_aligned, tstats = None, None
    if truth is not None:
        tdf = truth if isinstance(truth, pd.DataFrame) else load_truth(truth)
        truth_aligned, tstats = match_truth(m, tdf)
        if tstats["matched"] == 0:
            ex = ", ".join(tdf["base"].head(3))
            mine = ", ".join(Path(str(p)).name for p in m["source_path"].head(3))
            raise UserError(f"{truth}: none of the {len(m)} photos of {full.root} (split {split}) matched a file "
                            f"name in the truth CSV (truth has e.g. {ex}; dataset has e.g. {mine}); check that the "
                            f"truth CSV belongs to this dataset")
        if tstats["unmatched"]:
            print(f"campusgps: warning: {tstats['unmatched']} of {len(m)} photos have no row in {truth}"
                  f"{' (' + str(tstats['ambiguous']) + ' ambiguous base names)' if tstats['ambiguous'] else ''}; "
                  f"vs_truth uses the {tstats['matched']} matched", file=sys.stderr)

    pred, seconds = prediction if prediction is not None else predict_dataset(loc, ds, batch_size, progress)

    label_lat, label_lon = m["lat"].to_numpy(float), m["lon"].to_numpy(float)
    err = haversine_m(label_lat, label_lon, pred.lat, pred.lon)
    files = [s if s else f for s, f in zip(m["source_path"].astype(str), m["file"].astype(str))]
    table = pd.DataFrame({"file": files, "lat": pred.lat, "lon": pred.lon, "radius_m": pred.radius_m,
                          "label_lat": label_lat, "label_lon": label_lon, "error_m": err})
    has_truth = truth_aligned is not None
    if has_truth:
        tl, tn = truth_aligned["true_lat"].to_numpy(float), truth_aligned["true_lon"].to_numpy(float)
        table["true_lat"], table["true_lon"] = tl, tn
        table["error_vs_truth_m"] = haversine_m(tl, tn, pred.lat, pred.lon)
    table["id"] = m["id"].astype(str).to_numpy()
    table["dataset_file"] = m["file"].astype(str).to_numpy()

    # condition / area tags: the manifest's own, else the truth CSV's
    def tag(name):
        vals = m[name].astype(str).replace({"nan": "", "<NA>": "", "None": ""}) if name in m.columns else None
        if (vals is None or (vals == "").all()) and has_truth and name in truth_aligned.columns:
            vals = truth_aligned[name].fillna("").astype(str)
        return None if vals is None or (vals == "").all() else vals.to_numpy()

    cond = tag("condition")
    table["condition"] = cond if cond is not None else ""
    label_en = _en(frame, label_lat, label_lon)
    pred_en = _en(frame, pred.lat, pred.lon)
    truth_en = _en(frame, table["true_lat"], table["true_lon"]) if has_truth else None
    refs = find_references(loc, full, reference)
    pos_en = truth_en if has_truth else label_en
    area_tag = tag("area")
    if area_tag is None:
        area_tag = tag("zone")
    cells = None
    if area_tag is not None:
        table["area"] = area_tag
        area_kind = "area tag"
    else:
        bounds = np.concatenate([pos_en, refs.en] if refs is not None else [pos_en])
        names, cells = area_labels(pos_en, bounds, area_grid)
        table["area"] = names
        area_kind = f"{area_grid}x{area_grid} grid over the campus bounding box (local frame, N up)"
    for k, arr in (("label", label_en), ("pred", pred_en)) + ((("truth", truth_en),) if has_truth else ()):
        table[f"{k}_east_m"], table[f"{k}_north_m"] = arr[:, 0], arr[:, 1]
    table["flags"] = [";".join(f) for f in pred.flags]
    table["read_error"] = [e or "" for e in pred.errors]
    table["top_ref_id"] = [str(nb[0].get("id", "")) if nb else "" for nb in pred.neighbors]

    # --- metrics --------------------------------------------------------------------------------
    center_en, bsource = _baseline(frame, refs, label_en)
    c_lat, c_lon = frame.to_wgs84(center_en[0], center_en[1])
    base_err = haversine_m(label_lat, label_lon, c_lat, c_lon)  # same distance as the model's errors
    metrics = summarize(err)
    metrics["baseline_mean_predictor_median_m"] = summarize(base_err)["median_m"]
    metrics["radius_coverage"] = radius_coverage(err, pred.radius_m)
    metrics["seconds_per_image"] = round(seconds / max(1, len(ds)), 5)
    metrics["baseline"] = {"source": bsource, "center_lat": float(c_lat), "center_lon": float(c_lon),
                           "vs_labels": summarize(base_err)}
    extra = {}
    if has_truth:
        terr = table["error_vs_truth_m"].to_numpy(float)
        tbase = haversine_m(tl, tn, c_lat, c_lon)
        vs = summarize(terr)
        vs["baseline_mean_predictor_median_m"] = summarize(tbase)["median_m"]
        vs["radius_coverage"] = radius_coverage(terr, pred.radius_m)
        vs["label_noise"] = summarize(haversine_m(label_lat, label_lon, table["true_lat"], table["true_lon"]))
        vs["matched"], vs["unmatched"] = tstats["matched"], tstats["unmatched"]
        metrics["vs_truth"] = vs
        metrics["baseline"]["vs_truth"] = summarize(tbase)
        extra["vs_truth"] = terr
    if cond is not None:
        metrics["by_condition"] = grouped(err, table["condition"].to_numpy(), pred.radius_m, extra)
    metrics["by_area"] = grouped(err, table["area"].to_numpy(), pred.radius_m, extra)
    metrics["area_kind"] = area_kind
    if cells:
        for k, b in cells.items():
            if k in metrics["by_area"]:
                metrics["by_area"][k]["bounds_m"] = b  # [east_min, east_max, north_min, north_max]
    metrics.update({
        "split": split, "dataset": str(full.root), "method": getattr(loc, "method", "?"),
        "n_images": int(len(ds)), "n_unreadable": int(sum(e is not None for e in pred.errors)),
        "seconds_total": round(seconds, 3),
    })
    if robustness and robustness_n > 0:
        from campusgps.evaluation.robustness import run_robustness

        if has_truth:
            rl, rn, ce, against = table["true_lat"].to_numpy(float), table["true_lon"].to_numpy(float), \
                table["error_vs_truth_m"].to_numpy(float), "truth"
        else:
            rl, rn, ce, against = label_lat, label_lon, err, "labels"
        rob = run_robustness(loc, ds.paths(), rl, rn, ce, max_images=robustness_n, seed=seed,
                             batch_size=batch_size)
        rob["against"] = against
        metrics["robustness"] = rob
    return EvalResult(metrics=metrics, table=table, neighbors=pred.neighbors, refs=refs, localizer=loc,
                      dataset=ds, has_truth=has_truth)


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return None if not math.isfinite(float(o)) else float(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)


def prediction_csv_frame(res: EvalResult) -> pd.DataFrame:
    cols = PREDICTION_COLUMNS + (TRUTH_COLUMNS if res.has_truth else []) + \
        ["id", "condition", "area", "flags", "top_ref_id", "read_error"]
    return res.table[cols]


def evaluate(localizer, dataset, split: str = "test", truth=None, out_dir=None, robustness: bool = True, *,
             reference=None, robustness_n: int = 100, worst: int = 12, batch_size: int = 32, seed: int = 0,
             progress: bool | None = None, model_name: str | None = None, report: bool = True) -> dict:
    """Evaluate ``localizer`` (instance or bundle path) on ``dataset`` (instance or path) -> metrics dict.

    With ``out_dir``: writes ``metrics.json``, ``predictions.csv``, ``report.html`` and ``run.json``.
    """
    res = run_evaluation(localizer, dataset, split, truth, reference, batch_size=batch_size, robustness=robustness,
                         robustness_n=robustness_n, seed=seed, progress=progress)
    if model_name is None:
        model_name = Path(str(localizer)).name if not hasattr(localizer, "predict") else res.localizer.method
    res.metrics["model"] = model_name
    if out_dir is not None:
        write_outputs(res, Path(out_dir), model_name=model_name, worst=worst, report=report,
                      run_info={"model": str(localizer) if not hasattr(localizer, "predict") else model_name,
                                "dataset": str(res.metrics["dataset"]), "split": split,
                                "truth": str(truth) if truth is not None and not isinstance(truth, pd.DataFrame)
                                else None, "robustness_n": robustness_n if robustness else 0})
    return res.metrics


def write_outputs(res: EvalResult, out: Path, model_name: str, worst: int = 12, report: bool = True,
                  run_info: dict | None = None) -> None:
    from campusgps.configs import run_record

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", res.metrics)
    tmp = out / "predictions.csv.tmp"
    prediction_csv_frame(res).to_csv(tmp, index=False, float_format="%.8g")
    tmp.replace(out / "predictions.csv")
    if report:
        from campusgps.evaluation.report import render_report

        html = render_report(res, model_name=model_name, worst=worst)
        (out / "report.html.tmp").write_text(html, encoding="utf-8")
        (out / "report.html.tmp").replace(out / "report.html")
    write_json(out / "run.json", run_record(run_info or {}, command="evaluate"))


def load_evaluation(out_dir) -> EvalResult:
    """An EvalResult rebuilt from a finished evaluate folder (metrics.json + predictions.csv), enough for
    compare; it holds no localizer, neighbours or references."""
    out = Path(out_dir)
    try:
        metrics = json.loads((out / "metrics.json").read_text())
        table = pd.read_csv(out / "predictions.csv", keep_default_na=False, na_values=[""])
    except Exception as e:
        raise UserError(f"{out}: not a finished evaluation ({e}); re-run `campusgps evaluate ... --out {out}`")
    for c in ("error_m", "radius_m", "label_lat", "label_lon", *TRUTH_COLUMNS):
        if c in table.columns:
            table[c] = pd.to_numeric(table[c], errors="coerce")
    return EvalResult(metrics=metrics, table=table, neighbors=[], refs=None, localizer=None, dataset=None,
                      has_truth="vs_truth" in metrics)
