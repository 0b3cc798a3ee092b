"""Bring your own backbone, checked against the built-in one: EfficientNet-Lite0 exported to ONNX (a plain
NCHW float model returning its last feature maps, normalisation given in its JSON) and loaded with
``--backbone onnx:PATH``, versus the built-in ``efficientnet-lite0``, both training retrieval on the same
simulated campus and answering the same query session. Reports descriptor agreement, how far apart the two
models' answers are, and each one's errors against the true positions.

    python benchmarks/byo_onnx.py [--work /tmp/cgps-byo] [--preset tiny] [--seed 3] [--photos N --queries M]
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

from common import ROOT, simulated_campus  # noqa: F401  (also puts src/ on sys.path)


def export_lite0(path: Path) -> Path:
    """The built-in lite0 network as a float NCHW ONNX model (no normalisation inside) + its JSON."""
    import torch

    from campusgps.models.backbones import get_backbone

    bb = get_backbone("efficientnet-lite0", device="cpu", fast="eager", trainable=True)
    net = bb.net.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), str(path), input_names=["image"],
                          output_names=["maps"], dynamic_axes={"image": {0: "n"}, "maps": {0: "n"}},
                          opset_version=17, dynamo=False)
    settings = {"input_size": 224, "range": "0-255", "mean": [127, 127, 127], "std": [128, 128, 128],
                "output": "maps", "description": "EfficientNet-Lite0 ImageNet, last conv maps (1280 x 7 x 7)"}
    path.with_name(path.name + ".json").write_text(json.dumps(settings, indent=1))
    return path


def main() -> None:
    import numpy as np
    import pandas as pd

    from campusgps.dataset import Dataset
    from campusgps.localizers.retrieval import RetrievalLocalizer
    from campusgps.models.backbones import get_backbone
    from campusgps.models.fastpaths import cosine_rows

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/cgps-byo")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--photos", type=int, default=0, help="mapping photos (0: the preset's)")
    ap.add_argument("--queries", type=int, default=0, help="query photos (0: the preset's)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "byo_onnx.json"))
    args = ap.parse_args()
    work = Path(args.work)
    extra = [a for k in ("photos", "queries") if getattr(args, k) for a in (f"--{k}", getattr(args, k))]
    sim, ds_dir, q_dir = simulated_campus(work, args.preset, args.seed, *extra)
    ds, qs = Dataset.open(ds_dir), Dataset.open(q_dir)
    truth = pd.read_csv(sim / "truth.csv")
    truth.index = truth["file"].map(lambda f: Path(f).name)
    tq = truth.loc[qs.manifest["source_path"].map(lambda f: Path(str(f)).name).to_numpy()]
    truth_en = np.stack(ds.frame.to_local(tq["true_lat"].to_numpy(), tq["true_lon"].to_numpy()), 1)
    onnx = export_lite0(work / "lite0.onnx")
    names = {"builtin": "efficientnet-lite0", "onnx": f"onnx:{onnx}"}

    imgs = [qs.load_image(i, max_side=448) for i in range(min(32, len(qs)))]
    desc = {k: get_backbone(n, device="cpu").embed(imgs, pooling="gem") for k, n in names.items()}
    res = {"campus": {"preset": args.preset, "seed": args.seed, "synth_args": extra, "n_mapping": len(ds),
                      "n_queries": len(qs)},
           "descriptor_cosine_min": float(cosine_rows(desc["builtin"], desc["onnx"]).min()),
           "builtin_path": get_backbone(names["builtin"], device="cpu").path}
    preds = {}
    for k, n in names.items():
        t0 = time.time()
        loc = RetrievalLocalizer(backbone=n, device="cpu").fit(ds)
        fit_s = time.time() - t0
        loc.predict(qs.paths()[:4])  # warm-up
        t0 = time.time()
        p = loc.predict(qs.paths())
        pred_s = (time.time() - t0) / len(qs)
        preds[k] = np.stack([p.east, p.north], 1)
        err = np.hypot(*(preds[k] - truth_en).T)
        res[k] = {"median_m": float(np.median(err)), "p90_m": float(np.percentile(err, 90)),
                  "fit_s": round(fit_s, 1), "s_per_query": round(pred_s, 4),
                  "selection": {kk: loc.info["selection"].get(kk) for kk in ("whiten_used", "finetune_used")}}
    d = np.hypot(*(preds["builtin"] - preds["onnx"]).T)
    res["answer_distance_m"] = {"median": float(np.median(d)), "p90": float(np.percentile(d, 90)),
                                "max": float(d.max()), "within_1m": float((d <= 1.0).mean()),
                                "within_5m": float((d <= 5.0).mean())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
