"""Active-learning audit: the photos a model disagrees with most, laid out for a person to decide on.

Every photo of the dataset is located and ranked by the distance between its label and the prediction.
Training photos are located *out of fold* (``cross_fit`` folds: the method is refitted without the fold,
with the same config) because a model that saw a photo, e.g. a retrieval index that contains it, would
simply agree with its label and hide a wrong one. Large disagreements are either wrong labels (fix: relabel
or drop) or places the model has too few photos of (fix: move_to_train, or go take more photos).

Outputs ``audit.csv`` (columns fixed in docs/ARCHITECTURE.md, ``decision`` left empty for a person, plus
``split`` and ``predicted_by``) and ``audit.html``. ``campusgps split DATASET --apply-audit audit.csv`` applies
the decisions.
"""
from __future__ import annotations

import sys
import time
from types import SimpleNamespace
from pathlib import Path

import numpy as np
import pandas as pd

from campusgps.errors import UserError
from campusgps.ingest.split import AUDIT_COLUMNS


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"audit: {msg}", file=sys.stderr, flush=True)


def cross_fit_predictions(localizer, dataset, rows: np.ndarray, folds: int, seed: int = 0, batch_size: int = 32,
                          quiet: bool = False):
    """Out-of-fold predictions for ``rows`` (indices of training rows of ``dataset``).

    For each fold a fresh localizer of the same class and config is fitted on the dataset with that fold's
    rows taken out of the train split. Returns a Prediction-like dict of arrays, or raises UserError.
    """
    from campusgps.dataset import Dataset

    rng = np.random.default_rng(seed)
    assign = rng.permutation(len(rows)) % folds
    n = len(dataset)
    out = {"lat": np.full(n, np.nan), "lon": np.full(n, np.nan), "radius_m": np.full(n, np.nan),
           "neighbors": [[] for _ in range(n)], "errors": [None] * n}
    paths = dataset.paths()
    klass = type(localizer)
    for k in range(folds):
        held = rows[assign == k]
        if len(held) == 0:
            continue
        m = dataset.manifest.copy()
        m.loc[m.index[held], "split"] = "test"
        fold_ds = Dataset(root=dataset.root, manifest=m, frame=dataset.frame)
        t0 = time.perf_counter()
        _say(f"fold {k + 1}/{folds}: refitting {localizer.method} without {len(held)} training photos", quiet)
        try:
            model = klass(localizer.cfg).fit(fold_ds)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"refitting {localizer.method} for out-of-fold predictions failed ({type(e).__name__}: "
                            f"{e}); re-run with --cross-fit 0 to audit with the model as it is")
        p = model.predict([paths[i] for i in held], batch_size=batch_size)
        # positions in the fold model's frame are converted by predict(); neighbours carry lat/lon
        for j, i in enumerate(held):
            out["lat"][i], out["lon"][i], out["radius_m"][i] = p.lat[j], p.lon[j], p.radius_m[j]
            out["neighbors"][i] = p.neighbors[j]
            out["errors"][i] = p.errors[j]
        _say(f"fold {k + 1}/{folds} done in {time.perf_counter() - t0:.1f} s", quiet)
    return out


def run_audit(model, dataset, split: str = "all", cross_fit: int = 3, seed: int = 0, batch_size: int = 32,
              quiet: bool = False) -> tuple[pd.DataFrame, dict]:
    """Locate every photo of ``split``; returns (table sorted worst first, context for the page)."""
    from campusgps.evaluation.inputs import open_dataset, open_localizer
    from campusgps.evaluation.references import find_references
    from campusgps.geo import haversine_m

    loc = open_localizer(model)
    full = open_dataset(dataset)
    if split != "all":
        keep = np.flatnonzero((full.manifest["split"] == split).to_numpy())
    else:
        keep = np.arange(len(full))
    if len(keep) == 0:
        raise UserError(f"{full.root}: no samples in split {split!r}; use --split all")
    if cross_fit == 1 or cross_fit < 0:
        raise UserError("--cross-fit must be 0 (use the model as it is) or at least 2 folds")
    is_train = (full.manifest["split"] == "train").to_numpy()
    train_rows = keep[is_train[keep]]
    n = len(full)
    lat, lon, rad = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    neighbors: list[list[dict]] = [[] for _ in range(n)]
    errors: list = [None] * n
    predicted_by = np.array([""] * n, dtype=object)
    direct = keep
    how = "the model as it is"
    if cross_fit >= 2 and len(train_rows) >= cross_fit:
        try:
            oof = cross_fit_predictions(loc, full, train_rows, cross_fit, seed, batch_size, quiet)
            lat[train_rows], lon[train_rows], rad[train_rows] = (oof["lat"][train_rows], oof["lon"][train_rows],
                                                                 oof["radius_m"][train_rows])
            for i in train_rows:
                neighbors[i], errors[i] = oof["neighbors"][i], oof["errors"][i]
            predicted_by[train_rows] = f"out-of-fold ({cross_fit} folds)"
            direct = keep[~is_train[keep]]
            how = f"out-of-fold refits ({cross_fit} folds) for training photos, the model for the others"
        except UserError as e:
            if "--cross-fit 0" in str(e):
                raise
            _say(f"warning: cannot cross-fit ({e}); using the model as it is, so label errors in its own "
                 f"training photos may be hidden", quiet)
    if len(direct):
        _say(f"locating {len(direct)} photos with the model", quiet)
        paths = full.paths()
        p = loc.predict([paths[i] for i in direct], batch_size=batch_size, progress=True)
        lat[direct], lon[direct], rad[direct] = p.lat, p.lon, p.radius_m
        for j, i in enumerate(direct):
            neighbors[i], errors[i] = p.neighbors[j], p.errors[j]
            predicted_by[i] = "model"
    m = full.manifest
    err = haversine_m(m["lat"].to_numpy(float), m["lon"].to_numpy(float), lat, lon)
    table = pd.DataFrame({
        "id": m["id"].astype(str), "file": [s or f for s, f in zip(m["source_path"].astype(str), m["file"].astype(str))],
        "label_lat": m["lat"].to_numpy(float), "label_lon": m["lon"].to_numpy(float), "pred_lat": lat, "pred_lon": lon,
        "error_m": err, "radius_m": rad, "decision": "", "new_lat": "", "new_lon": "", "note": "",
        "split": m["split"].astype(str).replace("", "unassigned"), "predicted_by": predicted_by,
    }).iloc[keep]
    table["_row"] = keep
    table["_read_error"] = [errors[i] or "" for i in keep]
    order = np.argsort(-np.nan_to_num(table["error_m"].to_numpy(float), nan=-1.0), kind="stable")
    table = table.iloc[order].reset_index(drop=True)
    refs = find_references(loc, full, None)
    ctx = {"localizer": loc, "dataset": full, "neighbors": neighbors, "refs": refs, "how": how,
           "n": int(len(keep)), "split": split}
    return table, ctx


def audit(model, dataset, out_dir, worst: int = 20, split: str = "all", cross_fit: int = 3, seed: int = 0,
          batch_size: int = 32, quiet: bool = False) -> pd.DataFrame:
    """Write ``audit.csv`` and ``audit.html`` for the ``worst`` photos; returns the audit.csv rows."""
    from campusgps.configs import run_record
    from campusgps.jsonio import write_json, write_text_atomic

    if worst < 1:
        raise UserError("--worst must be at least 1")
    table, ctx = run_audit(model, dataset, split, cross_fit, seed, batch_size, quiet)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    located = table[np.isfinite(table["error_m"].to_numpy(float))]
    top = located.head(worst)
    csv = top[AUDIT_COLUMNS + ["split", "predicted_by"]].copy()
    csv["error_m"], csv["radius_m"] = csv["error_m"].round(2), csv["radius_m"].round(2)
    tmp = out / "audit.csv.tmp"
    csv.to_csv(tmp, index=False, float_format="%.8g")
    tmp.replace(out / "audit.csv")
    html = render_audit(top, table, ctx, model_name=Path(str(model)).name if not hasattr(model, "predict")
                        else ctx["localizer"].method)
    write_text_atomic(out / "audit.html", html)
    write_json(out / "run.json", run_record({"model": str(model), "dataset": str(ctx["dataset"].root),
                                             "worst": worst, "split": split, "cross_fit": cross_fit},
                                            command="audit", predicted_by=ctx["how"]))
    return csv.reset_index(drop=True)


def _thumb_row(items: list[tuple[bytes | None, str]]) -> str:
    from campusgps.evaluation.report import e, img_tag

    if not items:
        return "<div class=\"none\">no training photos known</div>"
    cells = "".join(f"<div>{img_tag(b, 'training photo', 'image/jpeg')}<div class=\"cap\">{e(c)}</div></div>"
                    for b, c in items)
    return f"<div class=\"thumbs\">{cells}</div>"


AUDIT_CSS = """
.acase { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px; margin:0 0 14px;
         display:grid; grid-template-columns: 260px 300px 1fr; gap:14px; align-items:start; }
.acase img { width:100%; height:auto; border-radius:4px; display:block; }
.acase h3 { margin:0 0 6px; font-size:14px; }
.thumbs { display:grid; grid-template-columns: repeat(3, 1fr); gap:6px; margin-bottom:8px; }
.thumbs .cap, .acase .cap { font-size:11.5px; color:var(--muted); margin-top:2px; }
.kv { font-size:12.5px; line-height:1.6; }
.kv code { font-size: 11.5px; }
.howto { background:#fff; border:1px solid var(--line); border-left:4px solid var(--accent); border-radius:6px;
         padding:10px 14px; margin: 12px 0 20px; }
.howto li { margin: 2px 0; }
@media (max-width: 1000px) { .acase { grid-template-columns: 1fr 1fr; } }
"""


def render_audit(top: pd.DataFrame, table: pd.DataFrame, ctx: dict, model_name: str) -> str:
    from campusgps.evaluation import plots
    from campusgps.evaluation.report import CSS, cards, e, fmt_m, img_tag, page

    ds, loc, refs = ctx["dataset"], ctx["localizer"], ctx["refs"]
    frame = loc.frame
    train_en = refs.en if refs is not None else None
    err_all = table["error_m"].to_numpy(float)
    fin = err_all[np.isfinite(err_all)]
    body = [cards([("photos located", str(len(fin))), ("median disagreement", fmt_m(np.median(fin) if fin.size else None)),
                   ("shown here", str(len(top))),
                   ("worst shown", fmt_m(top["error_m"].iloc[0] if len(top) else None))])]
    body.append(
        "<div class=\"howto\"><b>How to use this page.</b> Each card is a photo whose label the model disagrees with. "
        "Compare the photo with the training photos taken near its label and with the model's matches, then fill "
        "the <code>decision</code> column of <code>audit.csv</code>:<ul>"
        "<li><code>relabel</code> with <code>new_lat,new_lon</code> (e.g. copy the prediction when the photo clearly "
        "shows that place)</li><li><code>keep</code>: the label is right, the model is wrong</li>"
        "<li><code>move_to_train</code>: a real place the model lacks photos of</li>"
        "<li><code>drop</code>: unusable photo</li></ul>"
        f"Then run <code>campusgps split {e(str(ds.root))} --apply-audit audit.csv</code> and retrain. "
        f"Predictions: {e(ctx['how'])}.</div>")
    for rank, (_, row) in enumerate(top.iterrows(), 1):
        r = SimpleNamespace(**row.to_dict())
        i = int(row["_row"])
        try:
            photo = plots.thumbnail(ds.load_image(i, max_side=400), max_side=260)
        except Exception:
            photo = None
        le, ln = frame.to_local(r.label_lat, r.label_lon)
        label_en = np.array([float(le), float(ln)])
        pred_en = np.full(2, np.nan)
        if np.isfinite(r.pred_lat):
            pe, pn = frame.to_local(r.pred_lat, r.pred_lon)
            pred_en = np.array([float(pe), float(pn)])
        nbs = [d for d in ctx["neighbors"][i] if "lat" in d][:3]
        nb_en = None
        if nbs:
            ne, nn = frame.to_local(np.array([d["lat"] for d in nbs]), np.array([d["lon"] for d in nbs]))
            nb_en = np.stack([ne, nn], axis=1)
        mp = plots.case_map(train_en, label_en, pred_en, neighbors_en=nb_en)
        sid = str(r.id)
        near_label, matches = [], []
        if refs is not None:
            for j in refs.nearest(label_en, 3, exclude={sid}):
                d = float(np.hypot(*(refs.en[j] - label_en)))
                near_label.append((refs.thumbnail(refs.ids[j]), f"{d:.0f} m from label"))
        for k, d in enumerate(nbs):
            if refs is None:
                break
            b = refs.thumbnail(d.get("id"))
            dd = float(np.hypot(*(nb_en[k] - label_en)))
            score = d.get("score")
            matches.append((b, f"match {k + 1}: {dd:.0f} m from label" +
                            (f", score {score:.2f}" if isinstance(score, (int, float)) else "")))
        second_title = "The model's closest matches"
        if not matches and refs is not None and np.isfinite(pred_en).all():
            second_title = "Training photos nearest the prediction"
            for j in refs.nearest(pred_en, 3, exclude={sid}):
                d = float(np.hypot(*(refs.en[j] - pred_en)))
                matches.append((refs.thumbnail(refs.ids[j]), f"{d:.0f} m from prediction"))
        name = str(r.file).replace("\\", "/").rsplit("/", 1)[-1]
        kv = (f"<div class=\"kv\"><b>{fmt_m(r.error_m)}</b> between label and prediction · radius {fmt_m(r.radius_m)}<br>"
              f"id <code>{e(sid)}</code> · split {e(str(r.split))} · predicted by {e(str(r.predicted_by))}<br>"
              f"label <code>{r.label_lat:.6f}, {r.label_lon:.6f}</code><br>"
              f"prediction <code>{r.pred_lat:.6f}, {r.pred_lon:.6f}</code></div>")
        body.append(
            f"<div class=\"acase\"><div><h3>#{rank} · {e(name)}</h3>{img_tag(photo, 'photo', 'image/jpeg')}{kv}</div>"
            f"<div>{img_tag(mp, 'map')}<div class=\"cap\">blue: label · red: prediction · orange rings: matched "
            f"references · grey: training photos (m, local frame)</div></div>"
            f"<div><h3>Training photos nearest the label</h3>{_thumb_row(near_label)}"
            f"<h3>{second_title}</h3>{_thumb_row(matches)}</div></div>")
    failed = table[table["_read_error"] != ""]
    if len(failed):
        body.append(f"<p class=\"note\">{len(failed)} photos could not be read and are not ranked.</p>")
    html = page(f"campusgps audit: {model_name}", "".join(body),
                f"model <code>{e(model_name)}</code> ({e(loc.method)}) · dataset <code>{e(str(ds.root))}</code> · "
                f"split <code>{e(ctx['split'])}</code> · worst {len(top)} of {ctx['n']} photos")
    return html.replace(f"<style>{CSS}</style>", f"<style>{CSS}{AUDIT_CSS}</style>", 1)
