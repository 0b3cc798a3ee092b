"""Geometry for the retrieval and hybrid localizers.

Two parts:

* **Robust position fusion** (numpy only): a weighted density mode of candidate positions followed by a
  weighted geometric median of the candidates that agree with it. One far-away look-alike, however
  similar, cannot drag the answer: it lands outside the agreeing set.
* **Local features** (OpenCV, imported lazily): RootSIFT keypoints with uint8 descriptors, matching with
  Lowe's ratio test plus a mutual-nearest check (one GEMM for a whole shortlist), RANSAC verification
  (fundamental matrix with MAGSAC++, homography fallback) and relative pose from an essential matrix.

Everything works in east/north metres (positions) or pixels (keypoints).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# ------------------------------------------------------------------------------------------------
# robust fusion of candidate positions
# ------------------------------------------------------------------------------------------------


def weighted_geometric_median(points: np.ndarray, weights: np.ndarray | None = None, iters: int = 64,
                              tol: float = 1e-4) -> np.ndarray:
    """Weiszfeld's algorithm: the point minimising sum_i w_i * |p - x_i|. Breakdown point 50%."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        raise ValueError("geometric median of zero points")
    w = np.ones(len(pts)) if weights is None else np.clip(np.asarray(weights, dtype=np.float64), 0, None)
    if w.sum() <= 0:
        w = np.ones(len(pts))
    if len(pts) == 1:
        return pts[0].copy()
    y = (pts * w[:, None]).sum(0) / w.sum()
    for _ in range(iters):
        d = np.hypot(*(pts - y).T)
        near = d < 1e-9
        if near.any():  # y sits on a data point: standard Weiszfeld modification (Vardi & Zhang)
            wz = w[near].sum()
            dn = np.where(near, 1.0, d)
            inv = np.where(near, 0.0, w / dn)
            if inv.sum() == 0:
                return y
            t = (pts * inv[:, None]).sum(0) / inv.sum()
            r = np.hypot(*((pts - y) * inv[:, None]).sum(0))
            eta = min(1.0, wz / r) if r > 0 else 1.0
            y_new = (1 - eta) * t + eta * y
        else:
            inv = w / d
            y_new = (pts * inv[:, None]).sum(0) / inv.sum()
        if np.hypot(*(y_new - y)) < tol:
            return y_new
        y = y_new
    return y


@dataclass
class Fused:
    center: np.ndarray            # (2,) east/north
    agree: np.ndarray             # (N,) bool: candidates that support the answer
    spread_m: float               # weighted RMS distance of agreeing candidates to the centre
    support: float                # fraction of total weight that agrees
    n_agree: int = 0
    extra: dict = field(default_factory=dict)


def robust_fuse(points: np.ndarray, weights: np.ndarray | None = None, bandwidth_m: float = 8.0,
                agree_m: float | None = None, method: str = "mode") -> Fused:
    """Fuse candidate positions robustly.

    ``method``:
      * ``mode`` (default): the candidate with the highest weighted Gaussian kernel density (bandwidth
        ``bandwidth_m``) seeds a weighted mean-shift; candidates within ``agree_m`` (default 2.5 x bandwidth)
        of the mode agree, and the answer is their weighted geometric median.
      * ``median``: weighted geometric median of all candidates (agreeing = within ``agree_m`` of it).
      * ``mean``: weighted mean (not robust; for comparison).
      * ``top1``: the highest-weight candidate.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    n = len(pts)
    if n == 0:
        raise ValueError("cannot fuse zero candidate positions")
    w = np.ones(n) if weights is None else np.clip(np.asarray(weights, dtype=np.float64), 0, None)
    if not np.isfinite(w).all() or w.sum() <= 0:
        w = np.ones(n)
    agree_m = 2.5 * bandwidth_m if agree_m is None else agree_m
    if method == "top1":
        c = pts[int(np.argmax(w))].copy()
    elif method == "mean":
        c = (pts * w[:, None]).sum(0) / w.sum()
    elif method == "median":
        c = weighted_geometric_median(pts, w)
    elif method == "mode":
        d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
        # a candidate counts half its own weight: a lone candidate needs corroboration to beat a cluster
        dens = (np.exp(-0.5 * d2 / bandwidth_m ** 2) * w[None, :]).sum(1) - 0.5 * w
        c = pts[int(np.argmax(dens))].copy()
        for _ in range(20):  # mean-shift from the densest candidate
            k = w * np.exp(-0.5 * ((pts - c) ** 2).sum(1) / bandwidth_m ** 2)
            if k.sum() <= 0:
                break
            c_new = (pts * k[:, None]).sum(0) / k.sum()
            if np.hypot(*(c_new - c)) < 1e-3:
                c = c_new
                break
            c = c_new
    else:
        raise ValueError(f"unknown fusion method {method!r}; use mode, median, mean or top1")
    dist = np.hypot(*(pts - c).T)
    agree = dist <= agree_m
    if not agree.any():
        agree = dist <= dist.min() + 1e-9
    if method in ("mode", "median"):
        c = weighted_geometric_median(pts[agree], w[agree])
        dist = np.hypot(*(pts - c).T)
    wa = w[agree]
    spread = float(np.sqrt((wa * dist[agree] ** 2).sum() / wa.sum()))
    return Fused(center=c, agree=agree, spread_m=spread, support=float(wa.sum() / w.sum()),
                 n_agree=int(agree.sum()))


def per_spot_weights(points: np.ndarray, weights: np.ndarray, spot_m: float = 1.5) -> np.ndarray:
    """Share weight among candidates whose labels sit on the same spot (within ``spot_m``).

    Several photos from one spot usually share one GPS fix error; counting them as independent would let
    one spot's label noise dominate. Each candidate's weight is divided by the summed kernel of its
    neighbours, so a spot counts roughly once, weighted by its best evidence.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    w = np.asarray(weights, dtype=np.float64)
    if len(pts) <= 1:
        return w.copy()
    d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    k = np.exp(-0.5 * d2 / spot_m ** 2)
    share = (k * w[None, :]).sum(1)
    return w * w / np.maximum(share, 1e-12)


# ------------------------------------------------------------------------------------------------
# local features (OpenCV)
# ------------------------------------------------------------------------------------------------


@dataclass
class LocalFeatures:
    xy: np.ndarray       # (N, 2) float32 pixel coordinates in the image as described (after resize)
    desc: np.ndarray     # (N, 128) uint8 RootSIFT, scaled so that the float vector has unit L2 norm / 512
    size: tuple          # (width, height) of the described image

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


def extract_local_features(img: np.ndarray, max_side: int = 640, max_keypoints: int = 1000,
                           contrast_threshold: float = 0.02) -> LocalFeatures:
    """RootSIFT features of an RGB (or gray) uint8 image, resized to at most ``max_side``.

    Keeps the ``max_keypoints`` strongest responses. Blank/black/tiny images give zero features.
    """
    import cv2

    gray, _ = _to_gray(img, max_side)
    h, w = gray.shape[:2]
    empty = LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), (w, h))
    if min(h, w) < 16 or float(gray.std()) < 1.0:
        return empty
    sift = cv2.SIFT_create(nfeatures=max_keypoints, contrastThreshold=contrast_threshold)
    kps, desc = sift.detectAndCompute(gray, None)
    if desc is None or len(kps) == 0:
        return empty
    if len(kps) > max_keypoints:  # nfeatures can be exceeded by orientation duplicates
        order = np.argsort([-k.response for k in kps])[:max_keypoints]
        kps = [kps[i] for i in order]
        desc = desc[order]
    desc = desc.astype(np.float32)
    desc /= np.maximum(desc.sum(1, keepdims=True), 1e-7)  # L1
    desc = np.sqrt(desc)                                    # RootSIFT: unit L2 norm
    q = np.clip(np.rint(desc * ROOTSIFT_SCALE), 0, 255).astype(np.uint8)
    xy = np.array([k.pt for k in kps], dtype=np.float32).reshape(-1, 2)
    return LocalFeatures(xy, q, (w, h))


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
    """
    out: list[np.ndarray] = []
    empty = np.zeros((0, 2), dtype=np.int64)
    if len(q_desc) < 2 or not ref_descs:
        return [empty for _ in ref_descs]
    q = descriptors_float(q_desc)
    sizes = [len(r) for r in ref_descs]
    if sum(sizes) == 0:
        return [empty for _ in ref_descs]
    allr = descriptors_float(np.concatenate([r for r in ref_descs if len(r)], axis=0))
    sim = q @ allr.T  # (Nq, sum M)
    start = 0
    for m in sizes:
        if m < 2:
            out.append(empty)
            start += m
            continue
        s = sim[:, start:start + m]
        start += m
        top2 = np.argpartition(-s, 1, axis=1)[:, :2]
        s2 = np.take_along_axis(s, top2, axis=1)
        first = np.argmax(s2, axis=1)
        best = top2[np.arange(len(s)), first]
        sbest = s2[np.arange(len(s)), first]
        ssec = s2[np.arange(len(s)), 1 - first]
        d1 = np.sqrt(np.clip(2 - 2 * sbest, 0, None))
        d2 = np.sqrt(np.clip(2 - 2 * ssec, 0, None))
        ok = d1 < ratio * d2
        if mutual:
            back = np.argmax(s, axis=0)  # best query kp for every ref kp
            ok &= back[best] == np.arange(len(s))
        qi = np.nonzero(ok)[0]
        out.append(np.stack([qi, best[qi]], axis=1).astype(np.int64))
    return out


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
    thr = max(1.0, threshold_frac * max(*q_size, *r_size))
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


def focal_px(width: int, height: int, focal_35mm: float | None = None, default_hfov_deg: float = 65.0) -> float:
    """Focal length in pixels from the 35 mm-equivalent focal length (diagonal convention), else a FOV."""
    long_side = max(width, height)
    if focal_35mm is not None and np.isfinite(focal_35mm) and focal_35mm > 0:
        # EXIF FocalLengthIn35mmFilm: the full-frame diagonal (43.27 mm) maps to the image diagonal
        return float(focal_35mm) * math.hypot(width, height) / math.hypot(36.0, 24.0)
    return long_side / 2.0 / math.tan(math.radians(default_hfov_deg) / 2.0)


def relative_bearing(q_xy: np.ndarray, r_xy: np.ndarray, q_size, r_size, f_q: float, f_r: float,
                     threshold_px: float = 1.5) -> tuple[float, int] | None:
    """Horizontal direction from the reference camera to the query camera, in the reference camera frame.

    Uses an essential matrix on calibrated coordinates (principal point at the image centre). Returns
    (angle_rad, inliers), the angle measured from the reference's optical axis towards its right (x),
    or None when the pose is ill-conditioned (too few inliers or almost no baseline evidence).
    """
    import cv2

    if len(q_xy) < 8:
        return None
    cq = np.array([q_size[0] / 2.0, q_size[1] / 2.0])
    cr = np.array([r_size[0] / 2.0, r_size[1] / 2.0])
    nq = (q_xy.astype(np.float64) - cq) / f_q
    nr = (r_xy.astype(np.float64) - cr) / f_r
    thr = threshold_px / max(f_q, f_r)
    try:
        E, mask = cv2.findEssentialMat(nr, nq, np.eye(3), method=cv2.RANSAC, prob=0.999, threshold=thr)
        if E is None or E.shape != (3, 3):
            return None
        n_in, R, t, mask2 = cv2.recoverPose(E, nr, nq, np.eye(3), mask=mask)
    except cv2.error:
        return None
    if n_in < 8:
        return None
    # x_q = R x_r + t  ->  query camera centre in the reference frame: C = -R^T t
    C = -R.T @ t.ravel()
    horiz = math.hypot(C[0], C[2])
    if horiz < 0.3:  # mostly vertical translation: bearing meaningless
        return None
    return math.atan2(C[0], C[2]), int(n_in)


def intersect_rays(origins: np.ndarray, bearings_rad: np.ndarray, weights: np.ndarray | None = None,
                   min_angle_deg: float = 15.0) -> np.ndarray | None:
    """Weighted least-squares intersection of 2-D rays (origin + direction by compass bearing, clockwise
    from north). None when the rays are near-parallel (no triangulation possible)."""
    o = np.asarray(origins, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(bearings_rad, dtype=np.float64)
    if len(o) < 2:
        return None
    w = np.ones(len(o)) if weights is None else np.asarray(weights, dtype=np.float64)
    d = np.stack([np.sin(b), np.cos(b)], axis=1)  # east, north
    spread = np.degrees(np.ptp(np.mod(b - b[0] + np.pi, 2 * np.pi)))
    if spread < min_angle_deg:
        return None
    A = np.zeros((2, 2))
    rhs = np.zeros(2)
    for oi, di, wi in zip(o, d, w):
        P = np.eye(2) - np.outer(di, di)
        A += wi * P
        rhs += wi * P @ oi
    if np.linalg.cond(A) > 1e6:
        return None
    x = np.linalg.solve(A, rhs)
    # the point must lie in front of (most of) the rays
    ahead = ((x - o) * d).sum(1) > 0
    if w[ahead].sum() < 0.5 * w.sum():
        return None
    return x


# ------------------------------------------------------------------------------------------------
# reference "spots": photos that share one GPS fix (same place, same moment of the mapping walk)
# ------------------------------------------------------------------------------------------------


def parse_times_s(taken_at) -> np.ndarray:
    """Capture times -> seconds UTC (NaN where missing or unreadable); see exif.times.capture_times_s."""
    from campusgps.exif.times import capture_times_s

    return capture_times_s(taken_at)[0]


def spot_ids(en: np.ndarray, times_s: np.ndarray | None = None, gap_s: float = 20.0, link_m: float = 5.0,
             fallback_m: float = 1.0) -> np.ndarray:
    """Group reference photos into spots (one GPS fix each).

    Photos are linked when they were taken within ``gap_s`` seconds of each other *and* their labels lie
    within ``link_m`` (a phone standing at one spot reports nearly the same fix; another spot visited at the
    same time of day elsewhere does not). Photos without a capture time link to labels within
    ``fallback_m``. Returns (N,) int spot ids (connected components), 0..S-1 in order of first appearance.
    """
    en = np.asarray(en, dtype=np.float64).reshape(-1, 2)
    n = len(en)
    parent = np.arange(n)

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    t = np.full(n, np.nan) if times_s is None else np.asarray(times_s, dtype=np.float64)
    has = np.isfinite(t)
    idx = np.nonzero(has)[0]
    order = idx[np.argsort(t[idx], kind="stable")]
    for a_pos, a in enumerate(order):  # forward window in time
        for b in order[a_pos + 1:]:
            if t[b] - t[a] > gap_s:
                break
            if np.hypot(*(en[a] - en[b])) <= link_m:
                union(a, b)
    no_t = np.nonzero(~has)[0]
    if len(no_t):
        from scipy.spatial import cKDTree

        tree = cKDTree(en)
        for a in no_t:
            for b in tree.query_ball_point(en[a], fallback_m):
                if not has[b] or b in no_t:
                    union(a, b)
    roots = np.array([find(a) for a in range(n)])
    _, ids = np.unique(roots, return_inverse=True)
    # renumber by first appearance
    first = {}
    out = np.empty(n, dtype=np.int64)
    for i, r in enumerate(ids):
        out[i] = first.setdefault(int(r), len(first))
    return out


def spot_centres(en: np.ndarray, spots: np.ndarray) -> np.ndarray:
    """Per-photo position = coordinate-wise median of its spot's labels (removes per-photo jitter)."""
    en = np.asarray(en, dtype=np.float64).reshape(-1, 2)
    out = en.copy()
    for s in np.unique(spots):
        m = spots == s
        if m.sum() > 1:
            out[m] = np.median(en[m], axis=0)
    return out
