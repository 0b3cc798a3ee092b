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
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from campusgps.answers import CONFIDENCE_COLUMNS, confidence_columns
from campusgps.errors import UserError
from campusgps.evaluation.inputs import align_truth, load_truth, open_dataset, open_localizer
from campusgps.evaluation.metrics import grouped, median_interval, radius_coverage, summarize
from campusgps.evaluation.references import References, baseline_center, find_references, reference_labels
from campusgps.jsonio import write_json, write_text_atomic

PREDICTION_COLUMNS = ["file", "lat", "lon", "radius_m", "label_lat", "label_lon", "error_m"]
TRUTH_COLUMNS = ["true_lat", "true_lon", "error_vs_truth_m"]
COMPASS_3x3 = [["NW", "N", "NE"], ["W", "C", "E"], ["SW", "S", "SE"]]


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


def _evaluated_split(full, split: str):
    ds = full.subset(split)
    if len(ds) == 0:
        counts = full.summary()["splits"]
        hint = ("use --split all for a separately ingested query session" if split != "all" else
                "ingest some photos first")
        raise UserError(f"{full.root}: no samples in split {split!r} (splits: {counts}); {hint}, or run "
                        f"`campusgps split {full.root}`")
    return ds


def _prediction_table(m: pd.DataFrame, pred, truth_aligned: pd.DataFrame | None) -> pd.DataFrame:
    """One row per photo: predictions.csv's columns (errors vs labels and, with truth, vs truth), ids."""
    from campusgps.geo import haversine_m

    label_lat, label_lon = m["lat"].to_numpy(float), m["lon"].to_numpy(float)
    files = [s if s else f for s, f in zip(m["source_path"].astype(str), m["file"].astype(str))]
    table = pd.DataFrame({"file": files, "lat": pred.lat, "lon": pred.lon, "radius_m": pred.radius_m,
                          "label_lat": label_lat, "label_lon": label_lon,
                          "error_m": haversine_m(label_lat, label_lon, pred.lat, pred.lon)})
    if truth_aligned is not None:
        tl, tn = truth_aligned["true_lat"].to_numpy(float), truth_aligned["true_lon"].to_numpy(float)
        table["true_lat"], table["true_lon"] = tl, tn
        table["error_vs_truth_m"] = haversine_m(tl, tn, pred.lat, pred.lon)
    for c, v in confidence_columns(pred, len(table)).items():
        table[c] = v
    table["id"] = m["id"].astype(str).to_numpy()
    table["dataset_file"] = m["file"].astype(str).to_numpy()
    return table


def _tag(m: pd.DataFrame, truth_aligned: pd.DataFrame | None, name: str):
    """A condition/area tag per photo: the manifest's own, else the truth CSV's; None when nobody has one."""
    vals = m[name].astype(str).replace({"nan": "", "<NA>": "", "None": ""}) if name in m.columns else None
    if (vals is None or (vals == "").all()) and truth_aligned is not None and name in truth_aligned.columns:
        vals = truth_aligned[name].fillna("").astype(str)
    return None if vals is None or (vals == "").all() else vals.to_numpy()


def _add_places(table: pd.DataFrame, m, truth_aligned, frame, refs: References | None, area_grid: int) -> dict:
    """Add condition, area, local east/north and per-photo flag columns; returns the area description."""
    cond = _tag(m, truth_aligned, "condition")
    table["condition"] = cond if cond is not None else ""
    label_en = _en(frame, table["label_lat"], table["label_lon"])
    pred_en = _en(frame, table["lat"], table["lon"])
    truth_en = _en(frame, table["true_lat"], table["true_lon"]) if truth_aligned is not None else None
    pos_en = truth_en if truth_en is not None else label_en
    area_tag = _tag(m, truth_aligned, "area")
    if area_tag is None:
        area_tag = _tag(m, truth_aligned, "zone")
    cells = None
    if area_tag is not None:
        table["area"] = area_tag
        area_kind = "area tag"
    else:
        bounds = np.concatenate([pos_en, refs.en] if refs is not None else [pos_en])
        names, cells = area_labels(pos_en, bounds, area_grid)
        table["area"] = names
        area_kind = f"{area_grid}x{area_grid} grid over the campus bounding box (local frame, N up)"
    for k, arr in (("label", label_en), ("pred", pred_en)) + ((("truth", truth_en),) if truth_en is not None else ()):
        table[f"{k}_east_m"], table[f"{k}_north_m"] = arr[:, 0], arr[:, 1]
    return {"has_condition": cond is not None, "label_en": label_en, "area_kind": area_kind, "cells": cells}


def _metrics(table: pd.DataFrame, pred, frame, refs, places: dict, tstats: dict | None, seconds: float) -> dict:
    """metrics.json's numbers (before the run description and robustness are added)."""
    from campusgps.geo import haversine_m

    err = table["error_m"].to_numpy(float)
    label_lat, label_lon = table["label_lat"].to_numpy(float), table["label_lon"].to_numpy(float)
    center_en, bsource = baseline_center(refs, places["label_en"])
    c_lat, c_lon = frame.to_wgs84(center_en[0], center_en[1])
    base_err = haversine_m(label_lat, label_lon, c_lat, c_lon)  # same distance as the model's errors
    metrics = summarize(err)
    metrics["median_interval"] = median_interval(err)
    metrics["baseline_mean_predictor_median_m"] = summarize(base_err)["median_m"]
    metrics["radius_coverage"] = radius_coverage(err, pred.radius_m)
    metrics["seconds_per_image"] = round(seconds / max(1, len(table)), 5)
    metrics["baseline"] = {"source": bsource, "center_lat": float(c_lat), "center_lon": float(c_lon),
                           "vs_labels": summarize(base_err)}
    extra = {}
    if tstats is not None:
        tl, tn = table["true_lat"].to_numpy(float), table["true_lon"].to_numpy(float)
        terr = table["error_vs_truth_m"].to_numpy(float)
        tbase = haversine_m(tl, tn, c_lat, c_lon)
        vs = summarize(terr)
        vs["median_interval"] = median_interval(terr)
        vs["baseline_mean_predictor_median_m"] = summarize(tbase)["median_m"]
        vs["radius_coverage"] = radius_coverage(terr, pred.radius_m)
        vs["label_noise"] = summarize(haversine_m(label_lat, label_lon, table["true_lat"], table["true_lon"]))
        vs["matched"], vs["unmatched"] = tstats["matched"], tstats["unmatched"]
        metrics["vs_truth"] = vs
        metrics["baseline"]["vs_truth"] = summarize(tbase)
        extra["vs_truth"] = terr
    if places["has_condition"]:
        metrics["by_condition"] = grouped(err, table["condition"].to_numpy(), pred.radius_m, extra)
    _confidence_blocks(metrics, table, pred, frame, places["label_en"], tstats is not None)
    metrics["by_area"] = grouped(err, table["area"].to_numpy(), pred.radius_m, extra)
    metrics["area_kind"] = places["area_kind"]
    for k, b in (places["cells"] or {}).items():
        if k in metrics["by_area"]:
            metrics["by_area"][k]["bounds_m"] = b  # [east_min, east_max, north_min, north_max]
    return metrics


def _failures(metrics: dict, table: pd.DataFrame, neighbors, refs: References | None, has_truth: bool,
              has_condition: bool) -> None:
    """Why each wrong answer is wrong (evaluation/failures.py): the ``failure`` column and
    metrics["failures"], against the truth when known; nothing for models that report no neighbours."""
    from campusgps.evaluation.failures import failure_causes, failure_summary

    if not any(neighbors):
        table["failure"] = ""
        return
    cols = ("truth_east_m", "truth_north_m") if has_truth else ("label_east_m", "label_north_m")
    err = table["error_vs_truth_m" if has_truth else "error_m"].to_numpy(float)
    causes = failure_causes(table[list(cols)].to_numpy(float), err, neighbors,
                            refs.en if refs is not None else None)
    table["failure"] = causes
    cond = table["condition"].to_numpy() if has_condition else None
    metrics["failures"] = failure_summary(causes, err, cond, "truth" if has_truth else "labels",
                                          confidence=table["confidence"].to_numpy(float))


def _out_of_fold_baseline(metrics: dict, table: pd.DataFrame, frame, info: dict) -> None:
    """Replace the baseline by the out-of-fold one: each photo against the mean training position of the
    refitted model that scored it."""
    from campusgps.geo import haversine_m

    c_en = info.pop("baseline_en")
    c_lat, c_lon = frame.to_wgs84(c_en[:, 0], c_en[:, 1])
    base = haversine_m(table["label_lat"].to_numpy(float), table["label_lon"].to_numpy(float), c_lat, c_lon)
    metrics["baseline_mean_predictor_median_m"] = summarize(base)["median_m"]
    metrics["baseline"] = {"source": f"out of fold: mean training position of each of the {info['folds']} refits",
                           "center_lat": float(np.mean(c_lat)), "center_lon": float(np.mean(c_lon)),
                           "vs_labels": summarize(base)}
    if "vs_truth" in metrics:
        tb = haversine_m(table["true_lat"].to_numpy(float), table["true_lon"].to_numpy(float), c_lat, c_lon)
        metrics["vs_truth"]["baseline_mean_predictor_median_m"] = summarize(tb)["median_m"]
        metrics["baseline"]["vs_truth"] = summarize(tb)
    metrics["cross_fit"] = info


def _confidence_blocks(metrics: dict, table: pd.DataFrame, pred, frame, label_en: np.ndarray,
                       has_truth: bool) -> None:
    """metrics["confidence"] (vs labels) and metrics["vs_truth"]["confidence"]: AUC, reliability, ECE,
    risk-coverage, radius coverage by confidence third, top-3 recall (evaluation.confidence). A model without
    confidence (all NaN) gets ``available: false`` and nulls."""
    from campusgps.evaluation.confidence import alternatives_errors, confidence_report

    conf = table["confidence"].to_numpy(float)
    available = bool(np.isfinite(conf).any())
    radius = table["radius_m"].to_numpy(float)
    against = [("labels", metrics, table["error_m"].to_numpy(float), label_en)]
    if has_truth:
        truth_en = table[["truth_east_m", "truth_north_m"]].to_numpy(float)
        against.append(("truth", metrics["vs_truth"], table["error_vs_truth_m"].to_numpy(float), truth_en))
    for name, where, err, pos_en in against:
        alt_err = alternatives_errors(pred.alternatives, pos_en, to_en=frame.to_local)
        block = confidence_report(err, conf, radius, alt_err)
        where["confidence"] = {"available": available, "against": name, **block}


def run_evaluation(model, dataset, split: str = "test", truth=None, reference=None, *, batch_size: int = 32,
                   robustness: bool = True, robustness_n: int = 100, area_grid: int = 3, seed: int = 0,
                   progress: bool | None = None, prediction=None, cross_fit: int = 0) -> EvalResult:
    """Everything evaluate() computes, without writing files. ``prediction``: reuse a (Prediction, seconds).

    ``cross_fit`` K >= 2: score every photo of ``split`` out of fold (evaluation/crossfit.py), the baseline too.
    """
    loc = open_localizer(model)
    full = open_dataset(dataset)
    ds = _evaluated_split(full, split)
    m = ds.manifest
    is_path = truth is not None and not isinstance(truth, pd.DataFrame)
    tdf = load_truth(truth) if is_path else truth  # read once: the evaluated photos' and the references' truth
    truth_aligned, tstats = ((None, None) if tdf is None else
                             align_truth(tdf, m, f"{full.root} (split {split})", truth if is_path else "the truth CSV"))
    cf_info = None
    if cross_fit:
        from campusgps.evaluation.crossfit import cross_fit_split

        if cross_fit < 2:
            raise UserError(f"--cross-fit {cross_fit}: use at least 2 folds (or leave it out)")
        pred, seconds, cf_info = cross_fit_split(loc, full, split, cross_fit, seed, batch_size,
                                                 quiet=progress is False)
        robustness = False  # perturbed copies would be scored by the full model, not out of fold
    else:
        pred, seconds = prediction if prediction is not None else predict_dataset(loc, ds, batch_size, progress)
    table = _prediction_table(m, pred, truth_aligned)
    refs = find_references(loc, full, reference)
    places = _add_places(table, m, truth_aligned, loc.frame, refs, area_grid)
    table["flags"] = [";".join(f) for f in pred.flags]
    table["read_error"] = [e or "" for e in pred.errors]
    table["top_ref_id"] = [str(nb[0].get("id", "")) if nb else "" for nb in pred.neighbors]
    metrics = _metrics(table, pred, loc.frame, refs, places, tstats, seconds)
    _failures(metrics, table, pred.neighbors, refs, truth_aligned is not None, places["has_condition"])
    rl = reference_labels(refs, tdf)
    if rl is not None:
        metrics["reference_labels"] = rl
    if cf_info is not None:
        _out_of_fold_baseline(metrics, table, loc.frame, cf_info)
    metrics.update({
        "split": split, "dataset": str(full.root), "method": getattr(loc, "method", "?"),
        "n_images": int(len(ds)), "n_unreadable": int(sum(e is not None for e in pred.errors)),
        "seconds_total": round(seconds, 3),
    })
    has_truth = truth_aligned is not None
    if robustness and robustness_n > 0:
        from campusgps.evaluation.robustness import run_robustness

        against = "truth" if has_truth else "labels"
        lat_col, lon_col, err_col = ("true_lat", "true_lon", "error_vs_truth_m") if has_truth else \
            ("label_lat", "label_lon", "error_m")
        rob = run_robustness(loc, ds.paths(), table[lat_col].to_numpy(float), table[lon_col].to_numpy(float),
                             table[err_col].to_numpy(float), max_images=robustness_n, seed=seed,
                             batch_size=batch_size)
        rob["against"] = against
        metrics["robustness"] = rob
    return EvalResult(metrics=metrics, table=table, neighbors=pred.neighbors, refs=refs, localizer=loc,
                      dataset=ds, has_truth=has_truth)


def prediction_csv_frame(res: EvalResult) -> pd.DataFrame:
    cols = PREDICTION_COLUMNS + (TRUTH_COLUMNS if res.has_truth else []) + CONFIDENCE_COLUMNS + \
        ["id", "condition", "area", "flags", "failure", "top_ref_id", "read_error"]
    return res.table[cols]


def evaluate(localizer, dataset, split: str = "test", truth=None, out_dir=None, robustness: bool = True, *,
             reference=None, robustness_n: int = 100, worst: int = 12, batch_size: int = 32, seed: int = 0,
             progress: bool | None = None, model_name: str | None = None, report: bool = True,
             cross_fit: int = 0) -> dict:
    """Evaluate ``localizer`` (instance or bundle path) on ``dataset`` (instance or path) -> metrics dict.

    With ``out_dir``: writes ``metrics.json``, ``predictions.csv``, ``report.html`` and ``run.json``.
    ``cross_fit`` K >= 2: out-of-fold scores (the method refitted K times without each photo's location group).
    """
    res = run_evaluation(localizer, dataset, split, truth, reference, batch_size=batch_size, robustness=robustness,
                         robustness_n=robustness_n, seed=seed, progress=progress, cross_fit=cross_fit)
    if model_name is None:
        model_name = Path(str(localizer)).name if not hasattr(localizer, "predict") else res.localizer.method
    res.metrics["model"] = model_name
    if out_dir is not None:
        write_outputs(res, Path(out_dir), model_name=model_name, worst=worst, report=report,
                      run_info={"model": str(localizer) if not hasattr(localizer, "predict") else model_name,
                                "dataset": str(res.metrics["dataset"]), "split": split,
                                "truth": str(truth) if truth is not None and not isinstance(truth, pd.DataFrame)
                                else None, "robustness_n": robustness_n if robustness and not cross_fit else 0,
                                "cross_fit": cross_fit})
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

        write_text_atomic(out / "report.html", render_report(res, model_name=model_name, worst=worst))
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
    for c in ("error_m", "radius_m", "label_lat", "label_lon", *TRUTH_COLUMNS, *CONFIDENCE_COLUMNS):
        if c in table.columns:
            table[c] = pd.to_numeric(table[c], errors="coerce")
    return EvalResult(metrics=metrics, table=table, neighbors=[], refs=None, localizer=None, dataset=None,
                      has_truth="vs_truth" in metrics)
