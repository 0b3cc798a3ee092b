"""Nearest-neighbour indexes over L2-normalised descriptors (inner product = cosine), flat or compressed.

``build_index(desc, kind="auto")`` returns an :class:`AnnIndex`:

* ``flat``  exact ``IndexFlatIP`` (what retrieval always used; 4*d bytes per reference).
* ``ivfpq`` an inverted file (``nlist`` k-means cells, ``nprobe`` visited per query) with product-quantised
  codes (``m`` bytes per reference), re-ranked by an 8-bit scalar-quantised copy (``IndexRefine``,
  ``k_factor * k`` candidates re-scored): ~d + m bytes per reference, recall@10 ~0.98 at 10^6.
* ``hnsw``  a graph over the full vectors (``IndexHNSWFlat``): fast queries, but slow to build (minutes
  per 10^6 on two cores) and larger than flat.
* ``auto``  flat up to :data:`AUTO_FLAT_MAX` (50,000) references, ivfpq above (benchmarks/results/scale.json:
  flat needs 13 ms per query at 10^5 and ~1 GB and >100 ms at 10^6; ivfpq stays around 1 ms).

Serialisation uses ``faiss.serialize_index`` (a plain byte array, no pickle); the parameters travel in
``meta`` (JSON) next to it. Search-time parameters (``nprobe``, ``k_factor``, ``ef_search``) are re-applied
on load, so a bundle answers the same after a round trip.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from campusgps.errors import BundleError, UserError

KINDS = ("auto", "flat", "ivfpq", "hnsw")
# Above this many references `auto` switches from exact flat search to IVF-PQ + refine. Chosen from
# benchmarks/scale.py (d=256, one thread of this shared 2-core machine): flat costs ~0.13 ms per 1,000
# references per query (13 ms p50 at 10^5), so up to 5*10^4 it stays near the 5 ms budget with exact
# answers -- every campus this project targets (10^3..10^4 photos) keeps its current accuracy exactly --
# while IVF-PQ answers 10^5 in 0.7 ms at recall@10 0.97 and 10^6 in ~1 ms.
AUTO_FLAT_MAX = 50_000
# ivfpq trains 256-centroid product quantisers: fewer references than this cannot train one.
IVFPQ_MIN_N = 256

DEFAULTS = {
    "ivfpq": {"nlist": 0, "m": 32, "nprobe": 32, "k_factor": 64, "refine": "SQfp16"},
    "hnsw": {"hnsw_m": 32, "ef_construction": 80, "ef_search": 128},
    "flat": {},
}


def auto_kind(n: int) -> str:
    """The kind ``auto`` picks for ``n`` references."""
    return "flat" if n <= AUTO_FLAT_MAX else "ivfpq"


def _nlist_for(n: int) -> int:
    """~2 sqrt(n) cells, a power of two, capped so every cell gets >= 39 training points (small sets get
    fewer than 16 cells: a few hundred references still train, and nprobe then visits every cell)."""
    want = 2 ** int(round(math.log2(max(16.0, 2.0 * math.sqrt(max(n, 1))))))
    return int(max(1, min(want, 65536, n // 39)))


def _pq_m(d: int, m: int) -> int:
    """Largest sub-quantiser count <= m that divides d."""
    m = max(1, min(int(m), d))
    while d % m:
        m -= 1
    return m


@dataclass
class AnnIndex:
    """A FAISS inner-product index plus what is needed to rebuild its search behaviour."""

    index: object
    kind: str
    params: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.index.ntotal)

    @property
    def d(self) -> int:
        return int(self.index.d)

    @property
    def meta(self) -> dict:
        return {"kind": self.kind, "params": dict(self.params), "n": self.n, "d": self.d}

    def _apply_search_params(self) -> None:
        import faiss

        if self.kind == "ivfpq":
            ref = faiss.downcast_index(self.index)
            ref.k_factor = float(self.params.get("k_factor", 64))
            faiss.extract_index_ivf(ref.base_index).nprobe = int(self.params.get("nprobe", 32))
        elif self.kind == "hnsw":
            faiss.downcast_index(self.index).hnsw.efSearch = int(self.params.get("ef_search", 128))

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (nq, k) float32, ids (nq, k) int64); ids are -1 where fewer than k references exist."""
        q = np.ascontiguousarray(np.atleast_2d(q), dtype=np.float32)
        if q.shape[1] != self.d:
            raise UserError(f"query descriptors have {q.shape[1]} dimensions, the index {self.d}")
        k = int(k)
        if k < 1 or len(q) == 0:
            return np.zeros((len(q), max(k, 0)), np.float32), np.full((len(q), max(k, 0)), -1, np.int64)
        S, I = self.index.search(q, k)
        return S, I

    def add(self, desc: np.ndarray) -> None:
        """Append references (ids continue from ``n``). Compressed kinds reuse their trained codebooks."""
        desc = np.ascontiguousarray(np.atleast_2d(desc), dtype=np.float32)
        if len(desc) == 0:
            return
        if desc.shape[1] != self.d:
            raise UserError(f"new descriptors have {desc.shape[1]} dimensions, the index {self.d}")
        self.index.add(desc)

    def vectors(self) -> np.ndarray:
        """(n, d) stored vectors: exact for flat/hnsw, the 8-bit refine copy (approximate) for ivfpq."""
        import faiss

        if self.n == 0:
            return np.zeros((0, self.d), np.float32)
        if self.kind == "ivfpq":
            return faiss.downcast_index(self.index).refine_index.reconstruct_n(0, self.n)
        return self.index.reconstruct_n(0, self.n)

    def to_bytes(self) -> np.ndarray:
        """uint8 array (``faiss.serialize_index``); store it with :attr:`meta` and read with from_bytes."""
        import faiss

        return faiss.serialize_index(self.index).astype(np.uint8)

    @classmethod
    def from_bytes(cls, buf, meta: dict) -> "AnnIndex":
        import faiss

        kind = meta.get("kind", "flat")
        if kind not in KINDS[1:]:
            raise BundleError(f"unknown index kind {kind!r} in bundle (known: flat, ivfpq, hnsw)")
        try:
            index = faiss.deserialize_index(np.ascontiguousarray(buf, dtype=np.uint8))
        except Exception as e:  # faiss raises RuntimeError with its C++ message
            raise BundleError(f"corrupt {kind} index in bundle: {str(e).splitlines()[0][:200]}")
        if "n" in meta and int(index.ntotal) != int(meta["n"]):
            raise BundleError(f"index holds {index.ntotal} references, its metadata says {meta['n']}")
        out = cls(index=index, kind=kind, params=dict(meta.get("params", {})))
        out._apply_search_params()
        return out


def _build_ivfpq(desc: np.ndarray, seed: int, params: dict):
    import faiss

    n, d = desc.shape
    nlist = int(params.get("nlist") or _nlist_for(n))
    m = _pq_m(d, int(params.get("m", 32)))
    refine = str(params.get("refine", "SQfp16"))
    params.update(nlist=nlist, m=m, refine=refine)
    if n < 39 * nlist or n < IVFPQ_MIN_N:
        raise UserError(f"ivfpq needs at least {max(39 * nlist, IVFPQ_MIN_N)} references to train "
                        f"(got {n}); use --index flat for small sets")
    index = faiss.index_factory(d, f"IVF{nlist},PQ{m}x8,Refine({refine})", faiss.METRIC_INNER_PRODUCT)
    ref = faiss.downcast_index(index)
    ivf = faiss.extract_index_ivf(ref.base_index)
    ivf.cp.seed = int(seed)
    ivf.cp.max_points_per_centroid = 64  # trains on <= 64 * nlist samples: a tenth of the default time
    ivfpq = faiss.downcast_index(ivf)
    ivfpq.pq.cp.seed = int(seed) + 1
    if n < 39 * 256:  # a small set: train the 256 codes per sub-quantiser anyway, without faiss's warning
        ivfpq.pq.cp.min_points_per_centroid = 1
    ivfpq.do_polysemous_training = False  # minutes of training for Hamming filtering we never use
    rng = np.random.default_rng(seed)
    n_train = min(n, max(64 * nlist, 65536))
    sample = desc if n_train == n else desc[np.sort(rng.choice(n, n_train, replace=False))]
    index.train(np.ascontiguousarray(sample))
    return index


def build_index(desc: np.ndarray, kind: str = "auto", seed: int = 0, params: dict | None = None) -> AnnIndex:
    """Index ``desc`` ((n, d) float32, rows L2-normalised) for inner-product search.

    ``params`` override :data:`DEFAULTS` for the chosen kind (e.g. ``{"nprobe": 64}``); the effective
    values land in ``meta["params"]``.
    """
    import faiss

    if kind not in KINDS:
        raise UserError(f"unknown index kind {kind!r}; use one of {', '.join(KINDS)}")
    desc = np.ascontiguousarray(np.atleast_2d(desc), dtype=np.float32)
    n, d = desc.shape
    if d == 0:
        raise UserError("cannot index descriptors with 0 dimensions")
    chosen = auto_kind(n) if kind == "auto" else kind
    p = {**DEFAULTS[chosen], **(params or {})}
    if kind == "auto":
        p["auto"] = True
    if chosen == "flat":
        index = faiss.IndexFlatIP(d)
    elif chosen == "hnsw":
        index = faiss.IndexHNSWFlat(d, int(p["hnsw_m"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(p["ef_construction"])
    else:
        index = _build_ivfpq(desc, seed, p)
    out = AnnIndex(index=index, kind=chosen, params=p)
    out._apply_search_params()
    out.add(desc)
    return out


def recall_at_k(found: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    """Mean fraction of the exact top-k ids that ``found`` (ids, same rows) also returns in its top k."""
    hits = 0
    for f, e in zip(found[:, :k], exact[:, :k]):
        e = e[e >= 0]
        hits += len(np.intersect1d(f[f >= 0], e)) / max(1, len(e))
    return float(hits / max(1, len(exact)))
