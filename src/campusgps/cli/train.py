"""campusgps train DATASET --method {regression,retrieval,hybrid,ensemble} --out MODEL"""
from __future__ import annotations

HELP = "train a localizer on an ingested, split dataset -> one model bundle file"
DESCRIPTION = """Train a localizer on DATASET's train split (validation split for early stopping and radius
calibration) and write ONE model bundle file MODEL (safetensors + JSON metadata), plus MODEL.run.json
(the configuration, versions and training summary).

Methods:
  regression  ImageNet CNN + MLP head predicting the position (frozen backbone on cached features by default)
  retrieval   nearest reference photos by global descriptor, fused into a position
  hybrid      retrieval + local-feature geometric verification
  ensemble    combination of the above

Each method's options are listed below in its own group; only the chosen method's options may be given.
Features are cached under DATASET/.cache/features, so a second training (or another method) reuses them.
Training writes a checkpoint MODEL.ckpt every epoch; after an interruption, add --resume to continue.
With --engine ray the per-photo work (decoding, backbone features of every photo and augmented view, i.e.
what fills the feature cache) runs as Ray Data jobs on a local Ray or a cluster (--ray-address); fitting
the heads, the index and the calibration stays in this process. Retrieval and hybrid bundles index their
references with --index (auto: exact flat search up to 50,000 references, compressed ivfpq above).

examples:
  campusgps train campus_ds --method regression --out model.cgps
  campusgps train campus_ds --method regression --finetune top-2 --epochs 40 --out model_top2.cgps
  campusgps train campus_ds --method regression --out model.cgps --resume
  campusgps train city_ds --method retrieval --index ivfpq --engine ray --ray-address auto --out city.cgps
  campusgps train campus_ds --method hybrid --backbone onnx:dinov2_s.onnx --out model.cgps
      (any ONNX image model; its input size/normalisation in dinov2_s.onnx.json or --backbone-opt KEY=VALUE,
       see README "Bring your own backbone")
>>>>>>> main
"""

METHODS = ("regression", "retrieval", "hybrid", "ensemble")


def _method_classes():
    """(method, class) of every method ``--method`` accepts."""
    from campusgps.localizers.base import get_localizer_class

    return [(m, get_localizer_class(m)) for m in METHODS]


def _add_method_group(p, method: str, cls) -> None:
    """One help group per method listing all of its options with ITS defaults. A flag several methods share
    (``--batch-size``) is parsed by one action, registered with the first method; the later groups show a
    help-only copy carrying their own default (argparse prints a group's ``_group_actions``)."""
    import argparse

    from campusgps.configs import add_dataclass_arguments

    scratch = argparse.ArgumentParser(add_help=False)
    add_dataclass_arguments(scratch, cls.Config, group_title=method)
    own = scratch._action_groups[-1]._group_actions  # this method's options, with this method's defaults
    add_dataclass_arguments(p, cls.Config, group_title=f"{method} options (--method {method})")
    group = p._action_groups[-1]
    registered = {a.dest: a for a in group._group_actions}
    group._group_actions[:] = [registered.get(a.dest, a) for a in own]


def add_arguments(p):
    import dataclasses

    from campusgps.engine import add_engine_arguments

    p.add_argument("dataset", metavar="DATASET", help="dataset folder written by `campusgps ingest` (and split)")
    p.add_argument("--method", default="regression", choices=list(METHODS), help="localization method (regression)")
    p.add_argument("--out", required=True, metavar="MODEL", help="model bundle file to write, e.g. model.cgps")
    add_engine_arguments(p, "per-photo feature extraction", "backbone actors")
    owners: dict[str, set[str]] = {}
    for method, cls in _method_classes():
        _add_method_group(p, method, cls)
        for f in dataclasses.fields(cls.Config):
            owners.setdefault(f.name, set()).add(method)
    p.set_defaults(_config_owners={k: sorted(v) for k, v in owners.items()})


def run(args) -> int:
    import dataclasses
    import inspect
    import json
    import sys
    import time
    from pathlib import Path

    from campusgps.configs import from_args, run_record
    from campusgps.dataset import Dataset
    from campusgps.errors import UserError
    from campusgps.localizers.base import get_localizer_class

    cls = get_localizer_class(args.method)
    mine = {f.name for f in dataclasses.fields(cls.Config)}
    owners = getattr(args, "_config_owners", {})
    alien = sorted(d for d in owners if d not in mine and getattr(args, d, None) is not None)
    if alien:
        flags = ", ".join(f"--{a.replace('_', '-')} ({'/'.join(owners[a])})" for a in alien)
        raise UserError(f"option(s) {flags} do not apply to --method {args.method}; drop them or pick the method "
                        f"they belong to (see `campusgps train --help`)")
    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as {out / 'model.cgps'}")
    overrides = {}
    if "checkpoint" in mine and not getattr(args, "checkpoint", None):
        overrides["checkpoint"] = str(out.with_name(out.name + ".ckpt"))
    cfg = from_args(cls.Config, args, **overrides)
    from campusgps.logs import step

    with step("opening the dataset", input=args.dataset):
        ds = Dataset.open(args.dataset)
    if len(ds) == 0:
        raise UserError(f"{args.dataset}: the dataset is empty; ingest photos first (`campusgps ingest SRC --out "
                        f"{args.dataset}`)")
    loc = cls(cfg)
    kw = {}
    if "progress" in inspect.signature(loc.fit).parameters:
        kw["progress"] = True
    t0 = time.time()
    with _engine(args), step(f"training {args.method}", input=args.dataset):
        loc.fit(ds, **kw)
    seconds = time.time() - t0
    loc.info.setdefault("train_seconds", seconds)
    with step("saving the model", input=out):
        loc.save(out)
    rec = run_record(cfg, command="train", method=args.method, dataset=str(Path(args.dataset).resolve()),
                     out=str(out.resolve()), seconds=round(seconds, 2), engine=getattr(args, "engine", "local"),
                     summary={k: loc.info[k] for k in ("data", "val", "calibration", "training", "backbone")
                              if k in loc.info})
    rec_path = out.with_name(out.name + ".run.json")
    rec_path.write_text(json.dumps(rec, indent=2, default=str) + "\n")
    ck = getattr(cfg, "checkpoint", None)
    if ck and Path(ck).exists():
        Path(ck).unlink()  # the bundle is complete; the checkpoint only matters for an interrupted run
    val = loc.info.get("val", {})
    msg = f"trained {args.method} on {loc.info.get('data', {}).get('n_train', len(ds))} photos in {seconds:.1f} s"
    if "median_m" in val:
        msg += f"; validation median error {val['median_m']:.1f} m"
    print(f"{msg} -> {out} (run record {rec_path.name})", file=sys.stderr)
    return 0


def _engine(args):
    """Context in which the feature cache computes through ``--engine`` (nothing changes for local)."""
    import contextlib

    from campusgps.errors import UserError

    name, address = getattr(args, "engine", "local"), getattr(args, "ray_address", None)
    if getattr(args, "workers", 0) < 0:
        raise UserError("--workers must be >= 0")
    if name == "local":
        if address:
            raise UserError("--ray-address only applies with --engine ray")
        return contextlib.nullcontext()
    from campusgps.engine import get_engine
    from campusgps.models.features import use_engine

    @contextlib.contextmanager
    def ctx():
        engine = get_engine(name, address=address, workers=args.workers)
        try:
            with use_engine(engine):
                yield engine
        finally:
            engine.close()

    return ctx()
