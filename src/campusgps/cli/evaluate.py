"""campusgps evaluate MODEL DATASET --out DIR [--split test] [--truth CSV]"""
from __future__ import annotations

HELP = "score a model on a dataset: metrics.json, predictions.csv, report.html"
DESCRIPTION = """Score a trained model on an ingested dataset.

Writes DIR/metrics.json (median/mean/percentile errors, accuracy at 5/10/20/50 m, the mean-position
baseline, timing, breakdowns by condition and area, robustness), DIR/predictions.csv (one row per photo)
and DIR/report.html (one self-contained page: tables, error curves, maps, worst cases).

Errors are measured against the dataset's labels; with --truth CSV (a file-name column plus
true_lat,true_lon, matched by base name, e.g. synth's OUT/truth.csv) also against the true positions.
metrics.json's reference_labels says how far the model's mapping photos' own GPS labels are from the truth
(when the truth CSV covers them) or how accurate their phones claimed to be: the floor under the median.

examples:
  campusgps evaluate model.cgps campus_ds --out eval/
  campusgps evaluate model.cgps queries_ds --split all --truth sim/truth.csv --reference campus_ds --out eval/
  campusgps evaluate model.cgps my_photos_ds --split all --cross-fit 5 --out eval/   # small own sets

--cross-fit K scores every photo of the split out of fold: the method (with the model's options) is refitted
K times, each time without a fifth (K=5) of the photos, whole location groups at a time (photos within 5 m of
each other), and locates the photos it left out; the other photos of the split train. The mean-position
baseline is computed the same way. This is what a localizer trained on a few hundred photos is worth on
photos of new spots; it takes K trainings. The robustness table is skipped.
"""


def add_arguments(p):
    p.add_argument("model", metavar="MODEL", help="model bundle written by `campusgps train`")
    p.add_argument("dataset", metavar="DATASET", help="dataset folder written by `campusgps ingest`")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--split", default="test", choices=["test", "val", "train", "all"],
                   help="which samples to score; `all` for a separately ingested query session (default: test)")
    p.add_argument("--truth", metavar="CSV", help="CSV with a file-name column and true_lat,true_lon (by base name)")
    p.add_argument("--reference", metavar="DATASET",
                   help="the dataset the model was trained on, for the mean-position baseline and training-photo "
                        "thumbnails (default: found from the model, else DATASET's train split)")
    p.add_argument("--robustness-n", type=int, default=100, metavar="N",
                   help="photos in the robustness subset (default 100; 0 skips the robustness table)")
    p.add_argument("--worst", type=int, default=12, metavar="K", help="worst predictions shown in the report (12)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="seed of the robustness subset and of the cross-fit folds")
    p.add_argument("--cross-fit", type=int, default=0, metavar="K",
                   help="out-of-fold scores: refit the method K times without each photo's location group (e.g. 5)")


def run(args) -> int:
    from pathlib import Path

    from campusgps.errors import UserError
    from campusgps.evaluation.evaluate import evaluate
    from campusgps.evaluation.report import fmt_m, fmt_num, fmt_pct

    if args.robustness_n < 0 or args.worst < 0 or args.batch_size < 1:
        raise UserError("--robustness-n and --worst must be >= 0 and --batch-size >= 1")
    if args.cross_fit == 1 or args.cross_fit < 0:
        raise UserError(f"--cross-fit {args.cross_fit}: use at least 2 folds (0: score the model as it is)")
    from campusgps.logs import step

    with step("evaluating", input=f"{args.model} on {args.dataset}"):
        m = evaluate(args.model, args.dataset, split=args.split, truth=args.truth, out_dir=args.out,
                     robustness=args.robustness_n > 0, reference=args.reference, robustness_n=args.robustness_n,
                     worst=args.worst, batch_size=args.batch_size, seed=args.seed, model_name=Path(args.model).name,
                     cross_fit=args.cross_fit)
    line = (f"{m['n']} photos: median {fmt_m(m['median_m'])}{_interval(m)}, P90 {fmt_m(m['p90_m'])}, "
            f"within 20 m {fmt_pct(m['acc_20m'])} vs labels")
    if "vs_truth" in m:
        v = m["vs_truth"]
        line += f"; median {fmt_m(v['median_m'])}{_interval(v)}, within 20 m {fmt_pct(v['acc_20m'])} vs truth"
    line += f" (mean-position baseline {fmt_m(m['baseline_mean_predictor_median_m'])})"
    if args.cross_fit:
        line += f"; out of fold, {args.cross_fit} refits"
    print(line)
    c = (m.get("vs_truth") or m).get("confidence") or {}
    if c.get("available"):
        print(f"confidence: AUC {fmt_num(c.get('auc'))}, calibration error {fmt_num(c.get('ece'), 3)}, answer or an "
              f"alternative within 20 m {fmt_pct(c.get('top3_recall'))} vs {c.get('against')}")
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0


def _interval(block: dict) -> str:
    """The median's 90 % bootstrap interval over the photos as ' [lo-hi]' (empty when there is none)."""
    iv = block.get("median_interval")
    return f" [{iv['lo_m']:.1f}-{iv['hi_m']:.1f}]" if iv else ""
