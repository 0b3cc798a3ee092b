"""campusgps demo [--out DIR] [--preset small] [--seed N]"""
from __future__ import annotations

HELP = "the whole pipeline on a simulated campus: synth, ingest, split, train, evaluate, compare"
DESCRIPTION = """Run everything on a simulated campus and print a results table.

Steps (each skipped when its output already exists, so re-running continues where it stopped):
  1. synth     DIR/sim/        photos/ (mapping session), queries/ (a separate session), truth.csv
  2. ingest    DIR/data/mapping from sim/photos, DIR/data/queries from sim/queries (labels from EXIF GPS)
  3. split     DIR/data/mapping --test 0 (the query session is the test set)
  4. train     DIR/models/{regression,retrieval,hybrid}.cgps
  5. evaluate  each model on the queries against the true positions -> DIR/eval/<method>/report.html
  6. compare   DIR/compare/compare.html + compare.csv

Presets: tiny (seconds to a minute; smoke test), small (the default, a few minutes on a 2-core CPU),
medium (larger campus, slower). Delete DIR (or a step's output) to redo a step.
"""

PRESETS = {
    # synth flags, train flags per method, robustness subset
    "tiny": {"synth": [], "robustness_n": 5,
             "train": {"regression": ["--epochs", "12"], "retrieval": ["--finetune", "off"],
                       "hybrid": ["--finetune", "off"]}},
    "small": {"synth": [], "robustness_n": 24,  # 24 photos x 6 perturbations: ~20 s of the hybrid's evaluation
              "train": {"regression": [], "retrieval": [], "hybrid": []}},
    "medium": {"synth": [], "robustness_n": 60,
               "train": {"regression": [], "retrieval": [], "hybrid": []}},
}
METHODS = ("regression", "retrieval", "hybrid")


def add_arguments(p):
    p.add_argument("--out", default="campusgps_demo", metavar="DIR", help="working folder (default ./campusgps_demo)")
    p.add_argument("--preset", default="small", choices=list(PRESETS), help="campus size (default small)")
    p.add_argument("--seed", type=int, default=0, help="campus seed (default 0)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated methods to train (default {','.join(METHODS)})")


def _step(name: str, msg: str) -> None:
    import sys

    print(f"demo: [{name}] {msg}", file=sys.stderr, flush=True)


def _call(argv: list[str]) -> None:
    """Run another campusgps command in-process; its failure stops the demo with its message."""
    from campusgps.cli.main import main
    from campusgps.errors import UserError

    from campusgps.logs import step

    with step(f"running `campusgps {argv[0]}`", input=argv[1] if len(argv) > 1 else None):
        rc = main([str(a) for a in argv])
    if rc != 0:
        raise UserError(f"step `campusgps {' '.join(map(str, argv))}` failed (exit {rc}); see the message above")


def _dataset_ok(path) -> bool:
    from campusgps.dataset import Dataset

    try:
        return len(Dataset.open(path)) > 0
    except Exception:
        return False


def _model_ok(path) -> bool:
    from campusgps.localizers.base import Localizer

    try:
        return path.is_file() and bool(Localizer.read_metadata(path).get("method"))
    except Exception:
        return False


def run(args) -> int:
    import json
    import time
    from pathlib import Path

    from campusgps.dataset import Dataset
    from campusgps.errors import UserError

    t_start = time.perf_counter()
    out = Path(args.out)
    preset = PRESETS[args.preset]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise UserError(f"--methods: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(METHODS)}")
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / "demo.json"
    prev = json.loads(stamp.read_text()) if stamp.exists() else {}
    if prev and (prev.get("preset"), prev.get("seed")) != (args.preset, args.seed):
        raise UserError(f"{out} holds a demo made with --preset {prev.get('preset')} --seed {prev.get('seed')}; "
                        f"use another --out or delete {out}")
    stamp.write_text(json.dumps({"preset": args.preset, "seed": args.seed}) + "\n")
    sim, data, models, evals = out / "sim", out / "data", out / "models", out / "eval"
    timings: dict[str, float] = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        fn()
        timings[name] = round(time.perf_counter() - t0, 1)

    # 1. synth
    truth = sim / "truth.csv"
    if truth.is_file() and (sim / "photos").is_dir() and (sim / "queries").is_dir():
        _step("synth", f"reusing {sim}")
    else:
        _step("synth", f"rendering the {args.preset} campus into {sim}")
        timed("synth", lambda: _call(["synth", sim, "--preset", args.preset, "--seed", args.seed,
                                      *(["--overwrite"] if sim.exists() else []), *preset["synth"]]))
    # 2. ingest (ingest itself resumes an interrupted run)
    mapping, queries = data / "mapping", data / "queries"
    for name, src, dst in (("mapping", sim / "photos", mapping), ("queries", sim / "queries", queries)):
        done = dst / "ingest_run.json"
        if done.exists() and _dataset_ok(dst):
            _step("ingest", f"reusing {dst}")
        else:
            _step("ingest", f"{src} -> {dst}")
            timed(f"ingest {name}", lambda src=src, dst=dst: _call(["ingest", src, "--out", dst]))
    # 3. split the mapping session; the query session is the test set
    if (Dataset.open(mapping).manifest["split"] == "train").any():
        _step("split", f"reusing the split of {mapping}")
    else:
        _step("split", f"{mapping} (--test 0: the query session is the test set)")
        timed("split", lambda: _call(["split", mapping, "--test", "0", "--seed", args.seed]))
    # 4. train
    models.mkdir(exist_ok=True)
    for m in methods:
        path = models / f"{m}.cgps"
        if _model_ok(path):
            _step("train", f"reusing {path}")
            continue
        _step("train", f"{m} -> {path}")
        timed(f"train {m}", lambda m=m, path=path: _call(["train", mapping, "--method", m, "--out", path,
                                                          *preset["train"].get(m, [])]))
    # 5. evaluate on the query session against the true positions
    from campusgps.evaluation.evaluate import load_evaluation, run_evaluation, write_outputs

    results = {}
    for m in methods:
        path, edir = models / f"{m}.cgps", evals / m
        mj = edir / "metrics.json"
        if mj.exists() and (edir / "report.html").exists() and mj.stat().st_mtime >= path.stat().st_mtime:
            _step("evaluate", f"reusing {edir}")
            results[m] = load_evaluation(edir)
            continue
        _step("evaluate", f"{m} on {queries} vs {truth}")

        def ev(m=m, path=path, edir=edir):
            res = run_evaluation(path, queries, "all", truth, reference=mapping,
                                 robustness_n=preset["robustness_n"], progress=True)
            res.metrics["model"] = path.name
            write_outputs(res, edir, model_name=path.name,
                          run_info={"model": str(path), "dataset": str(queries), "split": "all", "truth": str(truth),
                                    "reference": str(mapping)})
            results[m] = res
        timed(f"evaluate {m}", ev)
    # 6. compare
    from campusgps.cli.compare import format_table
    from campusgps.evaluation.compare import write_compare

    df = write_compare(results, out / "compare")
    total = time.perf_counter() - t_start
    (out / "timings.json").write_text(json.dumps({**timings, "total_s": round(total, 1)}, indent=2) + "\n")
    print(f"\ncampusgps demo ({args.preset} campus, seed {args.seed}): "
          f"{len(Dataset.open(mapping))} mapping photos, {len(Dataset.open(queries))} query photos")
    print(format_table(df, "truth_"))
    print(f"\nreports: {evals / methods[0] / 'report.html'}" +
          "".join(f"\n         {evals / m / 'report.html'}" for m in methods[1:]))
    print(f"compare: {out / 'compare' / 'compare.html'}")
    print(f"done in {total:.0f} s")
    return 0
