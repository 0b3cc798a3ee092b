"""Retrieval bundles with ``--index auto|flat|ivfpq|hnsw``: the kind is built, saved as plain FAISS bytes,
loaded back answering the same, and ``index add`` extends it without retraining (issue 14 stage 2)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from campusgps import Localizer
from campusgps.cli.main import main
from conftest import make_toy_dataset


def _far_place(root, seed=7):
    """A dataset of a new place 500 m east of everything a model knows."""
    new = make_toy_dataset(root, n_spots=3, views=4, seed=seed, extent_m=40)
    m = new.manifest
    m["east_m"] += 500.0
    m["lat"], m["lon"] = new.frame.to_wgs84(m["east_m"].to_numpy(), m["north_m"].to_numpy())
    new.save()
    return new


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """560 photos: 280 train references, enough to train ivfpq's 256-code quantisers."""
    return make_toy_dataset(tmp_path_factory.mktemp("kinds") / "big", n_spots=140, views=4, extent_m=200.0)


# ~30 s on 2 shared cores (two retrieval fits over 560 photos): under the slow mark's 60 s
def test_ivfpq_bundle_round_trip_and_index_add(big, tmp_path, capsys):
    from campusgps.localizers.bundle import read_bundle
    from campusgps.localizers.retrieval import RetrievalLocalizer

    test = big.subset("test")
    flat = RetrievalLocalizer(backbone="tiny-cnn", finetune="off", index="flat").fit(big)
    loc = RetrievalLocalizer(backbone="tiny-cnn", finetune="off", index="ivfpq").fit(big)
    assert loc._index.kind == "ivfpq" and loc._aug_index.kind == "ivfpq"
    assert loc.info["index"]["references"]["params"]["nlist"] >= 1
    p = loc.predict(test.paths())
    pf = flat.predict(test.paths())
    same_top = np.mean([a[0]["id"] == b[0]["id"] for a, b in zip(p.neighbors, pf.neighbors)])
    assert same_top >= 0.95, f"ivfpq top-1 agrees with exact search for only {same_top:.0%} of queries"
    path = loc.save(tmp_path / "ivf.cgps")
    tensors, meta = read_bundle(path)
    assert tensors["faiss_index"].dtype == np.uint8 and tensors["aug_index"].dtype == np.uint8
    assert meta["state"]["index"]["kind"] == "ivfpq" and "aug_desc" not in tensors
    back = Localizer.load(path)
    assert back._index.kind == "ivfpq" and back._index.params == loc._index.params
    q = back.predict(test.paths())
    np.testing.assert_array_equal(q.lat, p.lat)
    np.testing.assert_array_equal(q.radius_m, p.radius_m)
    assert [[d["id"] for d in nb] for nb in q.neighbors] == [[d["id"] for d in nb] for nb in p.neighbors]
    # index add: the new place joins the trained ivfpq index (no retraining) and becomes findable
    new = _far_place(tmp_path / "new")
    assert main(["index", "add", str(path), str(new.root)]) == 0
    assert "added 12 of 12" in capsys.readouterr().out
    after = Localizer.load(path)
    assert after._index.kind == "ivfpq" and after._index.n == back._index.n + 12
    assert len(after.aug_of) == 2 * after._index.n == after._aug_index.n
    got = after.predict(new.paths())
    assert all(nb[0]["id"] in set(new.manifest["id"]) for nb in got.neighbors)
    assert main(["index", "info", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["index"]["references"]["kind"] == "ivfpq" and info["n_references"] == after._index.n


def test_small_set_auto_is_flat_and_ivfpq_falls_back_with_a_note(tmp_path, capsys):
    from campusgps.localizers.retrieval import RetrievalLocalizer

    ds = make_toy_dataset(tmp_path / "small", n_spots=12, views=4, extent_m=40)
    auto = RetrievalLocalizer(backbone="tiny-cnn", finetune="off", night_views=1).fit(ds)
    assert auto._index.kind == auto._aug_index.kind == "flat" and auto._index.params.get("auto") is True
    loc = RetrievalLocalizer(backbone="tiny-cnn", finetune="off", night_views=1, index="ivfpq").fit(ds)
    assert loc._index.kind == "flat" and "ivfpq needs >= 256" in loc._index.params["note"]
    test = ds.subset("test")
    a, b = auto.predict(test.paths()), loc.predict(test.paths())
    np.testing.assert_array_equal(a.lat, b.lat)  # the fallback is the exact flat index
    path = loc.save(tmp_path / "small.cgps")
    new = _far_place(tmp_path / "new")
    assert main(["index", "add", str(path), str(new.root)]) == 0
    after = Localizer.load(path)
    assert after._index.kind == "flat" and after._index.n == len(loc.ref_ids) + 12
    assert "note" in after._index.params
    assert all(nb[0]["id"] in set(new.manifest["id"]) for nb in after.predict(new.paths()).neighbors)


def test_index_option_belongs_to_retrieval_and_hybrid(tmp_path, capsys):
    ds = make_toy_dataset(tmp_path / "d", n_spots=6, views=2)
    rc = main(["train", str(ds.root), "--method", "regression", "--index", "ivfpq", "--out", str(tmp_path / "m")])
    assert rc == 2 and "--index" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse: not one of the kinds
        main(["train", str(ds.root), "--method", "retrieval", "--index", "kd-tree", "--out", str(tmp_path / "m")])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
