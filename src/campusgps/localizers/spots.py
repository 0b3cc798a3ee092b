"""Reference "spots": mapping photos that share one GPS fix (same place, same moment of the mapping walk).

Capture times group photos (``parse_times_s``, ``times_of``); ``spot_ids`` links photos taken close in time
and position; ``spot_centres`` replaces each label by its spot's median (removes per-photo jitter).
"""
from __future__ import annotations

import numpy as np


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


def times_of(manifest, n: int) -> np.ndarray:
    """Capture times (s) of manifest rows (NaN where unknown): they group reference photos into spots."""
    if manifest is None or "taken_at" not in getattr(manifest, "columns", ()):
        return np.full(n, np.nan)
    return parse_times_s(manifest["taken_at"].astype(str).replace({"<NA>": "", "nan": "", "None": ""}))
