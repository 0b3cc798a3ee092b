"""Compressed / flat nearest-neighbour indexes (campusgps.localizers.ann)."""
from __future__ import annotations

import numpy as np
import pytest

from campusgps.errors import BundleError, UserError
from campusgps.localizers import ann


def _clustered(n, d=64, n_centers=100, seed=0, spread=0.5):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(n_centers, d)).astype(np.float32)
    x = c[rng.integers(0, n_centers, n)] + spread * rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _queries(x, nq=200, seed=1):
    rng = np.random.default_rng(seed)
    q = x[rng.choice(len(x), nq, replace=False)] + 0.05 * rng.normal(size=(nq, x.shape[1])).astype(np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    x = _clustered(8000)
    return x, _queries(x)


def test_flat_is_exact_inner_product(data):
    x, q = data
    idx = ann.build_index(x, "flat")
    S, I = idx.search(q, 5)
    brute = q @ x.T
    np.testing.assert_array_equal(I[:, 0], brute.argmax(1))
    np.testing.assert_allclose(S[:, 0], brute.max(1), rtol=1e-5, atol=1e-5)
    assert idx.meta == {"kind": "flat", "params": {}, "n": 8000, "d": 64}


@pytest.mark.parametrize("kind,params,min_recall", [
    ("ivfpq", {"nlist": 64, "m": 16, "nprobe": 16, "k_factor": 32}, 0.95),
    ("hnsw", {"hnsw_m": 16, "ef_construction": 40, "ef_search": 64}, 0.95),
])
def test_compressed_recall_vs_flat(data, kind, params, min_recall):
    x, q = data
    _, exact = ann.build_index(x, "flat").search(q, 10)
    idx = ann.build_index(x, kind, seed=0, params=params)
    assert idx.kind == kind and idx.n == len(x)
    _, found = idx.search(q, 10)
    r = ann.recall_at_k(found, exact, 10)
    assert r >= min_recall, f"{kind} recall@10 {r:.3f}"
    # a deliberately crippled index must do worse: the recall check has teeth
    if kind == "ivfpq":
        bad = ann.build_index(x, kind, seed=0, params={**params, "nprobe": 1, "k_factor": 1})
        assert ann.recall_at_k(bad.search(q, 10)[1], exact, 10) < r


@pytest.mark.parametrize("kind,params", [
    ("flat", {}), ("ivfpq", {"nlist": 64, "m": 16, "nprobe": 8, "k_factor": 16}),
    ("hnsw", {"hnsw_m": 8, "ef_construction": 20, "ef_search": 40})])
def test_serialisation_round_trip_and_add(data, kind, params):
    x, q = data
    idx = ann.build_index(x[:6000], kind, seed=3, params=params)
    buf, meta = idx.to_bytes(), idx.meta
    assert buf.dtype == np.uint8 and meta["n"] == 6000
    back = ann.AnnIndex.from_bytes(buf, meta)
    assert back.kind == kind and back.params == idx.params
    S0, I0 = idx.search(q, 10)
    S1, I1 = back.search(q, 10)
    np.testing.assert_array_equal(I0, I1)
    np.testing.assert_allclose(S0, S1)
    # add keeps working after a round trip: the new rows are found as their own nearest neighbour
    back.add(x[6000:])
    assert back.n == 8000
    _, I2 = back.search(x[6000:6100], 1)
    assert (I2[:, 0] == np.arange(6000, 6100)).mean() >= 0.95
    v = back.vectors()
    assert v.shape == (8000, 64)
    assert np.abs(v[6000:6100] - x[6000:6100]).max() < (1e-6 if kind != "ivfpq" else 0.05)


def test_auto_picks_flat_below_threshold_and_ivfpq_above(data, monkeypatch):
    x, _ = data
    assert ann.auto_kind(ann.AUTO_FLAT_MAX) == "flat"
    assert ann.auto_kind(ann.AUTO_FLAT_MAX + 1) == "ivfpq"
    small = ann.build_index(x[:500], "auto")
    assert small.kind == "flat" and small.params.get("auto") is True
    monkeypatch.setattr(ann, "AUTO_FLAT_MAX", 4000)
    big = ann.build_index(x, "auto", params={"nlist": 32, "m": 8})
    assert big.kind == "ivfpq"


def test_errors_are_user_facing(data):
    x, q = data
    with pytest.raises(UserError, match="unknown index kind"):
        ann.build_index(x, "lsh")
    with pytest.raises(UserError, match="at least"):
        ann.build_index(x[:200], "ivfpq")
    idx = ann.build_index(x[:100], "flat")
    with pytest.raises(UserError, match="dimensions"):
        idx.search(q[:, :32], 3)
    with pytest.raises(BundleError, match="corrupt"):
        ann.AnnIndex.from_bytes(np.frombuffer(b"not an index", np.uint8), {"kind": "flat"})
    with pytest.raises(BundleError, match="unknown index kind"):
        ann.AnnIndex.from_bytes(idx.to_bytes(), {"kind": "lsh"})
    _, I = idx.search(q[:2], 200)  # more neighbours than references: -1 padding, no crash
    assert (I[:, 100:] == -1).all()
