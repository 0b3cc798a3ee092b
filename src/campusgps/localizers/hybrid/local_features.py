"""Local features for the hybrid method (OpenCV, imported lazily).

RootSIFT keypoints with uint8 descriptors, matching with Lowe's ratio test plus a mutual-nearest check (one
GEMM for a whole shortlist), RANSAC verification (fundamental matrix with MAGSAC++, homography fallback),
and the packing of many images' features into bundle tensors (no pickling). Keypoints and their scales
(``KeyPoint.size``, used by the re-ranker's viewpoint evidence) are in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LocalFeatures:
    xy: np.ndarray       # (N, 2) float32 pixel coordinates in the image as described (after resize)
    desc: np.ndarray     # (N, 128) uint8 RootSIFT, scaled so that the float vector has unit L2 norm / 512
    size: tuple          # (width, height) of the described image
    scale: np.ndarray | None = None  # (N,) float32 keypoint diameters (cv2 KeyPoint.size); None: not stored

    def __len__(self):
        return len(self.xy)


ROOTSIFT_SCALE = 512.0  # uint8 = round(clip(rootsift * 512, 0, 255)); RootSIFT entries rarely exceed 0.5


def _to_gray(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    import cv2

    a = np.asarray(img)
    if a.ndim == 3:
        a = cv2.cvtColor(a[..., :3].astype(np.uint8), cv2.COLOR_RGB2GRAY)
    a = a.astype(np.uint8)
    h, w = a.shape[:2]
    s = min(1.0, max_side / max(h, w)) if max(h, w) > 0 else 1.0
    if s < 1.0:
        a = cv2.resize(a, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return a, s


DIM_LUM = (35.0, 90.0)  # mean gray level (0-255) band of a "dim" photo that ``enhance_dim`` equalizes


def enhance_dim(gray: np.ndarray, mode: str = "clahe", lum_band: tuple = DIM_LUM) -> np.ndarray:
    """Illumination normalisation of a dim gray image before SIFT (``mode`` clahe | off).

    A photo whose mean gray level lies in ``[lum_band[0], lum_band[1])`` (dusk, shade) gets CLAHE (clip limit
    2, 8x8 tiles), which lifts its weak gradients over SIFT's contrast threshold. Brighter photos are left as
    they are, and so are darker ones (night): there sensor noise dominates and equalizing it adds noise
    keypoints that match anything (measured on a simulated campus: dusk median 20.6 -> 12.0 m, night
    32.6 -> 41.6 m when night photos were equalized too).
    """
    if mode == "off":
        return gray
    if mode != "clahe":
        raise ValueError(f"unknown dark enhancement {mode!r} (clahe | off)")
    lum = float(gray.mean()) if gray.size else 0.0
    if not lum_band[0] <= lum < lum_band[1]:
        return gray
    import cv2

    return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(np.ascontiguousarray(gray, np.uint8))


def extract_local_features(img: np.ndarray, max_side: int = 640, max_keypoints: int = 1000,
                           contrast_threshold: float = 0.02, enhance: str = "off",
                           lum_band: tuple = DIM_LUM) -> LocalFeatures:
    """RootSIFT features of an RGB (or gray) uint8 image, resized to at most ``max_side``.

    Keeps the ``max_keypoints`` strongest responses. Blank/black/tiny images give zero features.
    ``enhance``: illumination normalisation of dim images first (see ``enhance_dim``).
    """
    import cv2

    gray, _ = _to_gray(img, max_side)
    gray = enhance_dim(gray, enhance, lum_band)
    h, w = gray.shape[:2]
    if min(h, w) < 16 or float(gray.std()) < 1.0:
        return rootsift_features([], None, (w, h), max_keypoints)
    sift = cv2.SIFT_create(nfeatures=max_keypoints, contrastThreshold=contrast_threshold)
    kps, desc = sift.detectAndCompute(gray, None)
    return rootsift_features(kps, desc, (w, h), max_keypoints)


def rootsift_features(kps, desc, size: tuple, max_keypoints: int) -> LocalFeatures:
    """OpenCV SIFT keypoints and descriptors of an image of ``size`` (w, h) -> ``LocalFeatures`` (RootSIFT,
    uint8), the ``max_keypoints`` strongest kept; none (or ``desc`` None) gives empty features."""
    if desc is None or len(kps) == 0:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), tuple(size),
                             np.zeros(0, np.float32))
    if len(kps) > max_keypoints:  # nfeatures can be exceeded by orientation duplicates
        order = np.argsort([-k.response for k in kps])[:max_keypoints]
        kps = [kps[i] for i in order]
        desc = desc[order]
    desc = desc.astype(np.float32)
    desc /= np.maximum(desc.sum(1, keepdims=True), 1e-7)  # L1
    desc = np.sqrt(desc)                                    # RootSIFT: unit L2 norm
    q = np.clip(np.rint(desc * ROOTSIFT_SCALE), 0, 255).astype(np.uint8)
    xy = np.array([k.pt for k in kps], dtype=np.float32).reshape(-1, 2)
    return LocalFeatures(xy, q, tuple(size), np.array([k.size for k in kps], dtype=np.float32))


def descriptors_float(desc_u8: np.ndarray) -> np.ndarray:
    """uint8 RootSIFT -> float32 unit vectors."""
    d = desc_u8.astype(np.float32)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
    return d


def match_many(q_desc: np.ndarray, ref_descs: list[np.ndarray], ratio: float = 0.85,
               mutual: bool = True) -> list[np.ndarray]:
    """Match one query against several references in one matrix product.

    Returns, per reference, an (M, 2) int array of (query_idx, ref_idx) pairs that pass Lowe's ratio test
    (on L2 distances of unit vectors) and, when ``mutual``, are mutual nearest neighbours.

    The references are padded to one width, so the similarities are one (refs, width, Nq) array and every
    step is a whole-array max along an axis (no per-reference sort): each reference keypoint's best query
    keypoint, each query keypoint's best and (after masking the best) second-best reference keypoint.
    """
    empty = np.zeros((0, 2), dtype=np.int64)
    sizes = np.array([len(r) for r in ref_descs], dtype=np.int64)
    if len(q_desc) < 2 or not len(sizes) or sizes.max() < 2:
        return [empty for _ in ref_descs]
    q = descriptors_float(q_desc)
    nr, width = len(sizes), int(sizes.max())
    R = np.zeros((nr, width, q.shape[1]), np.float32)
    for k, r in enumerate(ref_descs):
        if sizes[k] >= 2:
            R[k, :sizes[k]] = descriptors_float(r)
    sim = (R.reshape(-1, q.shape[1]) @ q.T).reshape(nr, width, len(q))  # one GEMM
    for k in np.nonzero(sizes < width)[0]:  # padding rows: below any cosine
        sim[k, sizes[k]:] = -2.0
    sbest = sim.max(axis=1)  # (refs, Nq) each query keypoint's best similarity
    if mutual:
        # a mutual pair (m, q): q is m's best query keypoint and m's similarity is q's best
        back = np.argmax(sim, axis=2)  # (refs, width)
        colbest = np.take_along_axis(sim, back[..., None], 2)[..., 0]
        rk, mk = np.nonzero(colbest >= np.take_along_axis(sbest, back, 1))
        qk = back[rk, mk]
        keep = mk < sizes[rk]
        rk, mk, qk = rk[keep], mk[keep], qk[keep]
        first = np.unique(rk * len(q) + qk, return_index=True)[1]  # one pair per query kp (exact ties)
        rk, mk, qk = rk[first], mk[first], qk[first]
    else:
        rk, qk = np.indices((nr, len(q))).reshape(2, -1)
        mk = np.argmax(sim[rk, :, qk], axis=1)
    sim[rk, mk, qk] = -2.0
    ssec = sim[rk, :, qk].max(axis=1)
    d1 = np.sqrt(np.clip(2 - 2 * sbest[rk, qk], 0, None))
    d2 = np.sqrt(np.clip(2 - 2 * ssec, 0, None))
    ok = (d1 < ratio * d2) & (sizes[rk] >= 2)
    rk, mk, qk = rk[ok], mk[ok], qk[ok]
    order = np.lexsort((qk, rk))
    rk, mk, qk = rk[order], mk[order], qk[order]
    cuts = np.searchsorted(rk, np.arange(nr + 1))
    return [np.stack([qk[a:b], mk[a:b]], axis=1).astype(np.int64) if b > a else empty
            for a, b in zip(cuts[:-1], cuts[1:])]


def ransac_threshold(q_size, r_size, threshold_frac: float = 0.004) -> float:
    """RANSAC inlier threshold in pixels for a pair of images: a fraction of the larger side, at least 1 px
    (the fundamental matrix's; a homography, which ignores parallax, gets twice this)."""
    return max(1.0, threshold_frac * max(*q_size, *r_size))


def verify_pair(q_xy: np.ndarray, r_xy: np.ndarray, matches: np.ndarray, q_size, r_size,
                method: str = "magsac", threshold_frac: float = 0.004, min_matches: int = 8
                ) -> tuple[int, np.ndarray]:
    """RANSAC-verify tentative matches. Returns (inlier count, inlier mask over ``matches``).

    A fundamental matrix (MAGSAC++ by default) handles general 3-D scenes; if it fails (too few points,
    degenerate planar scene) a homography is tried. The threshold scales with image size.
    """
    import cv2

    n = len(matches)
    if n < min_matches:
        return 0, np.zeros(n, bool)
    p1 = q_xy[matches[:, 0]].astype(np.float64)
    p2 = r_xy[matches[:, 1]].astype(np.float64)
    thr = ransac_threshold(q_size, r_size, threshold_frac)
    flag = cv2.USAC_MAGSAC if method == "magsac" and hasattr(cv2, "USAC_MAGSAC") else cv2.FM_RANSAC
    best = np.zeros(n, bool)
    try:
        F, mask = cv2.findFundamentalMat(p1, p2, flag, thr, 0.999, 1000)
        if F is not None and mask is not None and F.shape == (3, 3):
            best = mask.ravel().astype(bool)
    except cv2.error:
        pass
    if best.sum() < min_matches:
        try:
            H, mask = cv2.findHomography(p1, p2, cv2.RANSAC if flag == cv2.FM_RANSAC else flag, 2 * thr,
                                         maxIters=1000, confidence=0.999)
            if H is not None and mask is not None and mask.sum() > best.sum():
                best = mask.ravel().astype(bool)
        except cv2.error:
            pass
    return int(best.sum()), best


def empty_local_features() -> LocalFeatures:
    return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), (1, 1), np.zeros(0, np.float32))


def pack_local_features(lfs: list[LocalFeatures]) -> dict[str, np.ndarray]:
    """Many images' features -> flat bundle tensors (``lf_offsets`` delimits each image's rows); ``lf_scale``
    only when every image has keypoint scales."""
    offs = np.zeros(len(lfs) + 1, dtype=np.int64)
    offs[1:] = np.cumsum([len(f) for f in lfs])
    xy = np.concatenate([f.xy for f in lfs]) if lfs else np.zeros((0, 2), np.float32)
    desc = np.concatenate([f.desc for f in lfs]) if lfs else np.zeros((0, 128), np.uint8)
    wh = np.array([f.size for f in lfs], dtype=np.int32).reshape(-1, 2)
    out = {"lf_xy": xy.astype(np.float32), "lf_desc": desc.astype(np.uint8), "lf_offsets": offs, "lf_wh": wh}
    if all(f.scale is not None for f in lfs):
        out["lf_scale"] = (np.concatenate([f.scale for f in lfs]) if lfs else np.zeros(0)).astype(np.float32)
    return out


def unpack_local_features(t: dict) -> list[LocalFeatures]:
    """Inverse of :func:`pack_local_features`; scales are None for bundles saved without ``lf_scale``."""
    offs, xy, desc, wh = t["lf_offsets"], t["lf_xy"], t["lf_desc"], t["lf_wh"]
    sc = t.get("lf_scale")
    return [LocalFeatures(xy[offs[i]:offs[i + 1]], desc[offs[i]:offs[i + 1]], (int(wh[i, 0]), int(wh[i, 1])),
                          None if sc is None else sc[offs[i]:offs[i + 1]]) for i in range(len(offs) - 1)]


def extract_threaded(load, n: int, max_side: int, max_keypoints: int) -> list[LocalFeatures]:
    """Local features of images ``load(0) .. load(n - 1)`` (in order), one thread per core: OpenCV's SIFT and
    image decoding release the GIL (2 cores: 35 -> 16 ms per photo, identical descriptors)."""
    from campusgps.progress import thread_map

    return thread_map(lambda i: extract_local_features(load(i), max_side=max_side, max_keypoints=max_keypoints),
                      n, desc="local features")


class LocalFeatureWorker:
    """Engine worker (``train --engine ray``): local features of a batch of stored photos, returned as plain
    bytes per photo (``xy`` float32, ``desc`` uint8, image ``w``/``h``, keypoint ``scale`` float32) so ragged
    results travel as columns."""

    def __init__(self, max_side: int, max_keypoints: int):
        self.max_side, self.max_keypoints = int(max_side), int(max_keypoints)

    def __call__(self, batch: dict) -> dict:
        from campusgps.exif import load_image

        xy, desc, w, h, sc = [], [], [], [], []
        for path in batch["path"]:
            f = extract_local_features(load_image(str(path), max_side=self.max_side), max_side=self.max_side,
                                       max_keypoints=self.max_keypoints)
            xy.append(np.ascontiguousarray(f.xy, np.float32).tobytes())
            desc.append(np.ascontiguousarray(f.desc, np.uint8).tobytes())
            sc.append(np.ascontiguousarray(f.scale, np.float32).tobytes())
            w.append(int(f.size[0]))
            h.append(int(f.size[1]))
        return {"row": np.asarray(batch["row"], np.int64), "xy": np.asarray(xy, dtype=object),
                "desc": np.asarray(desc, dtype=object), "w": np.asarray(w, np.int64), "h": np.asarray(h, np.int64),
                "scale": np.asarray(sc, dtype=object)}


def extract_with_engine(engine, paths: list, max_side: int, max_keypoints: int) -> list[LocalFeatures]:
    """Local features of ``paths`` (in order) computed by ``engine`` workers."""
    out: list = [None] * len(paths)
    kw = {"max_side": max_side, "max_keypoints": max_keypoints}
    for b in engine.map_photos([str(p) for p in paths], LocalFeatureWorker, kw, batch_size=16):
        for r, xy, d, w, h, sc in zip(b["row"], b["xy"], b["desc"], b["w"], b["h"], b["scale"]):
            out[int(r)] = LocalFeatures(xy=np.frombuffer(bytes(xy), np.float32).reshape(-1, 2).copy(),
                                        desc=np.frombuffer(bytes(d), np.uint8).reshape(-1, 128).copy(),
                                        size=(int(w), int(h)), scale=np.frombuffer(bytes(sc), np.float32).copy())
    return out
