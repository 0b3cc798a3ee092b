"""campusgps evaluate: files and keys per the contract, truth matching, clear errors."""
import json

import numpy as np
import pandas as pd
import pytest

from campusgps.cli.main import main
from campusgps.evaluation.inputs import load_truth, match_truth
from campusgps.localizers.base import MeanLocalizer

from conftest import make_toy_dataset

CONTRACT_KEYS = {"n", "mean_m", "median_m", "p75_m", "p90_m", "p95_m", "max_m", "acc_5m", "acc_10m", "acc_20m",
                 "acc_50m", "baseline_mean_predictor_median_m"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    ds = make_toy_dataset(root / "ds", n_spots=12, views=2)
    ds.manifest["condition"] = ["day", "night"] * (len(ds) // 2)  # the toy set is all day: add night rows
    ds.save()
    model = MeanLocalizer().fit(ds).save(root / "mean.cgps")
    m = ds.manifest
    truth = root / "truth.csv"  # file names in another folder: matched by base name
    pd.DataFrame({"file": ["queries/" + p.rsplit("/", 1)[-1] for p in m["source_path"]],
                  "true_lat": m["true_lat"], "true_lon": m["true_lon"]}).to_csv(truth, index=False)
    return root, ds, model, truth


def test_evaluate_writes_contract_files(setup, capsys):
    root, ds, model, truth = setup
    out = root / "out"
    rc = main(["evaluate", str(model), str(ds.root), "--truth", str(truth), "--out", str(out), "--robustness-n", "4"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "median" in printed and "report.html" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert CONTRACT_KEYS <= set(m)
    assert CONTRACT_KEYS <= set(m["vs_truth"])
    n_test = int((ds.manifest["split"] == "test").sum())
    assert m["n"] == n_test and m["vs_truth"]["matched"] == n_test
    assert 0 <= m["acc_50m"] <= 1 and m["seconds_per_image"] > 0
    assert set(m["by_condition"]) == {"day", "night"}
    assert sum(g["n"] for g in m["by_area"].values()) == n_test
    assert [r["name"] for r in m["robustness"]["rows"]] == ["clean", "rotation", "perspective", "darkening", "blur",
                                                             "jpeg", "occlusion"]
    # the mean model is the baseline itself: same median
    assert m["median_m"] == pytest.approx(m["baseline_mean_predictor_median_m"], abs=0.05)
    # how far the median could move on another draw of as many photos (bootstrap), vs labels and vs truth
    for block in (m, m["vs_truth"]):
        iv = block["median_interval"]
        assert iv["level"] == 0.9 and iv["lo_m"] <= block["median_m"] <= iv["hi_m"] and iv["hi_m"] > iv["lo_m"]
    p = pd.read_csv(out / "predictions.csv")
    assert list(p.columns[:10]) == ["file", "lat", "lon", "radius_m", "label_lat", "label_lon", "error_m",
                                    "true_lat", "true_lon", "error_vs_truth_m"]
    assert len(p) == n_test and np.isfinite(p["error_vs_truth_m"]).all()
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table" in html
    assert "src=\"http" not in html and "href=\"http" not in html  # offline, self-contained
    iv = m["vs_truth"]["median_interval"]
    assert f"90% interval {iv['lo_m']:.1f}–{iv['hi_m']:.1f} m" in html
    assert f"[{iv['lo_m']:.1f}-{iv['hi_m']:.1f}], within 20 m" in printed  # the one-line summary says it too


def test_evaluate_without_truth_has_no_truth_columns(setup):
    root, ds, model, _ = setup
    out = root / "out_nt"
    assert main(["evaluate", str(model), str(ds.root), "--out", str(out), "--robustness-n", "0"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert "vs_truth" not in m and "robustness" not in m
    assert list(pd.read_csv(out / "predictions.csv").columns[:7]) == ["file", "lat", "lon", "radius_m", "label_lat",
                                                                     "label_lon", "error_m"]
    assert "true_lat" not in pd.read_csv(out / "predictions.csv").columns


def test_truth_matching_by_base_name_disambiguates_folders(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("Image_Name,TRUE_LAT,true_lon\nphotos/1.jpg,1,1\nqueries/1.jpg,2,2\nqueries/2.jpg,3,3\n")
    t = load_truth(csv)
    man = pd.DataFrame({"source_path": ["/x/queries/1.jpg", "/y/photos/1.jpg", "C:\\z\\2.jpg", "/a/9.jpg"],
                        "file": ["images/a.jpg", "images/b.jpg", "images/c.jpg", "images/d.jpg"]})
    al, stats = match_truth(man, t)
    assert al["true_lat"].tolist()[:3] == [2, 1, 3] and np.isnan(al["true_lat"].iloc[3])
    assert stats == {"matched": 3, "unmatched": 1, "ambiguous": 0}


def test_bad_truth_columns_exit_2_with_one_clear_line(setup, capsys):
    root, ds, model, _ = setup
    bad = root / "bad.csv"
    bad.write_text("file,lat,lon\na.jpg,1,2\n")
    rc = main(["evaluate", str(model), str(ds.root), "--truth", str(bad), "--out", str(root / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("campusgps evaluate: error:") and "true_lat" in err[0] and "bad.csv" in err[0]


def test_truth_matching_nothing_exits_2(setup, capsys):
    root, ds, model, _ = setup
    other = root / "other.csv"
    other.write_text("file,true_lat,true_lon\nnope.jpg,31.2,34.8\n")
    assert main(["evaluate", str(model), str(ds.root), "--truth", str(other), "--out", str(root / "y")]) == 2
    err = capsys.readouterr().err
    assert "matched" in err and "other.csv" in err  # names the truth file the user gave, not a table


def test_missing_model_and_empty_split_exit_2(setup, tmp_path, capsys):
    root, ds, model, _ = setup
    assert main(["evaluate", str(tmp_path / "nope.cgps"), str(ds.root), "--out", str(tmp_path / "o")]) == 2
    assert "model file not found" in capsys.readouterr().err
    q = make_toy_dataset(tmp_path / "q", n_spots=4, views=1)
    q.manifest["split"] = ""  # a separately ingested session: never split
    q.save()
    assert main(["evaluate", str(model), str(q.root), "--out", str(tmp_path / "o")]) == 2
    assert "--split all" in capsys.readouterr().err
    assert main(["evaluate", str(model), str(q.root), "--split", "all", "--reference", str(ds.root),
                 "--robustness-n", "0", "--out", str(tmp_path / "o")]) == 0
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["n"] == 4 and "train split of" in m["baseline"]["source"]


def test_the_documented_python_api_is_the_function_whatever_was_imported_first():
    """``from campusgps.evaluation import evaluate`` (evaluate.py's docstring) once gave the *module* when the
    submodule had been imported before (the CLI does): "TypeError: 'module' object is not callable"."""
    import subprocess
    import sys

    code = ("import campusgps.evaluation.evaluate\n"
            "from campusgps.evaluation import evaluate\n"
            "assert callable(evaluate) and evaluate.__module__ == 'campusgps.evaluation.evaluate', evaluate\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_evaluate_says_how_far_the_mapping_labels_are_from_the_truth(tmp_path):
    """The positions a model learned from are noisy GPS too: evaluate measures them against the truth (the
    floor under the median) and, without truth, repeats what the phones claimed."""
    ds = make_toy_dataset(tmp_path / "ds", n_spots=10, views=2, label_noise_m=4.0)
    ds.manifest["accuracy_m"] = 5.0
    ds.save()
    model = MeanLocalizer().fit(ds).save(tmp_path / "mean.cgps")
    m = ds.manifest
    truth = tmp_path / "truth.csv"
    pd.DataFrame({"file": m["source_path"], "true_lat": m["true_lat"], "true_lon": m["true_lon"]}).to_csv(truth)
    out = tmp_path / "out"
    assert main(["evaluate", str(model), str(ds.root), "--truth", str(truth), "--out", str(out),
                 "--robustness-n", "0"]) == 0
    rl = json.loads((out / "metrics.json").read_text())["reference_labels"]
    train = m[m["split"] == "train"]
    le, ln = ds.frame.to_local(train["lat"].to_numpy(float), train["lon"].to_numpy(float))
    te, tn = ds.frame.to_local(train["true_lat"].to_numpy(float), train["true_lon"].to_numpy(float))
    assert rl["n"] == len(train) and rl["vs_truth"]["n"] == len(train)
    assert rl["vs_truth"]["median_m"] == pytest.approx(np.median(np.hypot(le - te, ln - tn)), abs=0.01)
    assert 2.0 < rl["vs_truth"]["median_m"] < 10.0 and rl["claimed_accuracy_median_m"] == 5.0
    html = (out / "report.html").read_text()
    assert f"themselves {rl['vs_truth']['median_m']:.1f} m from the truth" in html
    out2 = tmp_path / "out_nt"  # no truth: the phones' own claim
    assert main(["evaluate", str(model), str(ds.root), "--out", str(out2), "--robustness-n", "0"]) == 0
    rl2 = json.loads((out2 / "metrics.json").read_text())["reference_labels"]
    assert "vs_truth" not in rl2 and rl2["n_claimed"] == len(train)
    assert "GPS accurate to 5.0 m" in (out2 / "report.html").read_text()
