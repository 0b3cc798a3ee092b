"""campusgps compare: several models, one table (plus the baseline row), overlaid CDFs."""
import pandas as pd
import pytest

from campusgps.cli.main import main
from campusgps.localizers.base import MeanLocalizer

from conftest import make_toy_dataset
from test_audit import PixelNN


def test_compare_two_models(tmp_path, capsys):
    ds = make_toy_dataset(tmp_path / "ds", n_spots=16, views=1, extent_m=400.0)  # spread out: some answers wrong
    m1 = MeanLocalizer().fit(ds).save(tmp_path / "mean.cgps")
    m2 = PixelNN().fit(ds).save(tmp_path / "nn.cgps")
    truth = tmp_path / "truth.csv"
    man = ds.manifest
    pd.DataFrame({"filename": [p.rsplit("/", 1)[-1] for p in man["source_path"]], "true_lat": man["true_lat"],
                  "true_lon": man["true_lon"], "condition": "day"}).to_csv(truth, index=False)
    out = tmp_path / "cmp"
    assert main(["compare", str(m1), str(m2), str(ds.root), "--truth", str(truth), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mean.cgps" in printed and "nn.cgps" in printed and "mean-position baseline" in printed
    assert "vs first [90 %]" in printed
    df = pd.read_csv(out / "compare.csv")
    assert df["model"].tolist() == ["mean.cgps", "nn.cgps", "mean-position baseline"]
    assert {"median_m", "p90_m", "acc_20m", "truth_median_m", "radius_coverage", "seconds_per_image"} <= set(df.columns)
    assert (df["n"] == int((man["split"] == "test").sum())).all()
    html = (out / "compare.html").read_text()
    assert html.count("<table") >= 1 and html.count("data:image/png;base64,") == 2  # CDFs vs truth and labels
    # why the wrong answers are wrong: the nearest-neighbour model reports neighbours, the mean model none
    causes = ["unmapped", "not_found", "not_verified", "outvoted"]
    nn, mean = df.set_index("model").loc["nn.cgps"], df.set_index("model").loc["mean.cgps"]
    assert nn["wrong"] > 0 and nn["wrong"] == round((1 - nn["truth_acc_20m"]) * nn["n"])
    assert nn[causes].sum() == nn["wrong"] and nn["not_verified"] == 0
    assert mean[["wrong", *causes]].isna().all()
    assert "Why the wrong answers are wrong" in html
    # is the nearest-neighbour model's median really different from the mean model's? On 4 test photos the
    # paired bootstrap interval is wide and holds 0: compare says so instead of crowning a winner by luck
    assert mean[["vs_first_median_diff", "vs_first_median_lo", "vs_first_median_hi"]].isna().all()
    assert nn["vs_first_median_lo"] < 0 < nn["vs_first_median_hi"]
    assert nn["vs_first_median_lo"] <= nn["vs_first_median_diff"] <= nn["vs_first_median_hi"]
    assert nn["vs_first_median_diff"] == pytest.approx(nn["truth_median_m"] - mean["truth_median_m"], abs=2e-3)
    assert "Differences to mean.cgps" in html and "not told apart from noise" in html
    nn_line = next(line for line in printed.splitlines() if line.startswith("nn.cgps"))
    assert f"{nn['vs_first_median_diff']:+.2f} [{nn['vs_first_median_lo']:+.2f}, {nn['vs_first_median_hi']:+.2f}]" in nn_line


def test_compare_needs_models_and_a_dataset(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "only_one"), "--out", str(tmp_path / "o")]) == 2
    assert "MODEL" in capsys.readouterr().err
