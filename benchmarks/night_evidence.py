"""Where do the hybrid's night answers come from, and why are the wrong ones wrong? (issue 13, night target)

    .venv/bin/python benchmarks/night_evidence.py --work /work/data2 --seed 1 --model HYBRID.cgps

For every night query of a simulated campus (truth known, including each mapping photo's true position,
heading and condition): the hybrid's error; in its 40-photo shortlist, whether the right reference with the
most inliers is a night photo; whether a *co-visible* night mapping photo exists (true position within 20 m,
heading within 45 degrees), how the global descriptor ranks it among the dark mapping photos (mean luminance
< 40), and how many inliers it gets when verified directly, against the best wrong reference of the shortlist.
Prints medians for right and wrong answers and writes benchmarks/results/night_evidence.json (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from common import ROOT, simulated_campus
from confidence import prepare
from shortlist_night import dark_references

COVIS_M, COVIS_DEG, RIGHT_M = 20.0, 45.0, 20.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/cgps-bench-localizers")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", required=True, help="a fitted hybrid of this campus")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "night_evidence.json"))
    args = ap.parse_args()
    os.environ.setdefault("CAMPUSGPS_PROGRESS", "0")
    from campusgps import Localizer

    ds, qds, q_en, tq = prepare(Path(args.work), args.seed)  # the small campus of this seed and its query truth
    loc = Localizer.load(args.model)
    truth = pd.read_csv(simulated_campus(Path(args.work), "small", args.seed, queries=False)[0] / "truth.csv")
    truth["base"] = truth["file"].map(lambda f: Path(f).name)
    src = ds.manifest.set_index("id").loc[loc.ref_ids, "source_path"].map(lambda f: Path(str(f)).name)
    tr = truth.set_index("base").loc[src.to_numpy()]  # the truth of every reference, in the model's order
    r_en = np.stack(ds.frame.to_local(tr["true_lat"].to_numpy(), tr["true_lon"].to_numpy()), 1)
    r_night = (tr["condition"] == "night").to_numpy()
    r_head, q_head = tr["heading_deg"].to_numpy(), tq["heading_deg"].to_numpy()
    dark = dark_references(loc, ds)

    night_q = np.nonzero((tq["condition"] == "night").to_numpy())[0]
    images = [qds.load_image(int(j), max_side=loc.input_max_side()) for j in night_q]
    pred = loc.predict_arrays(images)
    q_desc = loc.proj(loc._raw_from_images(images))
    S, I = loc._search(q_desc, loc.cfg.shortlist, use_aug=loc._dark_queries(images))
    rows = []
    for k, (j, img) in enumerate(zip(night_q, images)):
        err = float(np.hypot(pred.east[k] - q_en[j, 0], pred.north[k] - q_en[j, 1]))
        nkp, inl, _ = loc._verify_geometry(img, S[k], I[k], geometry=False)
        inl, idx = np.asarray(inl), I[k]
        ok = idx >= 0
        d_sl = np.hypot(*(r_en[idx[ok]] - q_en[j]).T)
        right_sl = d_sl <= RIGHT_M
        best_right = idx[ok][right_sl][np.argmax(inl[ok][right_sl])] if right_sl.any() else -1
        dist = np.hypot(*(r_en - q_en[j]).T)
        dh = np.abs((r_head - q_head[j] + 180) % 360 - 180)
        covis_night = np.nonzero((dist <= COVIS_M) & (dh <= COVIS_DEG) & r_night)[0]
        rank = {int(x): r for r, x in enumerate(dark[np.argsort(-(loc.ref_desc[dark] @ q_desc[k]))])}
        cv_inl = -1
        if len(covis_night):
            _, ci, _ = loc._verify_geometry(img, np.ones(len(covis_night), np.float32), covis_night, geometry=False)
            cv_inl = int(np.max(ci))
        rows.append({"right": err <= RIGHT_M, "error_m": err, "keypoints": int(nkp),
                     "best_right_ref_is_night": bool(best_right >= 0 and r_night[best_right]),
                     "has_right_ref_in_shortlist": bool(best_right >= 0),
                     "covisible_night_photos": int(len(covis_night)),
                     "covisible_night_best_dark_rank": min((rank.get(int(x), 10 ** 6) for x in covis_night),
                                                           default=None),
                     "covisible_night_best_inliers": cv_inl if len(covis_night) else None,
                     "best_wrong_inliers_in_shortlist": int(inl[ok][~right_sl].max()) if (~right_sl).any() else 0})
    df = pd.DataFrame(rows)
    summary = {}
    for name, g in df.groupby("right"):
        cv = g[g["covisible_night_photos"] > 0]
        summary["right" if name else "wrong"] = {
            "n": int(len(g)), "median_error_m": float(g["error_m"].median()),
            "median_keypoints": float(g["keypoints"].median()),
            "best_right_ref_is_night": int(g["best_right_ref_is_night"].sum()),
            "with_right_ref_in_shortlist": int(g["has_right_ref_in_shortlist"].sum()),
            "with_covisible_night_photo": int(len(cv)),
            "covisible_night_median_dark_rank": float(cv["covisible_night_best_dark_rank"].median()) if len(cv) else None,
            "covisible_night_rank_over_100": int((cv["covisible_night_best_dark_rank"] > 100).sum()),
            "covisible_night_median_inliers": float(cv["covisible_night_best_inliers"].median()) if len(cv) else None,
            "median_best_wrong_inliers": float(g["best_wrong_inliers_in_shortlist"].median())}
    print(f"seed {args.seed}: {len(df)} night queries, {len(dark)} dark mapping photos")
    for k, v in summary.items():
        print(f"  {k:<6} " + ", ".join(f"{a} {b:.1f}" if isinstance(b, float) else f"{a} {b}" for a, b in v.items()))
    out = {"command": "python benchmarks/night_evidence.py " + " ".join(sys.argv[1:]), "seed": args.seed,
           "n_night_queries": int(len(df)), "n_dark_mapping_photos": int(len(dark)), "summary": summary}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
