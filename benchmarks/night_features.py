"""Would another local feature verify night queries better than the hybrid's RootSIFT? (issue 13, night target)

    .venv/bin/python benchmarks/night_features.py --work /work/data2 --seed 1 --model HYBRID.cgps

``night_evidence.py`` found that at night the right reference is usually in the hybrid's 40-photo shortlist
but loses the inlier count to a look-alike. This script verifies the same shortlists of every night query
again with features that need nothing downloaded:

- ``cnn block N``: ImageNet features, the EfficientNet-Lite0 activations after block N (an L2-normalised
  descriptor per cell; N=5: stride 8, N=11: stride 16), run on the photo at its own size;
- ``akaze``, ``orb+teblid`` (OpenCV's learned binary descriptor on ORB keypoints): only in OpenCV's contrib
  build (``pip install opencv-contrib-python-headless`` of the same version); skipped without it;
- ``sift low contrast``: SIFT with 1,500 keypoints at a contrast threshold of 0.01 (more night keypoints).
- ``rootsift 640`` and ``upright rootsift 640``: the hybrid's RootSIFT on the same 640 px image as the
  others (the control), and the same with every keypoint described at angle 0 (cameras stand upright).

All alternatives are matched the same way as the hybrid (mutual nearest neighbours, Lowe ratio 0.85; the
CNN cells without the ratio) and verified by the hybrid's own ``verify_pair`` (MAGSAC++ fundamental matrix,
homography fallback), on the photo upsampled to 640 px (the hybrid's ``local_max_side``, a cap: the
hybrid itself describes a 320x240 simulator photo as it is, so ``rootsift 640`` is the like-for-like
control). For each feature it reports how often
the reference with the most inliers is right (true position within 20 m of the query's) and, over the
queries whose shortlist holds both a right and a wrong reference, how often the best right one has more
inliers than the best wrong one. Writes benchmarks/results/night_features.json (``--out``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from common import ROOT, simulated_campus
from confidence import prepare
from label_floor import true_reference_positions
from shortlist_night import reference_rows, upright_extract, write_result

RIGHT_M = 20.0
RATIO = 0.85
SIDE = 640  # the hybrid's local-feature size (HybridConfig.max_side)


def cv_alternatives() -> dict:
    """name -> (make feature2d, norm); the contrib-only ones are left out when cv2 lacks them."""
    import cv2

    out = {"sift low contrast": (lambda: cv2.SIFT_create(nfeatures=1500, contrastThreshold=0.01), cv2.NORM_L2),
           "rootsift 640": (lambda: _RootSift(upright=False), cv2.NORM_L2),
           "upright rootsift 640": (lambda: _RootSift(upright=True), cv2.NORM_L2)}
    x = getattr(cv2, "xfeatures2d", None)
    if x is not None and hasattr(x, "AKAZE_create") and hasattr(x, "TEBLID_create"):
        out["akaze"] = (lambda: x.AKAZE_create(threshold=0.0003), cv2.NORM_HAMMING)
        out["orb+teblid"] = (lambda: _DetectDescribe(cv2.ORB_create(nfeatures=3000, fastThreshold=5),
                                                     x.TEBLID_create(1.0)), cv2.NORM_HAMMING)
    else:
        print("OpenCV without contrib: akaze and orb+teblid skipped", file=sys.stderr)
    return out


class _DetectDescribe:
    """Keypoints of one OpenCV feature, descriptors of another."""

    def __init__(self, det, desc):
        self.det, self.desc = det, desc

    def detectAndCompute(self, gray, mask):
        return self.desc.compute(gray, self.det.detect(gray, mask))


class _RootSift:
    """The hybrid's own RootSIFT (``extract_local_features``: 1,000 keypoints, contrast threshold 0.02, uint8)
    on the 640 px image; ``upright``: ``shortlist_night.upright_extract``, every keypoint described at angle 0."""

    def __init__(self, upright: bool):
        from campusgps.localizers.hybrid.local_features import extract_local_features

        self.extract = upright_extract if upright else extract_local_features

    def detectAndCompute(self, gray, mask):
        import cv2

        from campusgps.localizers.hybrid.local_features import descriptors_float

        lf = self.extract(gray, max_side=SIDE)
        return [cv2.KeyPoint(float(x), float(y), 1.0) for x, y in lf.xy], descriptors_float(lf.desc)


def upsampled_gray(img: np.ndarray) -> np.ndarray:
    import cv2

    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    s = SIDE / max(g.shape)
    return cv2.resize(g, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC if s > 1 else cv2.INTER_AREA)


def cv_features(gray, extractor):
    kp, d = extractor.detectAndCompute(gray, None)
    xy = np.float32([p.pt for p in kp]) if kp else np.zeros((0, 2), np.float32)
    return xy, d, gray.shape[::-1]


def cv_matches(da, db, norm) -> np.ndarray:
    """Mutual nearest neighbours that pass the ratio test: (n, 2) indices into (a, b)."""
    import cv2

    if da is None or db is None or len(da) < 2 or len(db) < 2:
        return np.zeros((0, 2), np.int64)
    bf = cv2.BFMatcher(norm)
    back = {m[0].queryIdx: m[0].trainIdx for m in bf.knnMatch(db, da, k=1) if m}
    good = [(m[0].queryIdx, m[0].trainIdx) for m in bf.knnMatch(da, db, k=2)
            if len(m) == 2 and m[0].distance < RATIO * m[1].distance and back.get(m[0].trainIdx) == m[0].queryIdx]
    return np.array(good, np.int64).reshape(-1, 2)


class CnnCells:
    """EfficientNet-Lite0 activations after a few blocks, one L2-normalised descriptor per cell."""

    def __init__(self, blocks: list[int]):
        import torch

        from campusgps.models.backbones import get_backbone

        self.torch, self.blocks = torch, sorted(blocks)
        self.bb = get_backbone("efficientnet-lite0", device="cpu")

    def __call__(self, img: np.ndarray) -> dict:
        torch = self.torch
        # the backbone's own normalisation (until 2026-12-03 this multiplied its 0..255 mean and std by 255
        # again: the network saw an almost constant image, and the CNN rows of that day's run are void)
        y = self.bb.normalise(torch.from_numpy(np.ascontiguousarray(img, dtype=np.uint8))[None])
        out, start = {}, 0
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            for stop in self.blocks:
                y, start = self.bb.net.run_stages(y, start, stop), stop
                f = y.float()[0]
                c, h, w = f.shape
                d = torch.nn.functional.normalize(f.reshape(c, -1).T, dim=1).numpy()
                gy, gx = np.mgrid[0:h, 0:w]
                s = SIDE / max(img.shape[:2])  # cell centres in the 640 px frame, like the other features
                xy = np.stack([(gx.ravel() + 0.5) * img.shape[1] / w, (gy.ravel() + 0.5) * img.shape[0] / h], 1) * s
                out[stop] = (xy.astype(np.float32), d, (round(img.shape[1] * s), round(img.shape[0] * s)))
        return out


def cnn_matches(da, db) -> np.ndarray:
    s = da @ db.T
    ab, ba = s.argmax(1), s.argmax(0)
    a = np.nonzero(ba[ab] == np.arange(len(da)))[0]
    return np.stack([a, ab[a]], 1).astype(np.int64)


def summarize(rows: list[dict], key: str) -> dict:
    top = wins = ties = both = 0
    for r in rows:
        d, v = np.asarray(r["dist_m"]), np.asarray(r[key])
        top += bool(d[int(np.argmax(v))] <= RIGHT_M)
        right, wrong = d <= RIGHT_M, (d > RIGHT_M) & np.isfinite(d)
        if right.any() and wrong.any():
            both += 1
            wins += bool(v[right].max() > v[wrong].max())
            ties += bool(v[right].max() == v[wrong].max())
    return {"top_reference_right": top, "n_queries": len(rows), "right_beats_wrong": wins, "ties": ties,
            "n_with_right_and_wrong": both,
            "median_best_right_inliers": float(np.median([max([x for x, dd in zip(r[key], r["dist_m"])
                                                                if dd <= RIGHT_M], default=0) for r in rows]))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/cgps-bench-localizers")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", required=True, help="a fitted hybrid of this campus")
    ap.add_argument("--cnn-blocks", default="5,11", help="EfficientNet-Lite0 blocks whose output to match "
                                                             "('' for none)")
    ap.add_argument("--no-opencv", action="store_true", help="leave out the OpenCV alternatives (AKAZE, "
                                                              "ORB+TEBLID, SIFT variants): CNN cells only")
    ap.add_argument("--opencv", default="", help="comma-separated OpenCV alternatives to run (default: all "
                                                 "available), e.g. 'rootsift 640,upright rootsift 640'")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "night_features.json"))
    args = ap.parse_args()
    os.environ.setdefault("CAMPUSGPS_PROGRESS", "0")
    from campusgps import Localizer
    from campusgps.localizers.hybrid.local_features import verify_pair

    t0 = time.perf_counter()
    ds, qds, q_en, tq = prepare(Path(args.work), args.seed)
    loc = Localizer.load(args.model)
    ref_rows = reference_rows(loc, ds)
    r_en = true_reference_positions(loc, ds, simulated_campus(Path(args.work), "small", args.seed, queries=False)[0])

    keep = {x.strip() for x in args.opencv.split(",") if x.strip()}
    alts = {} if args.no_opencv else {name: (make(), norm) for name, (make, norm) in cv_alternatives().items()
                                      if not keep or name in keep}
    blocks = [int(b) for b in args.cnn_blocks.split(",") if b.strip()]
    cnn = CnnCells(blocks) if blocks else None
    cache: dict[int, dict] = {}

    def described(img) -> dict:
        g = upsampled_gray(img)
        out = {name: cv_features(g, ex) for name, (ex, _) in alts.items()}
        if cnn is not None:
            out.update({f"cnn block {b}": v for b, v in cnn(img).items()})
        return out

    def ref_described(r: int) -> dict:
        if r not in cache:
            cache[r] = described(ds.load_image(int(ref_rows[r]), max_side=loc.input_max_side()))
        return cache[r]

    night = np.nonzero((tq["condition"] == "night").to_numpy())[0]
    images = [qds.load_image(int(j), max_side=loc.input_max_side()) for j in night]
    S, I = loc._search(loc.proj(loc._raw_from_images(images)), loc.cfg.shortlist, use_aug=loc._dark_queries(images))
    rows = []
    for k, (j, img) in enumerate(zip(night, images)):
        _, inl, _ = loc._verify_geometry(img, S[k], I[k], geometry=False)
        idx = I[k]
        dist = np.where(idx >= 0, np.hypot(*(r_en[np.maximum(idx, 0)] - q_en[j]).T), np.inf)
        row = {"query": int(j), "dist_m": dist.tolist(), "hybrid rootsift": np.asarray(inl).tolist()}
        q = described(img)
        for name, (qxy, qd, qsize) in q.items():
            counts = []
            for r in idx:
                if r < 0:
                    counts.append(0)
                    continue
                rxy, rd, rsize = ref_described(int(r))[name]
                m = cnn_matches(qd, rd) if name.startswith("cnn") else cv_matches(qd, rd, alts[name][1])
                counts.append(verify_pair(qxy, rxy, m, qsize, rsize)[0])
            row[name] = counts
            row[name + " keypoints"] = len(qxy)
        rows.append(row)
        print(f"\r{k + 1}/{len(night)} night queries, {time.perf_counter() - t0:.0f} s", end="", file=sys.stderr)
    print(file=sys.stderr)

    names = ["hybrid rootsift", *alts, *(f"cnn block {b}" for b in blocks)]
    table = {n: summarize(rows, n) for n in names}
    for n, v in table.items():
        kp = np.median([r[n + " keypoints"] for r in rows]) if n + " keypoints" in rows[0] else float("nan")
        v["median_query_keypoints"] = float(kp)
    print(f"seed {args.seed}: {len(rows)} night queries; shortlist {loc.cfg.shortlist}; right = within {RIGHT_M:.0f} m")
    print(f"{'feature':<20} {'top ref right':>14} {'right beats wrong':>18} {'ties':>5} {'query kp':>9}")
    for n, v in table.items():
        print(f"{n:<20} {v['top_reference_right']:>7}/{v['n_queries']:<6} {v['right_beats_wrong']:>10}/"
              f"{v['n_with_right_and_wrong']:<7} {v['ties']:>5} {v['median_query_keypoints']:>9.0f}")
    write_result(args.out, {"command": "python benchmarks/night_features.py " + " ".join(sys.argv[1:]),
                            "seed": args.seed, "model": str(args.model), "n_night_queries": len(rows),
                            "right_m": RIGHT_M, "wall_s": time.perf_counter() - t0, "features": table})


if __name__ == "__main__":
    main()
