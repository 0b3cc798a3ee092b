"""``campusgps split DATASET``: location-grouped train/val/test split; ``--apply-audit`` applies review decisions."""
from __future__ import annotations

import argparse

HELP = "location-grouped train/val/test split (no spot shared between splits), or apply an audit CSV"
DESCRIPTION = """\
Assign every photo of DATASET to train, val or test. Photos within --group-radius-m of each other
(transitively) form one group, and a group is never split, so a test photo never has a near-twin in train.
The same --seed gives the same split. Use --test 0 when a separately ingested capture session is the test set
(evaluate it with `campusgps evaluate MODEL OTHER_DATASET --split all`).

--apply-audit AUDIT.csv applies the decisions column of `campusgps audit` output instead of splitting:
  relabel (new_lat,new_lon become the label), keep, move_to_train, drop (removed; listed in rejected.csv
  as dropped_by_audit), or empty (nothing).

examples:
  campusgps split data/campus
  campusgps split data/campus --val 0.2 --test 0 --group-radius-m 8 --seed 1
  campusgps split data/campus --apply-audit review/audit.csv
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from campusgps.configs import add_dataclass_arguments
    from campusgps.ingest.split import SplitConfig

    p.add_argument("dataset", metavar="DATASET", help="dataset folder written by `campusgps ingest`")
    p.add_argument("--apply-audit", metavar="CSV", help="apply the decisions in an audit.csv (does not re-split)")
    add_dataclass_arguments(p, SplitConfig, "split")


def run(args: argparse.Namespace) -> int:
    from campusgps.configs import from_args
    from campusgps.dataset import Dataset
    from campusgps.ingest.split import SplitConfig, apply_audit, split_dataset

    from campusgps.logs import step

    with step("opening the dataset", input=args.dataset):
        ds = Dataset.open(args.dataset)
    if args.apply_audit:
        with step("applying the audit", input=args.apply_audit):
            res = apply_audit(ds, args.apply_audit)
        for line in res.summary_lines():
            print(line)
        counts = ds.manifest["split"].replace("", "unassigned").value_counts().to_dict()
        print("dataset now: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        return 0
    with step("splitting", input=args.dataset):
        res = split_dataset(ds, from_args(SplitConfig, args))
    for line in res.summary_lines():
        print(line)
    return 0
