"""Out-of-area decision from pixels: is this photo from the mapped area at all?

Two statistics of a query, each thresholded at a low percentile (``ood_percentile``) of the same statistic
on held-out photos of the mapped area (the validation photos, or the held-out slice of the training photos,
searched against the training references at fit time), stored in the bundle's ``calib``:

* ``knn``: the mean similarity of the query's ``ood_knn_k`` best references (more stable than the best one
  alone: one look-alike is not enough to seem at home);
* ``domain``: the cosine between the query's raw descriptor and the mean raw descriptor of the mapping
  photos (what photos of this place look like at all; a street in another city, a studio shot or a
  screenshot sits far from it even when some reference happens to be similar).

A query below either threshold is flagged ``out_of_area``. Measured on the simulated small campus (seed 1,
retrieval): the 150 decodable real photos of ``../shared/data/exif-corpus`` (GPS stripped, pixels only) are
95 % flagged at the 2nd percentile and the campus's own 300 held-out query photos 2 % (the best similarity
alone, the old rule, flagged 0 of the 150). Bundles calibrated before carry only ``ood_threshold`` on the
best similarity, which is still honoured. With fewer than ``SMALL_HELD_OUT`` held-out photos the thresholds
are extrapolated (normal approximation) and more lenient: a model of 9 photos cannot tell much.
"""
from __future__ import annotations

import numpy as np

from campusgps.localizers.retrieval.descriptors import l2n

KNN_K = 10
SMALL_HELD_OUT = 30  # fewer held-out photos: a low percentile cannot be estimated, extrapolate (normal)


def knn_score(S: np.ndarray, k: int = KNN_K) -> np.ndarray:
    """Mean of the ``k`` best similarities per query (missing neighbours, similarity -1 / NaN, ignored)."""
    S = np.asarray(S, np.float64)[:, :k]
    ok = np.isfinite(S) & (S > -1.0)
    cnt = ok.sum(axis=1)
    return np.where(cnt > 0, np.where(ok, S, 0.0).sum(axis=1) / np.maximum(cnt, 1), -1.0)


def domain_score(raw: np.ndarray | None, proj) -> np.ndarray | None:
    """Cosine between each raw descriptor and the mapping photos' mean descriptor (None when unknown)."""
    mean = getattr(proj, "mean", None)
    if raw is None or mean is None or not len(raw):
        return None
    m = np.asarray(mean, np.float64).ravel()
    if m.shape[0] != np.asarray(raw).shape[1] or not np.linalg.norm(m) > 0:
        return None
    return l2n(raw).astype(np.float64) @ (m / np.linalg.norm(m))


def _threshold(x: np.ndarray, percentile: float, margin: float) -> float:
    """The ``percentile`` of held-out scores ``x`` minus ``margin``; with few of them (a handful of photos
    cannot show where the lowest 2 % lie) the lower of that and the normal approximation mean - z * sd."""
    from statistics import NormalDist

    thr = float(np.percentile(x, percentile))
    if len(x) < SMALL_HELD_OUT:
        z = -NormalDist().inv_cdf(min(max(percentile, 0.1), 50.0) / 100.0)
        sd = float(np.std(x, ddof=1)) if len(x) > 1 else 0.1
        thr = min(thr, float(np.mean(x)) - z * max(sd, 0.02))
    return thr - margin


def calibrate(S: np.ndarray, raw: np.ndarray | None, proj, percentile: float, margin: float) -> dict:
    """Thresholds for ``calib`` from held-out photos of the mapped area (their search ``S``, raw descriptors)."""
    if not len(S):
        return {}
    knn = knn_score(S)
    out = {"ood_knn_k": KNN_K, "ood_knn_threshold": _threshold(knn, percentile, margin),
           "ood_percentile": float(percentile)}
    dom = domain_score(raw, proj)
    if dom is not None:
        out["ood_domain_threshold"] = _threshold(dom, percentile, margin)
    flagged = out_of_area(out, S, raw, proj)
    out["ood_held_out"] = {"n": int(len(S)), "flagged": float(flagged.mean()),
                           "knn_median": float(np.median(knn)),
                           "domain_median": float(np.median(dom)) if dom is not None else None}
    return out


def out_of_area(calib: dict, S: np.ndarray, raw: np.ndarray | None, proj) -> np.ndarray:
    """Boolean per query: below the calibrated thresholds (see the module docstring)."""
    n = len(S)
    if "ood_knn_threshold" not in calib:  # older bundles: the best similarity alone
        thr = calib.get("ood_threshold", -np.inf)
        return np.array([S[j][0] < thr for j in range(n)], dtype=bool)
    flag = knn_score(S, int(calib.get("ood_knn_k", KNN_K))) < calib["ood_knn_threshold"]
    dthr = calib.get("ood_domain_threshold")
    dom = domain_score(raw, proj) if dthr is not None else None
    if dom is not None:
        flag |= dom < dthr
    return flag
