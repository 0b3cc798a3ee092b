"""How much of the hybrid's error is the mapping photos' own GPS error, and two attempts to average it away.

    .venv/bin/python benchmarks/label_floor.py --work /work/data2 --seed 7 [--model HYBRID.cgps] [--refine 300,all]

One fitted hybrid (``train``'s defaults; fitted and cached under WORK/models-shortlist unless ``--model``),
the campus's query session, errors against the TRUE positions. The hybrid answers with the positions of
the mapping photos it verified, so their labels' error (phone GPS, ~5 m in the simulator) is part of every
answer. Rows, each the same fitted model scored against the default on the same queries with a paired
bootstrap 90 % interval (``evaluation.metrics.paired_difference``; ``*`` when it excludes 0):

* ``true reference positions``: the references' labels replaced by where the simulator really took them
  (not available to a user: the floor the labels' noise sets);
* ``refined labels (N photos)``: every mapping photo of an even sample of N is located by the model with
  its own spot left out (the hybrid's held-out procedure), each spot's verified estimates give a median
  visual position, and a spot whose visual position lies within ``GATE_M`` of its label moves ``ALPHA`` of
  the way there (GPS errors of different spots are independent, so the visual position averages other
  spots' errors). ALPHA and GATE_M were chosen on seed 1 against the true positions;
* ``place expansion``: after verification, the photos of the spots within ``EXPAND_M`` of the three
  best-scoring candidate places (re-ranker) that the shortlist missed, at most ``EXPAND_CAP`` per place
  (most similar first), are verified too and the answer is recomputed: every candidate place is judged on
  all its nearby photos, and more labels are averaged;
* ``place expansion (density-ranked)``: the same, but the places to expand are the three best by the density
  mode's score instead of the fitted re-ranker's (so that a fit could expand its held-out photos before the
  re-ranker exists);
* ``refined labels (N photos) + place expansion``: both, the last ``--refine`` size's labels with expansion.

Prints a table and writes benchmarks/results/label_floor.json (``--out``). None of this is in the product:
this script is the record of why (see the README's benchmark table). Like shortlist_night.py it drives the
hybrid through private methods.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import ROOT
from confidence import prepare
from shortlist_night import default_hybrid, predict, print_versus, reference_rows, versus_default, write_result

ALPHA = 0.5      # share of the way from the label to the visual position (seed 1: 0.4-0.5 best)
GATE_M = 20.0    # farther apart: a look-alike or a GPS outlier, the label is kept
EXPAND_M, EXPAND_CAP, EXPAND_TOP = 15.0, 4, 3


def true_reference_positions(loc, ds, sim: Path) -> np.ndarray:
    """Where the simulator took every reference photo (east/north in the model's frame)."""
    truth = pd.read_csv(sim / "truth.csv")
    truth.index = truth["file"].map(lambda f: Path(f).name)
    base = ds.manifest["source_path"].map(lambda f: Path(str(f)).name).to_numpy()[reference_rows(loc, ds)]
    e, n = ds.frame.to_local(truth.loc[base, "true_lat"].to_numpy(), truth.loc[base, "true_lon"].to_numpy())
    return np.stack([e, n], 1)


def with_positions(loc, ref_en: np.ndarray):
    """A copy of the fitted hybrid whose references lie at ``ref_en`` (spots recomputed)."""
    out = copy.copy(loc)
    out.ref_en = np.asarray(ref_en, dtype=loc.ref_en.dtype)
    out._refresh_spots()
    return out


def visual_positions(loc, ds, n: int):
    """(spot id, visual position, verified) of ``n`` evenly sampled mapping photos, each located with its
    own spot left out."""
    cfg = loc.cfg
    loc.cfg = copy.copy(cfg)
    loc.cfg.calib_max = n
    try:
        held = loc._held_out_mapped(ds.training_rows())
    finally:
        loc.cfg = cfg
    records, _, retr, matches = loc._verify_held_out(held)
    records = loc._with_geometry(records, matches)
    SL = loc.cfg.shortlist
    est, ok = [], []
    for (s, i, inl, nkp, geo), r_retr in zip(records, retr):
        r = loc._answer(s[:SL], i[:SL], inl, geo, nkp)[0] if nkp >= 8 else None
        est.append(r.fused.center if r is not None else r_retr)
        ok.append(r is not None)
    return held.groups, np.array(est), np.array(ok)


def refined_positions(loc, spots_held, est, ok):
    """Reference labels moved ``ALPHA`` of the way to their spot's median verified visual position (within
    ``GATE_M``); returns (labels, number of spots moved)."""
    spot, pos = loc._spots()
    ref_en = np.array(loc.ref_en, dtype=np.float64)
    moved = 0
    for s in np.unique(spots_held[ok]):
        v = np.median(est[ok & (spots_held == s)], axis=0)
        members = spot == s
        centre = pos[members][0]
        if np.hypot(*(v - centre)) <= GATE_M:
            ref_en[members] += ALPHA * (v - centre)
            moved += 1
    return ref_en, moved


def predict_expanded(loc, images, raw, rank: str = "reranker"):
    """East/north answers with place expansion (module docstring); retrieval's answer where nothing verifies.
    ``rank``: which candidate places are expanded, the re-ranker's best (``reranker``) or the density mode's
    (``density``: the candidates' ``rel_density``, which needs no fitted re-ranker)."""
    from campusgps.localizers.hybrid.rerank import RERANK_FEATURES, spot_candidates
    from campusgps.localizers.hybrid.verification import match_shortlist, shortlist_geometry

    qd = loc.proj(raw)
    S, I = loc._search(qd, loc.cfg.shortlist, use_aug=loc._dark_queries(images))
    out = loc._predict_from_search(S, I, raw)
    c, h = loc.cfg, loc.hybrid
    spot, pos = loc._spots()
    answers, n_extra = np.stack([out.east, out.north], 1), []
    for j, img in enumerate(images):
        s, i = S[j], I[j]
        q = loc._extract_query(img)
        if len(q) < 8:
            n_extra.append(0)
            continue
        mi = loc._min_inliers(len(q), h["min_inliers"])
        inl, pairs = match_shortlist(q, loc.lf, i, c.ratio, c.ransac)
        geo = shortlist_geometry(q, loc.lf, i, inl, pairs, mi)
        cand = spot_candidates(s, i, inl, geo, len(q), mi, spot, pos, h["power"], h["bandwidth_m"], h.get("agg", "max"))
        new: list[int] = []
        if cand is not None and (loc.reranker is not None or rank == "density"):
            have = {int(x) for x in i if x >= 0}
            score = (cand.X[:, RERANK_FEATURES.index("rel_density")] if rank == "density"
                     else loc.reranker.scores(cand))
            for k in np.argsort(-score, kind="stable")[:EXPAND_TOP]:
                near = [int(x) for x in np.nonzero(np.hypot(*(pos - cand.pos[k]).T) <= EXPAND_M)[0]
                        if int(x) not in have and int(x) not in new]
                new += [near[x] for x in np.argsort(-(loc.ref_desc[near] @ qd[j]))[:EXPAND_CAP]]
        if new:
            new_i = np.array(new)
            inl2, pairs2 = match_shortlist(q, loc.lf, new_i, c.ratio, c.ransac)
            s = np.concatenate([s, (loc.ref_desc[new_i] @ qd[j]).astype(s.dtype)])
            i, inl = np.concatenate([i, new_i]), np.concatenate([inl, inl2])
            geo = np.concatenate([geo, shortlist_geometry(q, loc.lf, new_i, inl2, pairs2, mi)])
        n_extra.append(len(new))
        r = loc._answer(s, i, inl, geo, len(q))[0]
        if r is not None:
            answers[j] = r.fused.center
    return answers, float(np.mean(n_extra))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/cgps-bench-localizers")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--model", help="a fitted hybrid of this campus (default: fit one, cached under WORK)")
    ap.add_argument("--refine", default="300,all",
                    help="comma-separated sample sizes for the refined-labels rows ('all': every mapping photo)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "label_floor.json"))
    args = ap.parse_args()
    os.environ.setdefault("CAMPUSGPS_PROGRESS", "0")
    t0 = time.perf_counter()
    work = Path(args.work)
    ds, qds, truth_en, tq = prepare(work, args.seed)
    night = (tq["condition"] == "night").to_numpy()
    loc, path = default_hybrid(work, args.seed, ds, args.model)
    images = [qds.load_image(i, max_side=loc.input_max_side()) for i in range(len(qds))]
    raw = loc._raw_from_images(images)
    true_ref = true_reference_positions(loc, ds, work / f"sim-small-{args.seed}")

    def spot_error(model) -> float:  # median distance of the references' spot positions from the truth
        return float(np.median(np.hypot(*(model._spots()[1] - true_ref).T)))

    rows, errs = [], {}

    def add(name, east_north, model, t, **extra):
        errs[name] = np.hypot(*(np.asarray(east_north) - truth_en).T)
        rows.append({"variant": name, "reference_error_median_m": spot_error(model), "s": time.perf_counter() - t,
                     **extra})
        r = rows[-1]
        print(f"  {name:<32} median {np.median(errs[name]):6.2f}  references {r['reference_error_median_m']:.2f} m"
              f"  ({r['s']:.0f} s)", flush=True)

    def answers(model):
        p = predict(model, images, raw)
        return np.stack([p.east, p.north], 1)

    t = time.perf_counter()
    add("default", answers(loc), loc, t)
    t = time.perf_counter()
    exact = with_positions(loc, true_ref)
    add("true reference positions", answers(exact), exact, t)
    for n in [x.strip() for x in args.refine.split(",") if x.strip()]:
        t = time.perf_counter()
        k = len(loc.ref_en) if n == "all" else int(n)  # held-out photos come from the training rows only
        spots_held, est, ok = visual_positions(loc, ds, k)
        ref_en, moved = refined_positions(loc, spots_held, est, ok)
        fit_extra = time.perf_counter() - t
        refined = with_positions(loc, ref_en)
        add(f"refined labels ({len(ok)} photos)", answers(refined), refined, t, spots_moved=moved,
            extra_fit_s=fit_extra, photos_verified=int(ok.sum()), photos=int(len(ok)))
    expansions = [("place expansion", loc, "reranker"), ("place expansion (density-ranked)", loc, "density")]
    if args.refine.strip():  # do the two ways of averaging label noise stack? (the last refined model)
        expansions.append((f"refined labels ({len(ok)} photos) + place expansion", refined, "reranker"))
    for name, model, rank in expansions:
        t = time.perf_counter()
        east_north, n_extra = predict_expanded(model, images, raw, rank)
        add(name, east_north, model, t, extra_pairs_per_query=n_extra)

    base = errs["default"]
    for r in rows:
        e = errs[r["variant"]]
        r.update({"median_m": float(np.median(e)), "p90_m": float(np.percentile(e, 90)),
                  "within_20m": float((e <= 20).mean()), "median_of_right_m": float(np.median(e[e <= 20])),
                  "night_median_m": float(np.median(e[night]))})
        if r["variant"] != "default":
            r["vs_default"] = versus_default(base, e, night)
    print(f"\nseed {args.seed}: {len(base)} queries ({int(night.sum())} night); errors vs truth; with - default, "
          f"paired bootstrap 90 % interval, * excludes 0")
    for r in rows:
        print(f"  {r['variant']:<32} median {r['median_m']:6.2f} (right ones {r['median_of_right_m']:5.2f})  "
              f"P90 {r['p90_m']:6.1f}  within 20 m {r['within_20m']:.3f}  night {r['night_median_m']:6.1f}  "
              f"reference spots {r['reference_error_median_m']:.2f} m from truth")
        print_versus(r, 32)
    out = {"command": "python benchmarks/label_floor.py " + " ".join(sys.argv[1:]), "seed": args.seed,
           "model": str(path), "n_queries": int(len(base)), "n_night": int(night.sum()),
           "alpha": ALPHA, "gate_m": GATE_M, "expand": {"radius_m": EXPAND_M, "cap": EXPAND_CAP, "top": EXPAND_TOP},
           "wall_s": time.perf_counter() - t0, "rows": rows}
    write_result(args.out, out)


if __name__ == "__main__":
    main()
