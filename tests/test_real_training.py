"""Every method trains on a small multi-phone set of *real* files (../shared/data/exif-corpus).

The corpus files that carry GPS come from ~15 makers (iPhone HEIC with offsets, Samsung/Nokia/Pixel,
Nikon, DJI/FLIR 16-bit thermal TIFF, a PNG with an eXIf chunk, Hasselblad drone...) at sizes from 1x1 to
4032x3024, with times that mix offsets, naive local times, sub-seconds and none at all. Their positions are
spread over four continents, so the test *rewrites their positions* into a 120 m synthetic area (a labels
CSV, which ingest prefers over EXIF GPS), keeping the real pixels, times, makers and sizes: the point is
that nothing crashes whatever the mix, not accuracy.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from realdata import CORPUS, needs_corpus

pytestmark = [needs_corpus, pytest.mark.slow]


@pytest.fixture(scope="module")
def real_set(tmp_path_factory):
    from campusgps.cli.main import main
    from campusgps.exif import read_metadata
    from campusgps.geo import LocalFrame

    tmp = tmp_path_factory.mktemp("real")
    with_gps = []
    for p in sorted(CORPUS.rglob("*")):
        try:
            if p.is_file() and p.suffix.lower() != ".md" and read_metadata(p).has_gps:
                with_gps.append(p.relative_to(CORPUS).as_posix())
        except Exception:
            continue
    assert len(with_gps) >= 25
    rng = np.random.default_rng(0)
    frame = LocalFrame(31.2620, 34.8010)
    en = rng.uniform(-60, 60, size=(len(with_gps), 2))
    lat, lon = frame.to_wgs84(en[:, 0], en[:, 1])
    pd.DataFrame({"file": with_gps, "lat": lat, "lon": lon}).to_csv(tmp / "labels.csv", index=False)
    ds = tmp / "ds"
    assert main(["ingest", str(CORPUS), "--out", str(ds), "--labels", str(tmp / "labels.csv"),
                 "--workers", "1", "--max-side", "256", "--quiet"]) == 0
    assert main(["split", str(ds), "--val", "0.2", "--test", "0.2", "--group-radius-m", "1"]) == 0
    return tmp, ds


def test_real_set_is_multi_phone_with_mixed_times(real_set):
    from campusgps.dataset import Dataset

    m = Dataset.open(real_set[1]).manifest
    assert len(m) >= 25 and m["camera"].nunique() >= 10
    t = m["taken_at"].astype(str)
    assert t.str.contains(r"[+-]\d\d:\d\d$").any() and (~t.str.contains(r"[+-]\d\d:\d\d$") & (t != "")).any()
    assert set(m["split"]) == {"train", "val", "test"}


@pytest.mark.parametrize("method,flags", [
    ("regression", ["--backbone", "tiny-cnn", "--epochs", "3", "--min-train", "4"]),
    ("retrieval", ["--backbone", "tiny-cnn", "--ft-steps", "5"]),
    ("hybrid", ["--backbone", "tiny-cnn", "--ft-steps", "5"]),
])
def test_every_method_trains_and_predicts(real_set, method, flags, capsys):
    from campusgps.cli.main import main

    tmp, ds = real_set
    out = tmp / f"{method}.cgps"
    rc = main(["train", str(ds), "--method", method, "--out", str(out), *flags])
    assert rc == 0, capsys.readouterr().err
    _predict_ok(tmp, out, ds, capsys)
    _evaluate_ok(tmp, out, ds, capsys, explains_failures=method != "regression")


def test_ensemble_of_real_trained_members(real_set, capsys):
    from campusgps.cli.main import main

    tmp, ds = real_set
    members = [tmp / f"{m}.cgps" for m in ("regression", "retrieval", "hybrid")]
    if not all(p.exists() for p in members):
        pytest.skip("members are trained by test_every_method_trains_and_predicts")
    out = tmp / "ensemble.cgps"
    rc = main(["train", str(ds), "--method", "ensemble", "--members", ",".join(map(str, members)), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    _predict_ok(tmp, out, ds, capsys)


def _predict_ok(tmp, model, ds, capsys):
    from campusgps.cli.main import main
    from campusgps.dataset import Dataset

    test = Dataset.open(ds).subset("test")
    csv = tmp / f"{model.stem}.csv"
    assert main(["predict", str(model), *map(str, test.paths()), "--out", str(csv)]) == 0, capsys.readouterr().err
    got = pd.read_csv(csv)
    assert len(got) == len(test) and np.isfinite(got[["lat", "lon", "radius_m"]].to_numpy()).all()


def _evaluate_ok(tmp, model, ds, capsys, explains_failures: bool):
    """evaluate on every real photo: each answer more than 20 m off gets its cause (not for regression, which
    reports no neighbours)."""
    import json

    from campusgps.cli.main import main

    out = tmp / f"eval-{model.stem}"
    rc = main(["evaluate", str(model), str(ds), "--split", "all", "--robustness-n", "0", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    p = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    wrong = pd.to_numeric(p["error_m"]) > 20
    assert wrong.any()  # positions were drawn at random over 120 m: a few real photos cannot all be right
    if explains_failures:
        assert m["failures"]["n_wrong"] == int(wrong.sum())
        assert (p.loc[wrong, "failure"] != "").all() and (p.loc[~wrong, "failure"] == "").all()
    else:
        assert "failures" not in m and (p["failure"] == "").all()
    iv = m["median_interval"]  # the median's bootstrap interval, on real photos too
    assert iv["lo_m"] <= m["median_m"] <= iv["hi_m"]


def test_compare_real_trained_models(real_set, capsys):
    """compare on every real photo: the second model's median against the first's, with its paired interval."""
    from campusgps.cli.main import main

    tmp, ds = real_set
    models = [tmp / f"{m}.cgps" for m in ("regression", "hybrid")]
    if not all(p.exists() for p in models):
        pytest.skip("the models are trained by test_every_method_trains_and_predicts")
    out = tmp / "cmp"
    assert main(["compare", *map(str, models), str(ds), "--split", "all", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    df = pd.read_csv(out / "compare.csv").set_index("model")
    hy, reg = df.loc["hybrid.cgps"], df.loc["regression.cgps"]
    assert hy["vs_first_median_lo"] <= hy["vs_first_median_diff"] <= hy["vs_first_median_hi"]
    assert hy["vs_first_median_diff"] == pytest.approx(hy["median_m"] - reg["median_m"], abs=2e-3)
    assert pd.isna(reg["vs_first_median_diff"])
    assert "Differences to regression.cgps" in (out / "compare.html").read_text()
