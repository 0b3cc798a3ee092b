"""campusgps audit MODEL DATASET --out DIR [--worst K]"""
from __future__ import annotations

HELP = "worst predictions for review: audit.html + audit.csv to fill in (active learning)"
DESCRIPTION = """Find the photos whose labels a model disagrees with most, for a person to review.

Every photo of DATASET is located and ranked by the distance between its label and the prediction. Training
photos are located out of fold (--cross-fit K: the method is refitted K times, each time without a part of the
training photos), so a wrong label cannot hide behind a model that memorised it.

Writes DIR/audit.html (each case: the photo, its label and prediction on a map, the training photos nearest to
its label and the model's matches) and DIR/audit.csv with columns
  id,file,label_lat,label_lon,pred_lat,pred_lon,error_m,radius_m,decision,new_lat,new_lon,note
Fill `decision` (relabel with new_lat/new_lon, keep, move_to_train, drop) and apply it with
  campusgps split DATASET --apply-audit DIR/audit.csv
then retrain.

examples:
  campusgps audit model.cgps campus_ds --out review/ --worst 30
  campusgps audit model.cgps campus_ds --out review/ --cross-fit 0    # faster: use the model as it is
"""


def add_arguments(p):
    p.add_argument("model", metavar="MODEL", help="model bundle written by `campusgps train`")
    p.add_argument("dataset", metavar="DATASET", help="dataset folder written by `campusgps ingest`")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--worst", type=int, default=20, metavar="K", help="how many photos to list (default 20)")
    p.add_argument("--split", default="all", choices=["all", "train", "val", "test"],
                   help="which photos to audit (default: all)")
    p.add_argument("--cross-fit", type=int, default=3, metavar="K",
                   help="folds for out-of-fold predictions of training photos (default 3; 0: use the model as is)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)


def run(args) -> int:
    from pathlib import Path

    from campusgps.evaluation.audit import audit

    from campusgps.logs import step

    with step("auditing labels", input=f"{args.model} on {args.dataset}"):
        rows = audit(args.model, args.dataset, args.out, worst=args.worst, split=args.split,
                     cross_fit=args.cross_fit, seed=args.seed, batch_size=args.batch_size)
    if len(rows):
        print(f"{len(rows)} photos to review; worst: {rows['file'].iloc[0]} ({rows['error_m'].iloc[0]:.1f} m "
              f"between label and prediction)")
    print(f"review: {Path(args.out) / 'audit.html'}")
    print(f"then fill the decision column of {Path(args.out) / 'audit.csv'} and run "
          f"`campusgps split {args.dataset} --apply-audit {Path(args.out) / 'audit.csv'}`")
    return 0
