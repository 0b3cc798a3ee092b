"""The reference index: FAISS inner-product search over reference descriptors and their low-light views.

The indexes are :class:`campusgps.localizers.ann.AnnIndex` (``--index auto|flat|ivfpq|hnsw``, see
:func:`build_ann`); the search functions below take the raw FAISS index inside (``ann.index``).

Functions, not state: the localizer owns the built indexes and passes them in, so a search never changes
the model (one fitted model serves many threads). A search may leave out references by id (``exclude``)
and, per query, search only the plain references (``use_aug`` False: bright queries).
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def build_ann(desc: np.ndarray, kind: str = "flat", seed: int = 0, what: str = "references"):
    """:class:`~campusgps.localizers.ann.AnnIndex` of ``desc`` (N, D) of the kind ``--index`` asks for.

    ``auto`` is flat up to ``ann.AUTO_FLAT_MAX`` rows (exact, what a campus always had), ivfpq above. An
    explicit ivfpq on fewer than ``ann.IVFPQ_MIN_N`` rows (too few to train its quantisers) falls back to
    flat with a warning; the returned index's ``params["note"]`` says so (kept in the bundle)."""
    from campusgps.localizers import ann

    desc = np.asarray(desc, np.float32)
    desc = np.ascontiguousarray(desc.reshape(len(desc), -1) if len(desc) else desc.reshape(0, desc.shape[-1]))
    if kind == "ivfpq" and len(desc) < ann.IVFPQ_MIN_N:
        note = (f"ivfpq needs >= {ann.IVFPQ_MIN_N} {what} to train (got {len(desc)}): flat index used "
                f"(exact; index add keeps it flat)")
        log.warning("%s", note)
        out = ann.build_index(desc, "flat", seed=seed)
        out.params["note"] = note
        return out
    return ann.build_index(desc, kind, seed=seed)


def build_index(desc: np.ndarray):
    """FAISS inner-product (cosine on L2-normalised rows) index of ``desc`` (N, D)."""
    import faiss

    idx = faiss.IndexFlatIP(desc.shape[1])
    if len(desc):
        idx.add(np.ascontiguousarray(desc, dtype=np.float32))
    return idx


def merge_hits(S: np.ndarray, I: np.ndarray, k: int, bad: np.ndarray | None = None):
    """Per row: best similarity per reference id (ignoring -1 and ``bad`` rows), sorted, top ``k``;
    padded with (-1.0, -1) like a FAISS search with too few results."""
    S = np.asarray(S, np.float32)
    I = np.asarray(I, np.int64)
    outS = np.full((len(S), k), -1.0, np.float32)
    outI = np.full((len(S), k), -1, np.int64)
    for j in range(len(S)):
        best: dict[int, float] = {}
        for s, i in zip(S[j].tolist(), I[j].tolist()):
            if i < 0 or (bad is not None and bad[i]):
                continue
            if s > best.get(i, -np.inf):
                best[i] = s
        top = sorted(best.items(), key=lambda t: -t[1])[:k]
        if top:
            outI[j, :len(top)], outS[j, :len(top)] = zip(*top)
    return outS, outI


def excluded(ref_ids: list[str], exclude) -> np.ndarray | None:
    """Boolean mask of the references whose id is in ``exclude`` (None when nothing is excluded)."""
    return np.array([r in exclude for r in ref_ids]) if exclude else None


def search_plain(index, q: np.ndarray, k: int, bad: np.ndarray | None = None):
    """Top-``k`` plain references per query, skipping ``bad`` ones (leave-out search)."""
    n = index.ntotal
    q = np.ascontiguousarray(q, dtype=np.float32)
    if bad is None:
        return index.search(q, int(min(k, n)))
    s, i = index.search(q, int(min(k + bad.sum(), n)))
    S = np.full((len(q), k), -1.0, np.float32)
    I = np.full((len(q), k), -1, np.int64)
    for j in range(len(q)):
        good = [(a, b) for a, b in zip(s[j], i[j]) if b >= 0 and not bad[b]][:k]
        if good:
            S[j, :len(good)], I[j, :len(good)] = zip(*good)
    return S, I


def search_merged(index, aug_index, aug_of: np.ndarray, q: np.ndarray, k: int, bad: np.ndarray | None = None):
    """Search the references and their low-light views; each reference counts once, at its best
    similarity (so the fusion never sees one photo several times)."""
    q = np.ascontiguousarray(q, dtype=np.float32)
    n = index.ntotal
    bad = np.zeros(n, bool) if bad is None else bad
    nb = int(bad.sum())
    s, i = index.search(q, int(min(k + nb, n)))
    views = max(1, int(np.ceil(len(aug_of) / max(1, n))))
    sa, ia = aug_index.search(q, int(min((k + nb) * views, len(aug_of))))
    ra = np.where(ia >= 0, aug_of[np.maximum(ia, 0)], -1)
    return merge_hits(np.concatenate([s, sa], 1), np.concatenate([i, ra], 1), k, bad)


def search(index, aug_index, aug_of, q: np.ndarray, k: int, use_aug: np.ndarray | None = None,
           bad: np.ndarray | None = None):
    """(similarities, reference rows), each (len(q), <= k), best first; -1 pads missing hits.

    With low-light views (``aug_index``) each query searches them too unless ``use_aug[j]`` is False."""
    if aug_index is None:
        return search_plain(index, q, k, bad)
    S, I = search_merged(index, aug_index, aug_of, q, k, bad)
    if use_aug is not None and (~use_aug).any():  # bright queries: the plain references only
        s0, i0 = search_plain(index, q[~use_aug], k, bad)
        S[~use_aug], I[~use_aug] = merge_hits(s0, i0, S.shape[1])
    return S, I


def pack(ref_index, aug_index) -> tuple[dict, dict]:
    """Bundle tensors (serialised FAISS indexes, plain uint8 bytes: no pickle) and their metadata."""
    t, m = {"faiss_index": ref_index.to_bytes()}, {"index": ref_index.meta}
    if aug_index is not None:
        t["aug_index"], m["aug_index"] = aug_index.to_bytes(), aug_index.meta
    return t, m


def unpack(tensors: dict, meta: dict):
    """(reference index, low-light index or None) from :func:`pack`'s output. Bundles written before
    ``--index`` hold a flat reference index and raw ``aug_desc`` rows (indexed flat here)."""
    from campusgps.localizers.ann import AnnIndex

    ref = AnnIndex.from_bytes(tensors["faiss_index"], meta.get("index") or {"kind": "flat"})
    if tensors.get("aug_of") is None or not len(tensors["aug_of"]):
        aug = None  # no low-light views (an index without its row map is not used)
    elif tensors.get("aug_index") is not None:
        aug = AnnIndex.from_bytes(tensors["aug_index"], meta.get("aug_index") or {"kind": "flat"})
    elif tensors.get("aug_desc") is not None:
        aug = build_ann(np.asarray(tensors["aug_desc"], np.float32).reshape(-1, ref.d), "flat")
    else:
        aug = None
    return ref, aug
