"""campusgps compare MODEL... DATASET --out DIR [--truth CSV]"""
from __future__ import annotations

HELP = "several models on the same data, one run: compare.csv + compare.html"
DESCRIPTION = """Evaluate several models on the same photos in one run.

Writes DIR/compare.csv (one row per model plus the mean-position baseline: median/mean/P90/max error,
accuracy at 5/10/20/50 m, radius coverage, confidence AUC/ECE, top-3 recall within 20 m, seconds per
photo; truth_* columns with --truth; vs_first_* columns: each model's median and share within 20 m minus
the first model's, on the same photos, with a 90 % paired-bootstrap interval) and DIR/compare.html (the
table, overlaid error curves, and which differences to the first model are more than noise).

examples:
  campusgps compare regression.cgps retrieval.cgps campus_ds --out cmp/
  campusgps compare *.cgps queries_ds --split all --truth sim/truth.csv --reference campus_ds --out cmp/
"""


def add_arguments(p):
    p.add_argument("paths", nargs="+", metavar="MODEL... DATASET",
                   help="one or more model bundles, then the dataset folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--split", default="test", choices=["test", "val", "train", "all"],
                   help="which samples to score; `all` for a separately ingested query session (default: test)")
    p.add_argument("--truth", metavar="CSV", help="CSV with a file-name column and true_lat,true_lon (by base name)")
    p.add_argument("--reference", metavar="DATASET",
                   help="the dataset the models were trained on (for the mean-position baseline)")
    p.add_argument("--batch-size", type=int, default=32)


def run(args) -> int:
    from pathlib import Path

    from campusgps.errors import UserError
    from campusgps.evaluation.compare import compare

    if len(args.paths) < 2:
        raise UserError("give one or more MODEL bundles followed by the DATASET folder")
    *models, dataset = args.paths
    if Path(dataset).suffix == ".cgps" or (Path(dataset).is_file()):
        raise UserError(f"the last argument must be the dataset folder, got the file {dataset}")
    from campusgps.logs import step

    with step("comparing models", input=dataset):
        df = compare(models, dataset, args.out, split=args.split, truth=args.truth, reference=args.reference,
                     batch_size=args.batch_size)
    p = "truth_" if "truth_median_m" in df.columns else ""
    print(format_table(df, p))
    print(f"report: {Path(args.out) / 'compare.html'}")
    return 0


def format_table(df, p: str = "") -> str:
    from campusgps.evaluation.report import fmt_m, fmt_num, fmt_pct

    what = "vs truth" if p else "vs labels"
    hdr = ("model", f"median {what}", "vs first [90 %]", "P90", "<=20 m", "conf AUC", "top-3 <=20 m", "s/photo")
    rows = [hdr] + [(str(r["model"]), fmt_m(r[f"{p}median_m"]), _vs_first(r), fmt_m(r[f"{p}p90_m"]),
                     fmt_pct(r[f"{p}acc_20m"]), fmt_num(r.get("confidence_auc")), fmt_pct(r.get("top3_recall")),
                     "-" if r["seconds_per_image"] is None or r["seconds_per_image"] != r["seconds_per_image"]
                     else f"{r['seconds_per_image']:.3f}") for r in df.to_dict("records")]
    w = [max(len(r[i]) for r in rows) for i in range(len(hdr))]
    return "\n".join("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)) for r in rows)


def _vs_first(r: dict) -> str:
    """Median minus the first model's, with its paired-bootstrap interval ("-" for the first and the baseline)."""
    d, lo, hi = (r.get(f"vs_first_median_{x}") for x in ("diff", "lo", "hi"))
    if d is None or d != d:
        return "-"
    from campusgps.evaluation.metrics import format_difference

    return format_difference({"diff": d, "lo": lo, "hi": hi})
