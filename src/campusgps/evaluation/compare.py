"""Several models on the same photos in one run: compare.csv (one row per model) and compare.html.

The mean-position baseline is added as its own row (and a dashed curve) so every model is read against it.
Errors are against the true positions when a truth CSV is given (columns ``truth_*``), and against labels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from campusgps.errors import UserError
from campusgps.evaluation.confidence_section import COMPARE_FIELDS, compare_fields
from campusgps.evaluation.failures import compare_fields as failure_fields, compare_table as failure_table
from campusgps.evaluation.metrics import SUMMARY_KEYS, format_difference, paired_difference, radius_coverage, summarize

STAT_KEYS = [k for k in SUMMARY_KEYS if k != "n_failed"]
# every model after the first against the first, on the same photos (paired bootstrap, 90 % interval):
# compare.csv columns vs_first_<stat>_{diff,lo,hi}; <stat> median (m) and acc20 (share within 20 m)
VS_FIRST = (("median", "median"), ("acc20", "acc20"))
VS_FIRST_FIELDS = [f"vs_first_{k}_{x}" for k, _ in VS_FIRST for x in ("diff", "lo", "hi")]


def vs_first(first_errors, errors) -> dict:
    """``VS_FIRST_FIELDS`` of one model against the first (None for the first model itself)."""
    if first_errors is None:
        return {k: None for k in VS_FIRST_FIELDS}
    out = {}
    for key, stat in VS_FIRST:
        d = paired_difference(first_errors, errors, stat)
        out.update({f"vs_first_{key}_diff": d["diff"], f"vs_first_{key}_lo": d["lo"], f"vs_first_{key}_hi": d["hi"]})
    return out


def _unique_names(models) -> list[str]:
    names = [Path(str(m)).name if not hasattr(m, "predict") else getattr(m, "method", "model") for m in models]
    for i, n in enumerate(names):
        if names.count(n) > 1 and not hasattr(models[i], "predict"):
            names[i] = str(Path(str(models[i])).parent.name + "/" + n)
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} #{seen[n]}")
    return out


def compare(models: list, dataset, out_dir, split: str = "test", truth=None, reference=None,
            names: list[str] | None = None, batch_size: int = 32) -> pd.DataFrame:
    """Evaluate each model (paths or Localizers) on the same dataset; write compare.csv/html; return the table."""
    from campusgps.evaluation.evaluate import run_evaluation
    from campusgps.evaluation.inputs import load_truth, open_dataset

    if not models:
        raise UserError("give at least one MODEL to compare")
    names = names or _unique_names(models)
    ds = open_dataset(dataset)
    tdf = load_truth(truth) if truth is not None and not isinstance(truth, pd.DataFrame) else truth
    results = {}
    for name, model in zip(names, models):
        results[name] = run_evaluation(model, ds, split, tdf, reference, batch_size=batch_size, robustness=False)
    return write_compare(results, out_dir)


def _row(name: str, method: str, errors: np.ndarray, truth_errors: np.ndarray | None, radius, seconds) -> dict:
    r = {"model": name, "method": method}
    s = summarize(errors)
    r.update({k: s[k] for k in STAT_KEYS})
    if truth_errors is not None:
        t = summarize(truth_errors)
        r.update({f"truth_{k}": t[k] for k in STAT_KEYS if k != "n"})
    if radius is not None:
        cov = radius_coverage(truth_errors if truth_errors is not None else errors, radius)
        r["radius_coverage"], r["median_radius_m"] = cov["coverage"], cov["median_radius_m"]
    else:
        r["radius_coverage"], r["median_radius_m"] = None, None
    r["seconds_per_image"] = seconds
    return r


def write_compare(results: dict, out_dir) -> pd.DataFrame:
    """``results``: name -> EvalResult (from run_evaluation). Writes compare.csv and compare.html."""
    from campusgps.configs import run_record
    from campusgps.jsonio import write_json, write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, series_t, series_l, first_err = [], {}, {}, None
    has_truth = all(r.has_truth for r in results.values())
    first = next(iter(results.values()))
    for name, res in results.items():
        t = res.table
        te = t["error_vs_truth_m"].to_numpy(float) if has_truth else None
        row = _row(name, res.metrics.get("method", "?"), t["error_m"].to_numpy(float), te,
                   t["radius_m"].to_numpy(float), res.metrics.get("seconds_per_image"))
        row["baseline_mean_predictor_median_m"] = (res.metrics["vs_truth"]["baseline_mean_predictor_median_m"]
                                                   if has_truth else res.metrics["baseline_mean_predictor_median_m"])
        row.update(compare_fields(res.metrics, has_truth))
        row.update(failure_fields(res.metrics))
        err = te if has_truth else t["error_m"].to_numpy(float)
        row.update(vs_first(first_err, err))
        first_err = err if first_err is None else first_err
        rows.append(row)
        series_l[name] = t["error_m"].to_numpy(float)
        if has_truth:
            series_t[name] = te
    # the mean-position baseline as a row of its own (from the first model's training positions)
    fm = first.metrics
    c_lat, c_lon = fm["baseline"]["center_lat"], fm["baseline"]["center_lon"]
    from campusgps.geo import haversine_m

    t0 = first.table
    bl = haversine_m(t0["label_lat"].to_numpy(float), t0["label_lon"].to_numpy(float), c_lat, c_lon)
    bt = haversine_m(t0["true_lat"].to_numpy(float), t0["true_lon"].to_numpy(float), c_lat, c_lon) if has_truth else None
    brow = _row("mean-position baseline", "baseline", bl, bt, None, None)
    brow["baseline_mean_predictor_median_m"] = None
    brow.update({k: None for k in COMPARE_FIELDS})
    brow.update({k: None for k in failure_fields({})})
    brow.update(vs_first(None, None))
    rows.append(brow)
    series_l[brow["model"]] = bl
    if has_truth:
        series_t[brow["model"]] = bt
    df = pd.DataFrame(rows)
    tmp = out / "compare.csv.tmp"
    df.to_csv(tmp, index=False)
    tmp.replace(out / "compare.csv")
    html = render_compare(df, series_t if has_truth else None, series_l, results, fm["baseline"]["source"])
    write_text_atomic(out / "compare.html", html)
    write_json(out / "run.json", run_record({"models": list(results), "dataset": fm.get("dataset"),
                                             "split": fm.get("split")}, command="compare"))
    return df


def render_compare(df: pd.DataFrame, series_t, series_l, results: dict, baseline_source: str) -> str:
    from campusgps.evaluation import plots
    from campusgps.evaluation.report import e, figure, fmt_m, fmt_num, fmt_pct, page, table_html

    ht = series_t is not None
    p = "truth_" if ht else ""
    best = df[df["method"] != "baseline"][f"{p}median_m"].astype(float)
    best_name = df.loc[best.idxmin(), "model"] if best.notna().any() else None
    rows = []
    for r in df.to_dict("records"):
        name = e(str(r["model"])) if r["model"] != best_name else f"<b>{e(str(r['model']))}</b> ★"
        rows.append([name, e(str(r["method"])), str(r["n"]), fmt_m(r[f"{p}median_m"]),
                     fmt_m(r[f"{p}p90_m"]), fmt_pct(r[f"{p}acc_5m"]), fmt_pct(r[f"{p}acc_10m"]),
                     fmt_pct(r[f"{p}acc_20m"]), fmt_pct(r[f"{p}acc_50m"])]
                    + ([fmt_m(r["median_m"])] if ht else [])
                    + [fmt_pct(r["radius_coverage"]), fmt_m(r["median_radius_m"]),
                       fmt_num(r.get("confidence_auc")), fmt_pct(r.get("top3_recall")),
                       fmt_num(r["seconds_per_image"], 3)])
    hdr = ["model", "method", "n", "median", "P90", "≤5 m", "≤10 m", "≤20 m", "≤50 m"] + \
        (["median vs labels"] if ht else []) + ["in radius", "median radius", "confidence AUC", "top-3 ≤20 m",
                                                "s / photo"]
    body = [f"<h2>Results {'vs true positions' if ht else 'vs labels'}</h2>" + table_html(hdr, rows, left_cols=2) +
            f"<p class=\"note\">★ lowest median error. ≤X m: share of photos within X m. In radius: share of photos whose "
            f"{'true position' if ht else 'label'} lies inside the predicted radius_m (mean, max and more in compare.csv). "
            f"Confidence AUC: how well the model's confidence ranks answers within 20 m above the others (0.5 is a "
            f"coin, – when the model gives no confidence). Top-3 ≤20 m: the answer or one of its two alternatives "
            f"within 20 m. "
            f"Baseline: {e(baseline_source)}. "
            f"{'Errors vs labels include the GPS noise of the labels themselves.' if ht else ''}</p>"]
    styles = {"mean-position baseline": {"linestyle": "--", "color": "#7f7f7f"}}
    figs = []
    if ht:
        figs.append(figure(plots.cdf_plot(series_t, "Error vs true position", styles), "CDF vs truth",
                           "Fraction of photos within x metres of where they were really taken."))
    figs.append(figure(plots.cdf_plot(series_l, "Error vs labels (EXIF GPS)", styles), "CDF vs labels",
                       "The same, measured against the dataset's labels."))
    body.append("<h2>Error curves</h2><div class=\"figs\">" + "".join(figs) + "</div>")
    # by condition, median per model
    conds = {}
    for name, res in results.items():
        bc = res.metrics.get("by_condition") or {}
        for c, d in bc.items():
            conds.setdefault(c, {})[name] = (d.get("vs_truth") or d) if ht else d
    if conds:
        crow = [[e(c), *[fmt_m(conds[c].get(n, {}).get("median_m")) for n in results]] for c in sorted(conds)]
        body.append("<h2>Median error by condition</h2>" + table_html(["condition", *map(e, results)], crow))
    body.append(failure_table(list(results), [r.metrics for r in results.values()]))
    body.append(_vs_first_table(df, ht))
    fm = next(iter(results.values())).metrics
    sub = (f"{len(results)} model(s) · dataset <code>{e(str(fm.get('dataset')))}</code> · split "
           f"<code>{e(str(fm.get('split')))}</code> · {fm.get('n_images')} photos")
    return page("campusgps comparison", "".join(body), sub)


def _vs_first_table(df: pd.DataFrame, truth: bool) -> str:
    """Each model against the first: is the difference more than the luck of which photos were tested?"""
    from campusgps.evaluation.report import e, table_html

    models = df[df["method"] != "baseline"].to_dict("records")
    if len(models) < 2:
        return ""

    def cell(r, key, scale, unit, nd):
        d, lo, hi = (r[f"vs_first_{key}_{x}"] for x in ("diff", "lo", "hi"))
        if d is None or not np.isfinite(d):
            return "–"
        return format_difference({"diff": d, "lo": lo, "hi": hi}, nd, scale, unit)

    def verdict(r):
        lo, hi = r["vs_first_median_lo"], r["vs_first_median_hi"]
        if lo is None or not np.isfinite(lo):
            return "–"
        return "lower median" if hi < 0 else "higher median" if lo > 0 else "not told apart from noise"

    rows = [[e(str(r["model"])), cell(r, "median", 1, " m", 2), cell(r, "acc20", 100, " pts", 1), verdict(r)]
            for r in models[1:]]
    first = e(str(models[0]["model"]))
    return (f"<h2>Differences to {first}</h2>" +
            table_html(["model", "median error", "share within 20 m", "the medians"], rows, left_cols=1) +
            f"<p class=\"note\">Each model minus <b>{first}</b> on the same photos "
            f"({'errors vs true positions' if truth else 'errors vs labels'}), with a 90 % interval from a paired "
            f"bootstrap over the photos (2,000 resamples). When the interval holds 0, this photo set cannot tell the "
            f"two apart: test on more photos before choosing. Columns vs_first_* in compare.csv.</p>")
