"""evaluate --cross-fit K: out-of-fold scores by location group, shared with the audit."""
import json

import numpy as np
import pandas as pd

from campusgps.cli.main import main
from campusgps.dataset import Dataset
from campusgps.evaluation.crossfit import assign_folds, cross_fit_predictions

from conftest import make_toy_dataset
from test_audit import PixelNN  # registers the cheap "test-pixel-nn" method


def test_evaluate_cross_fit_on_30_photos(tmp_path, capsys):
    ds = make_toy_dataset(tmp_path / "ds", n_spots=30, views=1, seed=5)
    model = PixelNN().fit(ds).save(tmp_path / "nn.cgps")
    out = tmp_path / "ev"
    assert main(["evaluate", str(model), str(ds.root), "--split", "all", "--cross-fit", "5", "--out", str(out)]) == 0
    assert "out of fold" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    p = pd.read_csv(out / "predictions.csv")
    assert m["n"] == 30 and len(p) == 30 and np.isfinite(p["error_m"]).all()
    assert m["cross_fit"]["folds"] == 5 and sum(m["cross_fit"]["fold_sizes"]) == 30
    # the model as it is answers its own training photos exactly; out of fold no photo finds itself
    train = p["id"].astype(str).isin(ds.manifest.loc[ds.manifest["split"] == "train", "id"])
    assert train.sum() > 10 and (p.loc[train, "error_m"] > 0.5).all()
    assert "out of fold" in m["baseline"]["source"]
    assert m["baseline_mean_predictor_median_m"] > 0 and "Out of fold" in (out / "report.html").read_text()
    assert "robustness" not in m


def test_evaluate_cross_fit_matches_audit(tmp_path):
    ds = make_toy_dataset(tmp_path / "ds", n_spots=24, views=1, seed=2)
    model = PixelNN().fit(ds).save(tmp_path / "nn.cgps")
    assert main(["evaluate", str(model), str(ds.root), "--split", "train", "--cross-fit", "3", "--seed", "4",
                 "--out", str(tmp_path / "ev")]) == 0
    assert main(["audit", str(model), str(ds.root), "--split", "train", "--cross-fit", "3", "--seed", "4",
                 "--worst", "100", "--out", str(tmp_path / "au")]) == 0
    ev = pd.read_csv(tmp_path / "ev" / "predictions.csv", dtype={"id": str}).set_index("id")
    au = pd.read_csv(tmp_path / "au" / "audit.csv", dtype={"id": str}).set_index("id")
    assert set(ev.index) == set(au.index) and len(ev) == 12
    assert np.allclose(ev.loc[au.index, "lat"], au["pred_lat"], atol=1e-7)
    assert np.allclose(ev.loc[au.index, "lon"], au["pred_lon"], atol=1e-7)
    assert np.allclose(ev.loc[au.index, "error_m"], au["error_m"], atol=0.01)


def test_folds_keep_location_groups_together(tmp_path):
    ds = make_toy_dataset(tmp_path / "ds", n_spots=10, views=3, seed=1)  # 3 photos per spot, same position
    loc = PixelNN().fit(ds)
    rows = np.arange(len(ds))
    cf = cross_fit_predictions(loc, ds, rows, 4, quiet=True)
    spot = ds.manifest["spot"].to_numpy()
    for s in np.unique(spot):
        assert len(np.unique(cf.fold[spot == s])) == 1
    id_spot = dict(zip(ds.manifest["id"], spot))
    for i in rows:  # no photo is answered from another photo of its own spot
        assert id_spot[cf.prediction.neighbors[i][0]["id"]] != spot[i]
    f = assign_folds(np.repeat(np.arange(7), 2), 3, seed=0)
    assert sorted(np.bincount(f)) == [4, 4, 6]


def test_cross_fit_too_few_groups(tmp_path, capsys):
    ds = make_toy_dataset(tmp_path / "ds", n_spots=8, views=1)
    model = PixelNN().fit(ds).save(tmp_path / "nn.cgps")
    out = str(tmp_path / "o")
    assert main(["evaluate", str(model), str(ds.root), "--cross-fit", "5", "--out", out]) == 2  # 2 test spots
    assert "location groups" in capsys.readouterr().err
    assert main(["evaluate", str(model), str(ds.root), "--cross-fit", "1", "--out", out]) == 2
