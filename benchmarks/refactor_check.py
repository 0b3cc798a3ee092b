"""Prove a refactor changes no prediction: record every method's answers, then compare after the change.

    python benchmarks/refactor_check.py record   # on the code before the refactor -> results/refactor_check.json
    python benchmarks/refactor_check.py compare  # after: same training, same photos, answers compared bitwise

A tiny simulated campus (synth preset ``tiny``, fixed seed; cached under ``--work``) is ingested and split;
mean, regression (tiny-cnn, few epochs), retrieval, hybrid (both tiny-cnn) and an ensemble of retrieval +
regression are trained with fixed seeds, then locate the query photos, a noise image and an unreadable
file, directly and after a save/load round trip. Every (lat, lon, radius_m) and the flags are recorded.
Also trained: retrieval and hybrid on the same dataset without a val split (the held-out-slice path).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("CAMPUSGPS_PROGRESS", "0")
os.environ.setdefault("OMP_NUM_THREADS", "2")

from common import ROOT, cli, simulated_campus  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "refactor_check.json"


def _answers(p) -> list[dict]:
    out = []
    for i in range(len(p)):
        out.append({"lat": None if p.lat[i] != p.lat[i] else float(p.lat[i]),
                    "lon": None if p.lon[i] != p.lon[i] else float(p.lon[i]),
                    "radius_m": None if p.radius_m[i] != p.radius_m[i] else float(p.radius_m[i]),
                    "flags": sorted(p.flags[i]), "error": bool(p.errors[i]),
                    "neighbors": [str(d.get("id")) for d in p.neighbors[i][:5]]})
    return out


def _models(ds, unsplit):
    from campusgps.localizers.base import MeanLocalizer
    from campusgps.localizers.ensemble import EnsembleLocalizer
    from campusgps.localizers.hybrid import HybridLocalizer
    from campusgps.localizers.regression import RegressionLocalizer
    from campusgps.localizers.retrieval import RetrievalLocalizer

    yield "mean", MeanLocalizer().fit(ds)
    reg = RegressionLocalizer(backbone="tiny-cnn", epochs=30, views=2, patience=10, seed=0).fit(ds, progress=False)
    yield "regression", reg
    ret = RetrievalLocalizer(backbone="tiny-cnn", ft_steps=40, seed=0).fit(ds)
    yield "retrieval", ret
    yield "hybrid", HybridLocalizer(backbone="tiny-cnn", finetune="off", shortlist=10).fit(ds)
    yield "ensemble", EnsembleLocalizer().fit(ds, members=[ret, reg])
    yield "retrieval_no_val", RetrievalLocalizer(backbone="tiny-cnn", ft_steps=40, seed=0).fit(unsplit)
    yield "hybrid_no_val", HybridLocalizer(backbone="tiny-cnn", finetune="off", shortlist=10,
                                           thumbnails=False).fit(unsplit)


def run(work: Path) -> dict:
    import numpy as np

    from campusgps.dataset import Dataset
    from campusgps.localizers.base import Localizer

    _, ds_dir, q_dir = simulated_campus(work, "tiny", 3, "--photos", 80, "--queries", 24, "--width", 192)
    cli("split", ds_dir, "--val", "0.3", "--test", "0", "--seed", 3)  # a val split big enough for every method
    ds, qs = Dataset.open(ds_dir), Dataset.open(q_dir)
    unsplit = Dataset(root=ds.root, manifest=ds.manifest.assign(
        split=ds.manifest["split"].replace({"val": "train"})), frame=ds.frame)
    noise = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    bad = work / "not_an_image.jpg"
    bad.write_bytes(b"not a jpeg")
    inputs = [*qs.paths(), noise, bad]
    res = {"n_inputs": len(inputs), "models": {}}
    for name, loc in _models(ds, unsplit):
        print(f"  {name}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as td:
            loaded = Localizer.load(loc.save(Path(td) / "m.cgps"))
        res["models"][name] = {"direct": _answers(loc.predict(inputs, batch_size=8)),
                               "loaded": _answers(loaded.predict(inputs, batch_size=8))}
    return res


def compare(old: dict, new: dict) -> int:
    n_same = n_all = 0
    bad = []
    for name, o in old["models"].items():
        nm = new["models"].get(name)
        if nm is None:
            bad.append(f"{name}: missing")
            continue
        for mode in ("direct", "loaded"):
            same = sum(a == b for a, b in zip(o[mode], nm[mode]))
            n_same += same
            n_all += len(o[mode])
            print(f"{name:18s} {mode:6s}: {same}/{len(o[mode])} predictions identical")
            if same != len(o[mode]):
                bad.append(f"{name}/{mode}")
    print(f"TOTAL: {n_same}/{n_all} predictions identical (lat, lon, radius_m, flags, top-5 neighbours)")
    if bad:
        print("DIFFERENT: " + ", ".join(bad))
    return 0 if not bad else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["record", "compare"])
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "campusgps-refactor-check"))
    ap.add_argument("--result", default=str(RESULT))
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    new = run(work)
    if a.mode == "record":
        Path(a.result).parent.mkdir(parents=True, exist_ok=True)
        Path(a.result).write_text(json.dumps(new, indent=1) + "\n")
        print(f"recorded {sum(len(m['direct']) + len(m['loaded']) for m in new['models'].values())} predictions "
              f"-> {a.result}")
        return 0
    return compare(json.loads(Path(a.result).read_text()), new)


if __name__ == "__main__":
    raise SystemExit(main())
