"""``campusgps index``: inspect or extend the reference index of a retrieval/hybrid model without retraining."""
from __future__ import annotations

import json
from pathlib import Path

HELP = "add newly ingested mapping photos to a retrieval/hybrid model (no retraining), or show its index"
DESCRIPTION = """\
Extend the reference index of a retrieval or hybrid model bundle with new mapping photos, e.g. a place the
model has never seen ("blind spot"), without a new training run. The photos must be ingested first
(`campusgps ingest SRC --out DATASET`) so they carry labels; their descriptors (and, for hybrid, local
features and thumbnails) are computed with the model's own backbone and projection and appended.

  campusgps index add model.cgps new_dataset/                 # every photo of an ingested dataset
  campusgps index add model.cgps ds/images/ab12.jpg ...       # chosen photos of an ingested dataset
  campusgps index add model.cgps new_dataset/ --out model2.cgps
  campusgps index info model.cgps
"""


def add_arguments(p):
    sub = p.add_subparsers(dest="index_cmd", metavar="SUBCOMMAND")
    a = sub.add_parser("add", help="append ingested photos to the model's reference index",
                       description="Append ingested mapping photos (dataset folders, or image files inside one) "
                                   "to a retrieval/hybrid model's reference index.")
    a.add_argument("model", metavar="MODEL", help="retrieval or hybrid model bundle (updated in place unless --out)")
    a.add_argument("paths", metavar="PATH", nargs="+",
                   help="ingested DATASET folder(s), or image files stored in one (DATASET/images/<id>.jpg)")
    a.add_argument("--out", metavar="MODEL", default=None, help="write the extended model here instead")
    a.add_argument("--split", default="all", choices=["all", "train", "val", "test"],
                   help="which rows of a dataset folder to add (default: all)")
    i = sub.add_parser("info", help="print the model's reference index summary as JSON")
    i.add_argument("model", metavar="MODEL")


def _datasets_from_paths(paths, split: str):
    """Group PATHs into datasets (folder -> its rows; image file -> its manifest row)."""
    from campusgps.dataset import MANIFEST, Dataset
    from campusgps.errors import UserError

    groups: dict[Path, set | None] = {}
    for raw in paths:
        p = Path(raw)
        if p.is_dir() and (p / MANIFEST).exists():
            groups[p.resolve()] = None
            continue
        if p.is_file():
            root = next((q for q in p.resolve().parents if (q / MANIFEST).exists()), None)
            if root is not None:
                sel = groups.setdefault(root, set())
                if sel is not None:
                    sel.add(p.resolve())
                continue
        if not p.exists():
            raise UserError(f"{p}: no such file or folder")
        raise UserError(f"{p}: not an ingested dataset (no {MANIFEST}); new photos need labels, so ingest them "
                        f"first: `campusgps ingest {p} --out NEW_DATASET`, then `campusgps index add MODEL NEW_DATASET`")
    out = []
    for root, files in groups.items():
        ds = Dataset.open(root)
        if files is None:
            ds = ds.subset(split)
        else:
            stored = [(root / f).resolve() for f in ds.manifest["file"]]
            keep = [s in files for s in stored]
            missing = files - set(stored)
            if missing:
                raise UserError(f"{sorted(missing)[0]}: not a stored image of dataset {root} (use the files under "
                                f"{root}/images/ or pass the dataset folder)")
            ds = ds.subset("all")
            ds.manifest = ds.manifest[keep].reset_index(drop=True)
        out.append(ds)
    return out


def run(args) -> int:
    from campusgps.errors import UserError
    from campusgps.localizers.base import Localizer

    if not getattr(args, "index_cmd", None):
        raise UserError("say what to do: `campusgps index add MODEL PATH...` or `campusgps index info MODEL`")
    from campusgps.errors import BundleError
    from campusgps.localizers.retrieval import RetrievalLocalizer

    from campusgps.logs import step

    with step("loading the model", input=args.model):
        loc = Localizer.load(args.model)
    if not isinstance(loc, RetrievalLocalizer):
        raise BundleError(f"{args.model}: a {loc.method!r} model has no reference index; `index` works on "
                          f"retrieval and hybrid models (`campusgps train DATASET --method retrieval`)")
    if args.index_cmd == "info":
        print(json.dumps({"method": loc.method, "n_references": len(loc.ref_ids), "dim": int(loc.ref_desc.shape[1]),
                          "index": loc.index_summary(),
                          "additions": loc.info.get("index_additions", []), "fusion": loc.fusion,
                          "calibration": loc.calib}, indent=2))
        return 0
    total = 0
    for ds in _datasets_from_paths(args.paths, args.split):
        if len(ds) == 0:
            raise UserError(f"{ds.root}: no photos to add (split {args.split!r} is empty)")
        with step("adding references", input=ds.root):
            n = loc.add_references(ds)
        print(f"{ds.root}: added {n} of {len(ds)} photos" + (" (the rest were already indexed)" if n < len(ds) else ""))
        total += n
    out = Path(args.out or args.model)
    loc.save(out)
    print(f"{out}: {len(loc.ref_ids)} references ({total} new)")
    return 0
