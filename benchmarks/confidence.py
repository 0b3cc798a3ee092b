"""Does the confidence mean something? Confidence, adaptive radius and alternatives on a simulated campus.

    .venv/bin/python benchmarks/confidence.py [--work /work/data] [--seed 7] [--methods hybrid,retrieval,regression]

One run: the shared simulated campus (small preset, ``--seed``; synth -> ingest -> split, queries = the
campus's separate query session) -> train each method (bundles cached under WORK/models-confidence; ``--retrain``
refits) -> predict the queries -> errors against the TRUE camera positions in truth.csv -> the metrics of
:mod:`campusgps.evaluation.confidence`: confidence AUC (within 20 m vs not), ECE (5 bins), precision and
share at confidence >= 0.8, radius coverage overall and per confidence third, AUC of radius vs
"error > 20 m", median radius / median error, top-3 recall within 20 m; also by condition.
Prints a table and writes benchmarks/results/confidence.json (``--out``). Tune on seed 1; report seed 7.
``--dump FILE.npz`` also saves the held-out and query evidence (for tuning the confidence model).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import ROOT, simulated_campus

TARGETS = {"auc": (">=", 0.85), "ece": ("<=", 0.08), "high_precision": (">=", 0.85), "high_share": (">=", 0.40),
           "radius_coverage_lo": (">=", 0.85), "radius_coverage_hi": ("<=", 0.95),
           "radius_coverage_min_third": (">=", 0.80), "radius_auc": (">=", 0.80),
           "radius_to_error": ("<=", 3.0), "top3_recall": (">=", 0.85)}


def prepare(work: Path, seed: int):
    from campusgps.dataset import Dataset

    synth, ds_dir, q_dir = simulated_campus(work, "small", seed)
    truth = pd.read_csv(synth / "truth.csv")
    truth["base"] = truth["file"].map(lambda f: Path(f).name)
    ds, qds = Dataset.open(ds_dir), Dataset.open(q_dir)
    qbase = qds.manifest["source_path"].map(lambda f: Path(str(f)).name)
    tq = truth.set_index("base").loc[qbase.to_numpy()]
    te, tn = ds.frame.to_local(tq["true_lat"].to_numpy(), tq["true_lon"].to_numpy())
    return ds, qds, np.stack([te, tn], 1), tq


def train(method: str, ds, path: Path, retrain: bool):
    from campusgps import Localizer
    from campusgps.localizers.base import get_localizer_class

    if path.exists() and not retrain:
        return Localizer.load(path), None
    t = time.perf_counter()
    opts = {"backbone": "efficientnet-lite0"} if method != "regression" else {}
    loc = get_localizer_class(method)(**opts).fit(ds)
    fit_s = time.perf_counter() - t
    path.parent.mkdir(parents=True, exist_ok=True)
    loc.save(path)
    return loc, fit_s


def summarise(pred, truth_en, tq) -> dict:
    from campusgps.evaluation.confidence import alternatives_errors, confidence_report

    err = np.hypot(pred.east - truth_en[:, 0], pred.north - truth_en[:, 1])
    alt_err = alternatives_errors(pred.alternatives, truth_en)
    rep = confidence_report(err, pred.confidence, pred.radius_m, alt_err)
    rep["median_error_m"] = float(np.nanmedian(err))
    if "condition" in tq:
        rep["by_condition"] = {}
        for c in sorted(tq["condition"].dropna().unique()):
            m = (tq["condition"] == c).to_numpy()
            r = confidence_report(err[m], pred.confidence[m], pred.radius_m[m], alt_err[m])
            rep["by_condition"][str(c)] = {k: r[k] for k in ("n", "fraction_right", "mean_confidence", "auc")}
            rep["by_condition"][str(c)]["radius_coverage"] = r["radius"]["coverage"]
    return rep


def headline(rep: dict) -> dict:
    r = rep.get("radius", {})
    thirds = [t["coverage"] for t in r.get("coverage_by_third", [])]
    return {"auc": rep["auc"], "ece": rep["ece"], "high_precision": rep["high_confidence"]["fraction_right"],
            "high_share": rep["high_confidence"]["share"], "radius_coverage_lo": r.get("coverage"),
            "radius_coverage_hi": r.get("coverage"), "radius_coverage_min_third": min(thirds) if thirds else None,
            "radius_auc": r.get("auc_wrong"), "radius_to_error": r.get("radius_to_error"),
            "top3_recall": rep["top3_recall"]}


def meets(h: dict) -> dict:
    out = {}
    for k, (op, v) in TARGETS.items():
        x = h.get(k)
        out[k] = None if x is None else bool(x >= v if op == ">=" else x <= v)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/work/data")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--methods", default="hybrid,retrieval,regression")
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "confidence.json"))
    ap.add_argument("--dump", default="")
    args = ap.parse_args(argv)
    import campusgps.localizers.hybrid.confidence as hc

    hc.CAPTURE = {} if args.dump else None
    work = Path(args.work)
    ds, qds, truth_en, tq = prepare(work, args.seed)
    images = [qds.root / f for f in qds.manifest["file"]]
    results = {"seed": args.seed, "preset": "small", "n_queries": len(images), "targets": TARGETS,
               "command": "benchmarks/confidence.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "methods": {}}
    for method in [m for m in args.methods.split(",") if m]:
        loc, fit_s = train(method, ds, work / "models-confidence" / f"{method}-small-{args.seed}.cgps", args.retrain)
        t = time.perf_counter()
        pred = loc.predict(images, batch_size=16)
        s_q = (time.perf_counter() - t) / len(images)
        rep = summarise(pred, truth_en, tq)
        h = headline(rep)
        results["methods"][method] = {"headline": h, "meets_target": meets(h), "fit_s": fit_s,
                                      "s_per_query": s_q, "report": rep,
                                      "held_out": (loc.confidence_model.info
                                                   if getattr(loc, "confidence_model", None) else None)}
        print(f"{method:<11}" + "  ".join(f"{k} {v if v is None else round(v, 3)}" for k, v in h.items())
              + f"  median_err {rep['median_error_m']:.1f} m  fit {fit_s and round(fit_s)} s", flush=True)
        if args.dump and method == "hybrid" and hc.CAPTURE:
            q = hc.CAPTURE.get("query", [])
            ho = hc.CAPTURE.get("held_out", [{}])[-1]
            err = np.hypot(pred.east - truth_en[:, 0], pred.north - truth_en[:, 1])
            np.savez(args.dump, ho_X=ho.get("X"), ho_err=ho.get("err"), ho_groups=ho.get("groups"),
                     q_X=np.stack([d["x"] for d in q[-len(images):]]) if q else None, q_err=err,
                     conf=pred.confidence, radius=pred.radius_m,
                     cond=tq["condition"].to_numpy().astype(str) if "condition" in tq else None)
        write(args.out, results)  # after every method: a long run keeps what it measured
    print(f"wrote {args.out}")
    return 0


def write(out: str, results: dict) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    raise SystemExit(main())
