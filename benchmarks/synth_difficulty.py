"""How hard is the simulated campus for ImageNet features? Top-1 retrieval vs the mean-position baseline.

    .venv/bin/python benchmarks/synth_difficulty.py [--out /tmp/cgps_synth_small] [--preset small] [--seed 1]

Renders (or reuses) a campus, embeds every mapping photo and query with pretrained EfficientNet-Lite0
(global average pooled, L2-normalised), and for each query takes the mapping photo with the highest cosine
similarity. Error = distance from that photo's position to the query's TRUE position. Reported:
- top-1 retrieval using the neighbour's true position and using its (noisy) GPS label,
- the mean-position baseline (mean of the mapping GPS labels),
- medians by condition and by area (repeated_facade, walkway, ...), and same-condition vs cross-condition.
Target: retrieval median clearly below the baseline, while night and repeated-facade queries are harder.
Prints a table and writes benchmarks/results/synth_difficulty.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def _stats(err: np.ndarray) -> dict:
    err = np.asarray(err, float)
    if err.size == 0:
        return {"n": 0}
    return {"n": int(err.size), "median_m": round(float(np.median(err)), 2), "mean_m": round(float(err.mean()), 2),
            "acc_10m": round(float(np.mean(err <= 10)), 3), "acc_25m": round(float(np.mean(err <= 25)), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/cgps_synth_small", help="campus folder (rendered if missing)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "synth_difficulty.json"))
    args = ap.parse_args(argv)

    from campusgps.models.backbones import get_backbone
    from campusgps.synth.capture import CaptureConfig
    from campusgps.synth.writer import synthesize

    out = Path(args.out)
    load0 = os.getloadavg()[0]
    t0 = time.time()
    synthesize(out, preset=args.preset, seed=args.seed, cfg=CaptureConfig(), workers=args.workers, progress=True)
    synth_s = time.time() - t0
    truth = pd.read_csv(out / "truth.csv")
    db = truth[truth.session == "photos"].reset_index(drop=True)
    q = truth[truth.session == "queries"].reset_index(drop=True)

    bb = get_backbone(args.backbone)
    t1 = time.time()

    def feats(files):
        ims = [np.asarray(Image.open(out / f).convert("RGB")) for f in files]
        f = bb.embed(ims, batch_size=64)
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    fd, fq = feats(db.file), feats(q.file)
    embed_s = time.time() - t1
    sim = fq @ fd.T
    nn = sim.argmax(1)
    qxy = q[["east_m", "north_m"]].to_numpy()
    err_true = np.hypot(*(db[["east_m", "north_m"]].to_numpy()[nn] - qxy).T)
    err_label = np.hypot(*(db[["label_east_m", "label_north_m"]].to_numpy()[nn] - qxy).T)
    mean_xy = db[["label_east_m", "label_north_m"]].to_numpy().mean(0)
    err_base = np.hypot(*(qxy - mean_xy).T)
    same_cond = db.condition.to_numpy()[nn] == q.condition.to_numpy()

    res = {
        "preset": args.preset, "seed": args.seed, "backbone": args.backbone, "out": str(out),
        "n_photos": int(len(db)), "n_queries": int(len(q)),
        "top1_vs_truth": _stats(err_true), "top1_label_vs_truth": _stats(err_label),
        "baseline_mean_position": _stats(err_base),
        "gps_label_error_photos": _stats(db.label_error_m.to_numpy()),
        "by_condition": {}, "by_area": {},
        "nn_same_condition_fraction": round(float(same_cond.mean()), 3),
        "synth_seconds": round(synth_s, 1), "embed_seconds": round(embed_s, 1),
        "load_avg_at_start": round(load0, 2),
    }
    for c in ("day", "overcast", "dusk", "night"):
        m = (q.condition == c).to_numpy()
        res["by_condition"][c] = {"top1": _stats(err_true[m]), "baseline": _stats(err_base[m])}
    for a in sorted(q.area.unique()):
        m = (q.area == a).to_numpy()
        res["by_area"][a] = {"top1": _stats(err_true[m]), "baseline": _stats(err_base[m])}

    print(f"\nsynth difficulty: {args.preset} seed {args.seed}, {len(db)} mapping photos, {len(q)} queries, "
          f"{args.backbone} GAP features, cosine top-1")
    print(f"{'group':<22}{'n':>5}{'top1 med m':>12}{'acc@10m':>9}{'acc@25m':>9}{'baseline med m':>16}")

    def row(name, e, b):
        s, sb = _stats(e), _stats(b)
        if s["n"]:
            print(f"{name:<22}{s['n']:>5}{s['median_m']:>12.1f}{s['acc_10m']:>9.2f}{s['acc_25m']:>9.2f}{sb['median_m']:>16.1f}")

    row("all", err_true, err_base)
    row("all (NN's GPS label)", err_label, err_base)
    for c in ("day", "overcast", "dusk", "night"):
        m = (q.condition == c).to_numpy()
        row(f"condition={c}", err_true[m], err_base[m])
    for a in sorted(q.area.unique()):
        m = (q.area == a).to_numpy()
        row(f"area={a}", err_true[m], err_base[m])
    print(f"NN taken in the same condition: {res['nn_same_condition_fraction']:.0%}; "
          f"synth {synth_s:.0f} s, embed {embed_s:.0f} s, load avg at start {load0:.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
