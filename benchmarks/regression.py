"""Benchmark: GPS regression vs the mean-position baseline, training time, predict speed, backbone fast paths.

    .venv/bin/python benchmarks/regression.py [--preset small] [--seed 1] [--topn 2] [--work DIR] [--no-direct]

In one run, on the same data: the mean-position baseline, frozen regression with the previous default head
(``--head direct``, for reference unless --no-direct), frozen regression with the default (cells) head, and
top-N fine-tuning (cached activations below the top N blocks). Training wall times include feature extraction
(the feature cache is cleared before each variant unless --keep-cache).

Data: a simulated campus (`campusgps synth OUT --preset small --seed 1`, then `ingest`, `split`; the synth
queries are ingested as an external test set and scored against truth.csv's true_lat/true_lon).

Prints a table and writes benchmarks/results/regression.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import sys
import time
from pathlib import Path

import numpy as np

from common import ROOT, simulated_campus


def prepare_data(work: Path, preset: str, seed: int):
    """-> (dataset, query dataset, truth DataFrame, description)."""
    import pandas as pd

    from campusgps.dataset import Dataset

    sim, ds_dir, q_dir = simulated_campus(work, preset, seed)
    truth = pd.read_csv(sim / "truth.csv")
    return Dataset.open(ds_dir), Dataset.open(q_dir), truth, f"synth preset={preset} seed={seed}"


def truth_en(qds, truth, frame):
    """True east/north of the query photos (matched by base name in truth.csv)."""
    import pandas as pd

    t = truth.copy()
    t["base"] = t["file"].map(lambda f: Path(str(f)).name)
    src = qds.manifest["source_path"].map(lambda f: Path(str(f)).name)
    m = pd.DataFrame({"base": src}).merge(t, on="base", how="left")
    e, n = frame.to_local(m["true_lat"].to_numpy(float), m["true_lon"].to_numpy(float))
    return np.stack([e, n], 1)


def score(en_pred, en_true) -> dict:
    err = np.hypot(*(en_pred - en_true).T)
    err = err[np.isfinite(err)]
    return {"n": int(err.size), "median_m": float(np.median(err)), "mean_m": float(err.mean()),
            "p90_m": float(np.percentile(err, 90)), "acc_10m": float((err <= 10).mean())}


def bench_backbone(name: str, n: int = 64, batch: int = 32) -> dict:
    import torch

    from campusgps.models.backbones import cosine_rows, get_backbone, probe_images

    imgs = probe_images(n, 480)
    out = {}
    ref = None
    for path in ("eager", "channels-last-eager", "bf16", "onnx"):
        p = "eager" if path.startswith("channels") else path
        if path == "eager":  # plain NCHW fp32 (no channels-last), the naive reference
            bb = get_backbone(name, device="cpu", fast="eager", trainable=True)
            bb.net.eval()
            bb.net = bb.net.to(memory_format=torch.contiguous_format)
            orig = bb.normalise

            def plain(x, _o=orig):
                return _o(x).contiguous()

            bb.normalise = plain
        else:
            bb = get_backbone(name, device="cpu", fast=p)
        m = imgs[: 32 if p == "eager" else n]
        bb.embed(m[:8], batch)  # warm-up (and ONNX export / session)
        pre = bb.preprocess(m)
        t = time.perf_counter()
        for s in range(0, len(m), batch):
            bb._maps_and_pooled(pre[s:s + batch], want_maps=False, path=p)
        compute = len(m) / (time.perf_counter() - t)
        t = time.perf_counter()
        f = bb.embed(m, batch)
        e2e = len(m) / (time.perf_counter() - t)
        if ref is None:
            ref = f
        out[path] = {"img_per_s_compute": round(compute, 1), "img_per_s_with_resize": round(e2e, 1),
                     "cosine_vs_fp32_min": float(cosine_rows(ref[:32], f[:32]).min())}
    out["auto_path"] = get_backbone(name, device="cpu", fast="auto").path
    return out


def _write(path, res: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    os.replace(tmp, out)


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:
        return f"load average {os.getloadavg()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--topn", type=int, default=2, help="also train top-N fine-tune (0: skip)")
    ap.add_argument("--topn-epochs", type=int, default=40, help="epochs for the top-N variant")
    ap.add_argument("--no-direct", action="store_true", help="skip the direct-regression (previous default) row")
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "campusgps-bench-regression"),
                    help="where the simulated campus and datasets go (reused when present)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "regression.json"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep-cache", action="store_true", help="do not clear cached features before timing training")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from campusgps.localizers.base import MeanLocalizer
    from campusgps.localizers.regression import RegressionLocalizer

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "threads": args.threads,
                 "load_avg_start": os.getloadavg()[0], "uptime_start": _uptime()}
    print("backbone fast paths ...", file=sys.stderr)
    res["backbone"] = {args.backbone: bench_backbone(args.backbone)}

    ds, qds, truth, desc = prepare_data(work, args.preset, args.seed)
    res["data"] = {"description": desc, **ds.summary()}
    test_paths, en_true = qds.paths(), truth_en(qds, truth, ds.frame)
    res["scored_against"] = "truth (query photos)"
    rows = {}
    base = MeanLocalizer().fit(ds)
    p = base.predict(test_paths)
    rows["mean-position baseline"] = {**score(np.stack([p.east, p.north], 1), en_true), "train_s": 0.0}

    variants = []
    if not args.no_direct:
        variants.append(("regression frozen direct", {"finetune": "frozen", "head": "direct"}))
    variants.append(("regression frozen", {"finetune": "frozen"}))
    if args.topn:
        variants.append((f"regression top-{args.topn}", {"finetune": f"top-{args.topn}", "epochs": args.topn_epochs}))
    models = {}
    for label, kw in variants:
        if not args.keep_cache:
            shutil.rmtree(ds.root / ".cache", ignore_errors=True)
        print(f"training {label} ...", file=sys.stderr)
        t = time.perf_counter()
        loc = RegressionLocalizer(backbone=args.backbone, **kw).fit(ds, progress=True)
        train_s = time.perf_counter() - t
        path = work / f"{label.replace(' ', '_')}.cgps"
        loc.save(path)
        models[label] = path
        p = loc.predict(test_paths, batch_size=32)
        sc = score(np.stack([p.east, p.north], 1), en_true)
        err = np.hypot(p.east - en_true[:, 0], p.north - en_true[:, 1])
        sc["radius_coverage"] = float((err <= p.radius_m).mean())
        rows[label] = {**sc, "train_s": round(train_s, 1), "head": loc.spec["head"].get("cells", 0) and "cells" or "direct",
                       "load_avg": round(os.getloadavg()[0], 2),
                       "feature_s": round(loc.info["training"]["feature_seconds"], 1),
                       "epochs": loc.info["training"]["epochs_run"], "best_epoch": loc.info["training"]["best_epoch"]}
        res["results"] = rows
        _write(args.out, {**res, "partial": True})  # a long top-N run still leaves the finished rows
        if label == "regression frozen" and loc.spec["head"].get("cells"):
            # the same trained model, cells averaged over all cells (--cell-predict soft): the tail trade-off
            head = loc._model.head
            mode = head.cell_predict
            head.cell_predict = "soft"
            p = loc.predict(test_paths, batch_size=32)
            head.cell_predict = mode
            sc = score(np.stack([p.east, p.north], 1), en_true)
            err = np.hypot(p.east - en_true[:, 0], p.north - en_true[:, 1])
            sc["radius_coverage"] = float((err <= p.radius_m).mean())
            rows["  same, --cell-predict soft"] = {**sc, "train_s": round(train_s, 1), "head": "cells (soft)",
                                                    "note": "same model; radius scale calibrated for local"}
    res["results"] = rows
    _write(args.out, res)

    # predict speed from JPEG files with a freshly loaded bundle (what `campusgps predict` does)
    from campusgps import Localizer

    loc = Localizer.load(models["regression frozen"])
    files = [str(f) for f in test_paths][:256]
    loc.predict(files[:8])
    t = time.perf_counter()
    loc.predict(files, batch_size=32)
    thr = len(files) / (time.perf_counter() - t)
    lat = []
    for f in files[:20]:
        t = time.perf_counter()
        loc.predict_gps(f)
        lat.append((time.perf_counter() - t) * 1000)
    from PIL import Image

    w, h = Image.open(files[0]).size
    res["predict"] = {"files": len(files), "photo_px": [w, h], "batch_img_per_s": round(thr, 1),
                      "single_image_ms_median": round(float(np.median(lat)), 1),
                      "single_image_ms_p90": round(float(np.percentile(lat, 90)), 1), "path": loc.backbone.path}
    res["load_avg_end"] = os.getloadavg()[0]
    res["uptime_end"] = _uptime()
    res["targets"] = {"features_img_per_s": 100, "predict_img_per_s": 60, "single_image_ms": 50,
                      "frozen_train_s": 180}

    # table
    print(f"\nregression benchmark -- {desc}; scored vs {res['scored_against']}")
    print(f"{'model':<28}{'median':>9}{'mean':>9}{'P90':>9}{'acc@10m':>9}{'train s':>9}{'feat s':>8}{'radius cov':>11}")
    for k, r in rows.items():
        cov = f"{r['radius_coverage']:>10.1%}" if "radius_coverage" in r else f"{'-':>10}"
        print(f"{k:<28}{r['median_m']:>8.1f}m{r['mean_m']:>8.1f}m{r['p90_m']:>8.1f}m{r['acc_10m']:>9.1%}"
              f"{r['train_s']:>9.1f}{r.get('feature_s', 0):>8.1f} {cov}")
    print(f"\nbackbone {args.backbone} @ {res['backbone'][args.backbone]['auto_path']} (auto):")
    for k, v in res["backbone"][args.backbone].items():
        if isinstance(v, dict):
            print(f"  {k:<22}{v['img_per_s_compute']:>7.1f} img/s compute, {v['img_per_s_with_resize']:>7.1f} with "
                  f"resize, cosine vs fp32 {v['cosine_vs_fp32_min']:.4f}")
    pr = res["predict"]
    print(f"predict from {pr['files']} JPEGs ({pr['photo_px'][0]}x{pr['photo_px'][1]}): {pr['batch_img_per_s']} img/s; "
          f"single image {pr['single_image_ms_median']} ms (p90 {pr['single_image_ms_p90']})")
    print(f"uptime at start: {res['uptime_start']}\nuptime at end:   {res['uptime_end']}")
    print(f"load average {res['load_avg_start']:.1f} -> {res['load_avg_end']:.1f} on {os.cpu_count()} CPUs "
          f"(other jobs share the CPU; numbers are lower bounds when load > threads)")
    _write(args.out, res)
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
