"""Experiments on the hybrid's shortlist and on night photos that were measured but not built (issue 13).

    .venv/bin/python benchmarks/shortlist_night.py --work /work/data2 --seed 7 [--model HYBRID.cgps]

One fitted hybrid (``train``'s defaults; fitted and cached under WORK/models-shortlist unless ``--model``),
the campus's query session, errors against the TRUE positions. Every variant changes one thing at predict
time, is verified by the same model, and is scored against the default on the same queries with a paired
bootstrap 90 % interval (``evaluation.metrics.paired_difference``; ``*`` when it excludes 0):

* ``union 20+20`` / ``union 30+10``: the shortlist of 40 = the projection head's top N, then the best of the
  plain whitened-GeM ranking (the same model's projection without its head) until 40;
* ``blend 0.5``: one ranking by the mean of the head's and the plain similarity;
* ``dark refs 20``: a dark query (mean luminance < ``DARK_LUM``) keeps 20 places for the best *dark*
  mapping photos (night mapping photos are where right night answers come from);
* ``night SIFT contrast x0.25`` / ``night 2x upsampled``: RootSIFT of night queries (mean gray < 35) with a
  lower contrast threshold, or on the image upsampled twice.
* ``dark brightened (global)``: the global descriptor of a dark query computed on a gamma-brightened copy
  (mean brightness lifted to ``BRIGHT_TARGET``), searched as usual; local features unchanged.
* ``multi-scale global``: the shortlist of a day/dusk query ranked by a two-scale descriptor, the mean of the
  L2-normalised default GeM (whole photo squeezed to the backbone's square input) and the GeM of the backbone
  run on the photo at its own aspect, long side ``NATIVE_SIDE``, each through the model's projection. Dark
  queries keep the default shortlist (their references' low-light views are not re-described).
* ``confusers dropped (>= N)``: "avoiding confusing features" (Knopp, Sivic and Pajdla, ECCV 2010): every
  mapping photo's RootSIFT keypoints are matched (the hybrid's mutual ratio test) against the
  ``CONFUSER_K`` globally most similar mapping photos more than ``CONFUSER_FAR_M`` away; a keypoint that
  matches in at least N of them (lamps, benches, repeated facades, leaves) is dropped from the references
  before verification. Same fitted model and thresholds.
* ``upright rootsift (refit)``: the only variant with its own model: a hybrid fitted with ``train``'s defaults
  whose RootSIFT (references and queries) describes every keypoint at angle 0 (phone and simulator cameras
  stand upright, roll within a few degrees, so rotation invariance only adds ambiguity).

Prints a table and writes benchmarks/results/shortlist_night.json (``--out``). None of these is in the
product: this script is the record of why (see the README's benchmark table).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from common import ROOT
from confidence import prepare

DARK_LUM = 40.0  # mean luminance (0-255): night mapping photos' 95th percentile 43, dusk's 5th 42 (seed 1)
NATIVE_SIDE = 320  # multi-scale global: the second scale's long side (a 32-multiple, the simulator's width)
CONFUSER_K, CONFUSER_FAR_M = 20, 40.0  # far look-alike references searched per mapping photo; "far" (labels)
BRIGHT_TARGET = 0.40  # mean brightness (0-1) a dark query is lifted to by a gamma curve (gamma >= 0.25)
NIGHT_GRAY = 35.0  # the hybrid's own "darker than dim" level (hybrid.local_features.DIM_LUM)


def reference_rows(loc, ds) -> np.ndarray:
    """Row of ``ds`` of each of the model's references (in the model's order)."""
    row = {str(i): k for k, i in enumerate(ds.manifest["id"])}
    return np.array([row[r] for r in loc.ref_ids])


def dark_references(loc, ds) -> np.ndarray:
    """The model's references darker than ``DARK_LUM`` (indices into its reference arrays)."""
    from campusgps.localizers.retrieval.views import mean_luminance
    from campusgps.progress import thread_map

    rows = reference_rows(loc, ds)
    lum = np.array(thread_map(lambda k: mean_luminance(ds.load_image(int(rows[k]), max_side=256)), len(rows),
                              desc="reference luminance"))
    return np.nonzero(lum < DARK_LUM)[0]


def shortlist_variants(loc, ds, raw_q, dark_q):
    """name -> function(j, sims, idx) giving the shortlist to verify for query j."""
    from campusgps.localizers.retrieval.projection import Projection

    plain = Projection(loc.proj.mean, loc.proj.P)
    raw_ref = loc._raw_from_dataset(ds)[reference_rows(loc, ds)]  # cached backbone features
    ref_plain, q_plain, q_head = plain(raw_ref), plain(raw_q), loc.proj(raw_q)
    n = loc.cfg.shortlist
    dark_refs = dark_references(loc, ds)

    def head_sim(j, idx):
        return (loc.ref_desc[idx] @ q_head[j]).astype(np.float32)

    def ordered(j, idx):
        idx = np.asarray(idx)
        s = head_sim(j, idx)
        o = np.argsort(-s)
        return s[o], idx[o]

    def filled(j, first, more):
        """``first`` (the head's best), then references of ``more`` (best first) until ``n``, in head order."""
        keep = [int(x) for x in first if x >= 0]
        for x in more:
            if len(keep) >= n:
                break
            if x not in keep:
                keep.append(int(x))
        return ordered(j, keep)

    def union(n_head):
        return lambda j, sims, idx: filled(j, idx[:n_head], np.argsort(-(ref_plain @ q_plain[j])))

    def blend(j, sims, idx):
        s = 0.5 * (loc.ref_desc @ q_head[j]) + 0.5 * (ref_plain @ q_plain[j])
        top = np.argsort(-s)[:n]
        return s[top].astype(np.float32), top

    def dark(m):
        def f(j, sims, idx):
            if not dark_q[j]:
                return sims, idx
            return filled(j, idx[:n - m], dark_refs[np.argsort(-(loc.ref_desc[dark_refs] @ q_head[j]))])
        return f

    return {"union 20+20": union(20), "union 30+10": union(30), "blend 0.5": blend, "dark refs 20": dark(20)}, \
        len(dark_refs)


def night_features(kind: str):
    """A drop-in for hybrid's ``extract_local_features`` that changes only night queries."""
    import cv2

    from campusgps.localizers.hybrid import local_features as lf

    def extract(img, max_side=640, max_keypoints=1000, contrast_threshold=0.02, enhance="off", lum_band=lf.DIM_LUM):
        gray, _ = lf._to_gray(img, max_side)
        if float(gray.mean()) >= NIGHT_GRAY:
            return lf.extract_local_features(img, max_side, max_keypoints, contrast_threshold, enhance, lum_band)
        if kind == "contrast":
            return lf.extract_local_features(img, max_side, max_keypoints, contrast_threshold * 0.25, "off", lum_band)
        up = cv2.resize(gray, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
        return lf.extract_local_features(up, 2 * max_side, max_keypoints, contrast_threshold, "off", lum_band)
    return extract


def default_hybrid(work: Path, seed: int, ds, model: str | None = None):
    """(hybrid, path): the bundle at ``model``, else one fitted with ``train``'s defaults, cached under WORK."""
    from campusgps import Localizer
    from campusgps.localizers.hybrid import HybridLocalizer

    path = Path(model) if model else work / "models-shortlist" / f"hybrid-small-{seed}.cgps"
    if path.exists():
        return Localizer.load(path), path
    loc = HybridLocalizer().fit(ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    loc.save(path)
    return loc, path


def versus_default(base: np.ndarray, errors: np.ndarray, night: np.ndarray) -> dict:
    """with - default on the same queries, paired bootstrap: median, P90, share within 20 m, night median."""
    from campusgps.evaluation.metrics import paired_difference

    return {k: paired_difference(base[m], errors[m], st) for k, st, m in (
        ("median", "median", slice(None)), ("P90", "p90", slice(None)),
        ("within 20 m", "acc20", slice(None)), ("night median", "median", night))}


def print_versus(row: dict, indent: int) -> None:
    """The row's differences to the default, one line, ``*`` where the interval excludes 0."""
    from campusgps.evaluation.metrics import format_difference

    if "vs_default" in row:
        print("  " + " " * indent + "  ".join(f"{k} {format_difference(v, mark=True)}"
                                              for k, v in row["vs_default"].items()))


def write_result(path, out: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


def brightened(img: np.ndarray) -> np.ndarray:
    """``img`` through the gamma curve that lifts its mean brightness to ``BRIGHT_TARGET``."""
    x = img.astype(np.float32) / 255.0
    gamma = float(np.clip(np.log(BRIGHT_TARGET) / np.log(max(float(x.mean()), 1e-3)), 0.25, 1.0))
    return (np.clip(x ** gamma, 0, 1) * 255).astype(np.uint8)


def brightened_raw(loc, images, raw, dark_q) -> np.ndarray:
    """Global descriptors with the dark queries' rows computed on their brightened copies."""
    out = raw.copy()
    rows = np.nonzero(dark_q)[0]
    if len(rows):
        out[rows] = loc._raw_from_images([brightened(images[k]) for k in rows])
    return out


def native_gem(loc, images) -> np.ndarray:
    """L2-normalised GeM of the backbone's last maps with each photo at its own aspect (long side
    ``NATIVE_SIDE``, sides rounded to multiples of 32); fp32 channels-last (bf16 was slower at this size)."""
    import cv2
    import torch

    bb, p = loc.backbone, float(loc.cfg.gem_p)
    out = np.zeros((len(images), bb.feature_dim), np.float32)
    for k, img in enumerate(images):
        f = NATIVE_SIDE / max(img.shape[:2])
        size = (max(32, round(img.shape[1] * f / 32) * 32), max(32, round(img.shape[0] * f / 32) * 32))
        # the backbone's own normalisation (until 2026-12-03 the 0..255 mean and std were multiplied by 255
        # again, so the network saw an almost constant image; the first 'multi-scale global' runs are void)
        small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        x = bb.normalise(torch.from_numpy(np.ascontiguousarray(small))[None])
        with torch.inference_mode():
            y = bb.net(x).float()
        out[k] = y.clamp(min=1e-6).pow(p).mean((2, 3)).pow(1 / p).numpy()[0]
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def multi_scale_choice(loc, ds, images, raw_q, dark_q):
    """``choose(j, sims, idx)``: a dark query's own shortlist, else the two-scale descriptor's."""
    rows = reference_rows(loc, ds)
    ref_imgs = [ds.load_image(int(r), max_side=loc.input_max_side()) for r in rows]
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
    dq = unit(loc.proj(unit(raw_q) + native_gem(loc, images)))
    dr = unit(loc.proj(unit(loc._raw_from_images(ref_imgs)) + native_gem(loc, ref_imgs)))
    sims = dq @ dr.T
    order = np.argsort(-sims, 1)[:, :loc.cfg.shortlist]

    def choose(j, s, i):
        return (s, i) if dark_q[j] else (sims[j, order[j]], order[j])
    return choose


def confuser_counts(loc) -> list[np.ndarray]:
    """Per mapping photo and keypoint: in how many of its ``CONFUSER_K`` most similar far-away (more than
    ``CONFUSER_FAR_M`` m, by label) mapping photos it finds a match (mutual nearest, Lowe ratio)."""
    from campusgps.localizers.hybrid.local_features import match_many

    counts = [np.zeros(len(lf), np.int32) for lf in loc.lf]
    for r, lf in enumerate(loc.lf):
        if len(lf) < 2:
            continue
        far = np.nonzero(np.hypot(*(loc.ref_en - loc.ref_en[r]).T) > CONFUSER_FAR_M)[0]
        far = far[np.argsort(-(loc.ref_desc[far] @ loc.ref_desc[r]))[:CONFUSER_K]]
        for m in match_many(lf.desc, [loc.lf[c].desc for c in far], ratio=loc.cfg.ratio, mutual=True):
            counts[r][m[:, 0]] += 1
    return counts


def without_confusers(lfs, counts, n: int):
    """The references' local features without the keypoints that matched at least ``n`` far photos."""
    from campusgps.localizers.hybrid.local_features import LocalFeatures

    return [LocalFeatures(lf.xy[c < n], lf.desc[c < n], lf.size, None if lf.scale is None else lf.scale[c < n])
            for lf, c in zip(lfs, counts)]


def upright_extract(img, max_side: int = 640, max_keypoints: int = 1000, contrast_threshold: float = 0.02,
                    enhance: str = "off", lum_band: tuple | None = None):
    """``extract_local_features`` with every keypoint described upright (angle 0; orientation duplicates of
    one keypoint collapse into one)."""
    import cv2

    from campusgps.localizers.hybrid.local_features import DIM_LUM, _to_gray, enhance_dim, rootsift_features

    gray = enhance_dim(_to_gray(img, max_side)[0], enhance, lum_band or DIM_LUM)
    size = gray.shape[::-1]
    if min(size) < 16 or float(gray.std()) < 1.0:
        return rootsift_features([], None, size, max_keypoints)
    sift = cv2.SIFT_create(nfeatures=max_keypoints, contrastThreshold=contrast_threshold)
    seen: dict = {}
    for k in sorted(sift.detect(gray, None), key=lambda k: -k.response):
        seen.setdefault((round(k.pt[0], 2), round(k.pt[1], 2), round(k.size, 2)), k)
    kps = [cv2.KeyPoint(k.pt[0], k.pt[1], k.size, 0.0, k.response, k.octave) for k in seen.values()]
    kps, desc = sift.compute(gray, kps) if kps else ([], None)
    return rootsift_features(kps, desc, size, max_keypoints)


def upright_measured(ds, images, truth_en, wanted, errs: dict, extra: dict) -> None:
    """The ``upright rootsift (refit)`` row: a hybrid fitted and queried with :func:`upright_extract`."""
    name = "upright rootsift (refit)"
    if not wanted(name):
        return
    from campusgps.localizers.hybrid import HybridLocalizer
    from campusgps.localizers.hybrid import local_features as lf_module
    from campusgps.localizers.hybrid import localizer as hybrid_module

    saved = lf_module.extract_local_features, hybrid_module.extract_local_features
    lf_module.extract_local_features = hybrid_module.extract_local_features = upright_extract
    try:
        t = time.perf_counter()
        up = HybridLocalizer().fit(ds)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        p = up.predict_arrays(images)
    finally:
        lf_module.extract_local_features, hybrid_module.extract_local_features = saved
    errs[name] = np.hypot(p.east - truth_en[:, 0], p.north - truth_en[:, 1])
    extra[name] = {"fit_s": fit_s, "s_per_query": (time.perf_counter() - t) / max(len(images), 1)}
    print(f"  {name:<26} median {np.median(errs[name]):6.2f}  (fit {fit_s:.0f} s)", flush=True)


def confusers_measured(loc, images, raw, truth_en, wanted, errs: dict, extra: dict) -> None:
    """The ``confusers dropped (>= N)`` rows: their errors into ``errs``, the share of keypoints dropped into
    ``extra`` (the model's references are restored afterwards)."""
    confuser_rows = [f"confusers dropped (>= {n})" for n in (2, 4)]
    if any(wanted(name) for name in confuser_rows):
        t = time.perf_counter()
        counts, all_lf = confuser_counts(loc), loc.lf
        print(f"  confusing keypoints counted in {time.perf_counter() - t:.0f} s", flush=True)
        for n, name in zip((2, 4), confuser_rows):
            if not wanted(name):
                continue
            loc.lf = without_confusers(all_lf, counts, n)
            try:
                p = predict(loc, images, raw)
            finally:
                loc.lf = all_lf
            errs[name] = np.hypot(p.east - truth_en[:, 0], p.north - truth_en[:, 1])
            share = float(np.mean(np.concatenate(counts) >= n))
            extra[name] = {"keypoints_dropped": share}
            print(f"  {name:<26} median {np.median(errs[name]):6.2f}  ({share:.1%} of keypoints dropped)", flush=True)


def predict(loc, images, raw, choose=None):
    """The hybrid's answers with the shortlist ``choose(j, sims, idx)`` (None: its own)."""
    S, I = loc._search(loc.proj(raw), loc.cfg.shortlist, use_aug=loc._dark_queries(images))
    out = loc._predict_from_search(S, I, raw)
    for j, img in enumerate(images):
        s, i = (S[j], I[j]) if choose is None else choose(j, S[j], I[j])
        loc._verify_one(out, j, img, np.asarray(s, np.float32), np.asarray(i, np.int64))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/cgps-bench-localizers")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--model", help="a fitted hybrid of this campus (default: fit one, cached under WORK)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "shortlist_night.json"))
    ap.add_argument("--only", default="", help="comma-separated variant names to run (default: all; the "
                    "default row always runs)")
    args = ap.parse_args()
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    wanted = lambda name: not only or name in only  # noqa: E731
    os.environ.setdefault("CAMPUSGPS_PROGRESS", "0")
    from campusgps.localizers.hybrid import localizer as hybrid_module
    from campusgps.localizers.retrieval.views import dark_queries

    t0 = time.perf_counter()
    work = Path(args.work)
    ds, qds, truth_en, tq = prepare(work, args.seed)  # the small campus of this seed and its query truth
    night = (tq["condition"] == "night").to_numpy()
    loc, path = default_hybrid(work, args.seed, ds, args.model)
    images = [qds.load_image(i, max_side=loc.input_max_side()) for i in range(len(qds))]
    raw = loc._raw_from_images(images)
    dark_q = dark_queries(images, DARK_LUM)
    variants, n_dark_refs = shortlist_variants(loc, ds, raw, dark_q)

    errs, extra = {}, {}
    for name, choose in [("default", None), *variants.items()]:
        if name != "default" and not wanted(name):
            continue
        t = time.perf_counter()
        p = predict(loc, images, raw, choose)
        errs[name] = np.hypot(p.east - truth_en[:, 0], p.north - truth_en[:, 1])
        print(f"  {name:<26} median {np.median(errs[name]):6.2f}  ({time.perf_counter() - t:.0f} s)", flush=True)
    real_extract = hybrid_module.extract_local_features
    for name, kind in (("night SIFT contrast x0.25", "contrast"), ("night 2x upsampled", "upsample")):
        if not wanted(name):
            continue
        hybrid_module.extract_local_features = night_features(kind)
        try:
            p = predict(loc, images, raw)
            errs[name] = np.hypot(p.east - truth_en[:, 0], p.north - truth_en[:, 1])
        finally:
            hybrid_module.extract_local_features = real_extract
        print(f"  {name:<26} median {np.median(errs[name]):6.2f}", flush=True)
    name = "dark brightened (global)"
    if wanted(name):
        p = predict(loc, images, brightened_raw(loc, images, raw, dark_q))
        errs[name] = np.hypot(p.east - truth_en[:, 0], p.north - truth_en[:, 1])
        print(f"  {name:<26} median {np.median(errs[name]):6.2f}", flush=True)
    name = "multi-scale global"
    if wanted(name):
        p = predict(loc, images, raw, multi_scale_choice(loc, ds, images, raw, dark_q))
        errs[name] = np.hypot(p.east - truth_en[:, 0], p.north - truth_en[:, 1])
        print(f"  {name:<26} median {np.median(errs[name]):6.2f}", flush=True)
    confusers_measured(loc, images, raw, truth_en, wanted, errs, extra)
    upright_measured(ds, images, truth_en, wanted, errs, extra)

    base = errs["default"]
    rows = []
    for name, e in errs.items():
        r = {"variant": name, "median_m": float(np.median(e)), "p90_m": float(np.percentile(e, 90)),
             "within_20m": float((e <= 20).mean()), "night_median_m": float(np.median(e[night])),
             "night_within_20m": float((e[night] <= 20).mean())}
        r.update(extra.get(name, {}))
        if name != "default":
            r["vs_default"] = versus_default(base, e, night)
        rows.append(r)
    print(f"\nseed {args.seed}: {len(base)} queries ({int(night.sum())} night, {int(dark_q.sum())} dark), "
          f"{n_dark_refs} dark mapping photos; with - default, paired bootstrap 90 % interval, * excludes 0")
    for r in rows:
        line = (f"  {r['variant']:<26} median {r['median_m']:6.2f}  P90 {r['p90_m']:6.1f}  within 20 m "
                f"{r['within_20m']:.3f}  night {r['night_median_m']:6.1f} ({r['night_within_20m']:.3f} right)")
        print(line)
        print_versus(r, 26)
    out = {"command": "python benchmarks/shortlist_night.py " + " ".join(sys.argv[1:]), "seed": args.seed,
           "model": str(path), "n_queries": int(len(base)), "n_night": int(night.sum()),
           "n_dark_queries": int(dark_q.sum()), "n_dark_mapping_photos": int(n_dark_refs),
           "wall_s": time.perf_counter() - t0, "rows": rows}
    write_result(args.out, out)


if __name__ == "__main__":
    main()
