"""Confidence and alternatives where users see them: predict CSV/GeoJSON, --min-confidence, evaluate's
predictions.csv and metrics.json, compare, and the HTTP API (issue 12 items 3-5).

The model is ``ConfidentFake`` (tests/fake_confident.py): its confidence is a known function of each photo,
so every shown number can be checked against the image itself.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from fake_confident import ConfidentFake
from PIL import Image

from campusgps.answers import CONFIDENCE_COLUMNS, LOW_CONFIDENCE, confidence_columns, withhold_below
from campusgps.cli.main import main
from campusgps.localizers.base import Localizer, MeanLocalizer


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    from conftest import make_toy_dataset

    return make_toy_dataset(tmp_path_factory.mktemp("conf") / "toy", n_spots=12, views=3, extent_m=40.0)


@pytest.fixture(scope="module")
def model(ds, tmp_path_factory):
    path = tmp_path_factory.mktemp("confmodel") / "fake.cgps"
    ConfidentFake().fit(ds).save(path)
    return path


@pytest.fixture(scope="module")
def photos(ds, model, tmp_path_factory):
    """Photos copied to a folder, with the fake's confidence per file name."""
    folder = tmp_path_factory.mktemp("photos")
    loc = Localizer.load(model)
    out = {}
    for i, p in enumerate(ds.paths()[:12]):
        dst = folder / f"p{i:02d}.jpg"
        dst.write_bytes(p.read_bytes())
        out[dst.name] = loc.confidence_of(np.asarray(Image.open(dst).convert("RGB")))
    return folder, out


def _rows(path):
    return {r["file"].rsplit("/", 1)[-1]: r for r in csv.DictReader(open(path))}


def test_predict_csv_has_confidence_and_alternatives(model, photos, tmp_path):
    folder, conf = photos
    out = tmp_path / "located.csv"
    assert main(["predict", str(model), str(folder), "--out", str(out)]) == 0
    header = next(csv.reader(open(out)))
    assert header == ["file", "lat", "lon", "radius_m", *CONFIDENCE_COLUMNS, "flags", "exif_distance_m"]
    rows = _rows(out)
    assert set(rows) == set(conf)
    for name, r in rows.items():
        c = conf[name]
        assert float(r["confidence"]) == pytest.approx(c, abs=1e-4)
        n_alt = 2 if c < 0.6 else 1 if c < 0.85 else 0
        for k in (1, 2):
            cells = [r[f"alt{k}_{f}"] for f in ("lat", "lon", "p")]
            if k <= n_alt:
                assert all(cells), (name, r)
                assert float(cells[2]) == pytest.approx((1 - c) * (0.5, 0.25)[k - 1], abs=1e-4)
                assert abs(float(cells[0]) - float(r["lat"])) < 0.01  # a place on the same campus
            else:
                assert cells == ["", "", ""], (name, r)
    assert {2 if c < 0.6 else 1 if c < 0.85 else 0 for c in conf.values()} >= {0, 2}, "fixture lacks variety"


def test_min_confidence_withholds_low_answers_but_keeps_their_rows(model, photos, tmp_path, capsys):
    folder, conf = photos
    p = float(np.median(list(conf.values())))
    out = tmp_path / "sure.csv"
    assert main(["predict", str(model), str(folder), "--min-confidence", str(p), "--out", str(out)]) == 0
    assert "withheld" in capsys.readouterr().err
    rows = _rows(out)
    assert set(rows) == set(conf)  # every photo keeps its row
    low = {n for n, c in conf.items() if c < p}
    assert 0 < len(low) < len(conf)
    for name, r in rows.items():
        flags = r["flags"].split(";") if r["flags"] else []
        if name in low:
            assert LOW_CONFIDENCE in flags
            assert r["lat"] == r["lon"] == r["radius_m"] == "" and r["alt1_lat"] == r["alt2_lat"] == ""
            assert float(r["confidence"]) == pytest.approx(conf[name], abs=1e-4)  # says why
        else:
            assert LOW_CONFIDENCE not in flags and float(r["lat"]) > 31 and float(r["radius_m"]) > 0

    gj = tmp_path / "sure.geojson"
    assert main(["predict", str(model), str(folder), "--min-confidence", str(p), "--out", str(gj)]) == 0
    feats = {f["properties"]["file"].rsplit("/", 1)[-1]: f for f in json.loads(gj.read_text())["features"]}
    assert set(feats) == set(conf)
    for name, f in feats.items():
        props = f["properties"]
        assert set(CONFIDENCE_COLUMNS) <= set(props)
        if name in low:
            assert f["geometry"] is None and props["lat"] is None and LOW_CONFIDENCE in props["flags"]
        else:
            assert f["geometry"]["coordinates"] == [props["lon"], props["lat"]]
            assert props["confidence"] == pytest.approx(conf[name], abs=1e-9)


@pytest.mark.parametrize("bad", ["1.5", "-0.1", "nan", "sure"])
def test_min_confidence_is_validated(model, photos, bad, capsys):
    folder, _ = photos
    assert main(["predict", str(model), str(folder), f"--min-confidence={bad}"]) == 2
    err = capsys.readouterr().err
    assert "--min-confidence" in err and "between 0 and 1" in err and "Traceback" not in err


def test_min_confidence_with_a_model_without_confidence(ds, photos, tmp_path, capsys):
    folder, _ = photos
    mean = tmp_path / "mean.cgps"
    MeanLocalizer().fit(ds).save(mean)
    assert main(["predict", str(mean), str(folder)]) == 0  # no confidence: empty cells, still works
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("file,lat,lon,radius_m,confidence,alt1_lat")
    assert out[1].split(",")[4:11] == [""] * 7
    assert main(["predict", str(mean), str(folder), "--min-confidence", "0.5"]) == 2
    assert "no confidence" in capsys.readouterr().err


def test_withhold_below_and_columns_by_hand():
    from campusgps.localizers.base import Prediction

    p = Prediction(east=np.zeros(3), north=np.zeros(3), radius_m=np.full(3, 9.0),
                   confidence=np.array([0.9, 0.3, np.nan]),
                   alternatives=[[], [{"lat": 1.0, "lon": 2.0, "probability": 0.4, "radius_m": 5.0}], []])
    p.lat, p.lon = np.full(3, 31.0), np.full(3, 34.0)
    cols = confidence_columns(p)
    assert cols["alt1_p"][1] == 0.4 and np.isnan(cols["alt1_p"][0]) and np.isnan(cols["alt2_lat"]).all()
    low = withhold_below(p, 0.5)
    assert list(low) == [1, 2]  # unknown confidence counts as not confident enough
    assert p.lat[0] == 31.0 and np.isnan(p.lat[1:]).all() and np.isnan(p.radius_m[1:]).all()
    assert p.alternatives[1] == [] and p.flags[1] == [LOW_CONFIDENCE]
    withhold_below(p, 0.5)
    assert p.flags[1] == [LOW_CONFIDENCE]  # once


# ------------------------------------------------------------------------------------------ evaluate, compare
@pytest.fixture(scope="module")
def evaluated(ds, model, tmp_path_factory):
    import pandas as pd

    root = tmp_path_factory.mktemp("confeval")
    m = ds.manifest
    truth = root / "truth.csv"
    pd.DataFrame({"file": [p.rsplit("/", 1)[-1] for p in m["source_path"]], "true_lat": m["true_lat"],
                  "true_lon": m["true_lon"]}).to_csv(truth, index=False)
    out = root / "eval"
    assert main(["evaluate", str(model), str(ds.root), "--split", "all", "--truth", str(truth), "--out", str(out),
                 "--robustness-n", "0"]) == 0
    return root, out, truth


def test_evaluate_predictions_csv_and_metrics_block(ds, evaluated):
    import pandas as pd

    from campusgps.evaluation.confidence import confidence_report

    _, out, _ = evaluated
    p = pd.read_csv(out / "predictions.csv")
    cols = list(p.columns)
    assert cols[:10] == ["file", "lat", "lon", "radius_m", "label_lat", "label_lon", "error_m", "true_lat",
                         "true_lon", "error_vs_truth_m"]
    assert cols[10:17] == CONFIDENCE_COLUMNS and "flags" in cols
    assert p["confidence"].between(0.02, 0.98).all() and p["alt1_p"].notna().any() and p["alt2_p"].isna().any()

    text = (out / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    m = json.loads(text)
    for where, err_col, pos in ((m, "error_m", ("label_lat", "label_lon")),
                                (m["vs_truth"], "error_vs_truth_m", ("true_lat", "true_lon"))):
        b = where["confidence"]
        assert b["available"] is True and b["n"] == len(p)
        assert {"auc", "ece", "reliability", "risk_coverage", "radius", "top3_recall", "high_confidence"} <= set(b)
        assert len(b["reliability"]) == 5 and [r["coverage"] for r in b["risk_coverage"]][-1] == 1.0
        assert [t["third"] for t in b["radius"]["coverage_by_third"]] == ["low", "middle", "high"]
        # the block is the metrics of the very columns written to predictions.csv
        alt = np.stack([_dist(p, k, pos) for k in (1, 2)], axis=1)
        ref = confidence_report(p[err_col].to_numpy(float), p["confidence"].to_numpy(float),
                                p["radius_m"].to_numpy(float), alt)
        assert b["auc"] == pytest.approx(ref["auc"], abs=1e-3) and b["ece"] == pytest.approx(ref["ece"], abs=1e-3)
        assert b["top3_recall"] == pytest.approx(ref["top3_recall"], abs=1e-3)
        hit = (p[err_col] <= 20) | (np.nan_to_num(alt, nan=1e9) <= 20).any(axis=1)
        assert b["top3_recall"] == pytest.approx(hit.mean(), abs=1e-3)
        assert b["top3_recall"] > b["fraction_right"]  # the fixture's alternatives do rescue some answers
    html = (out / "report.html").read_text()
    assert "<h2>Confidence</h2>" in html and 'alt="reliability diagram"' in html
    assert 'alt="risk-coverage curve"' in html and "Radius coverage by confidence third" in html


def test_evaluate_prints_the_confidence_summary(ds, model, evaluated, capsys):
    root, _, truth = evaluated
    capsys.readouterr()
    assert main(["evaluate", str(model), str(ds.root), "--split", "all", "--truth", str(truth),
                 "--out", str(root / "again"), "--robustness-n", "0"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("confidence:")]
    b = json.loads((root / "again" / "metrics.json").read_text())["vs_truth"]["confidence"]
    assert line == [f"confidence: AUC {b['auc']:.2f}, calibration error {b['ece']:.3f}, answer or an alternative "
                    f"within 20 m {100 * b['top3_recall']:.1f} % vs truth"]


def _dist(p, k, pos):
    from campusgps.geo import haversine_m

    return haversine_m(p[pos[0]].to_numpy(float), p[pos[1]].to_numpy(float), p[f"alt{k}_lat"].to_numpy(float),
                       p[f"alt{k}_lon"].to_numpy(float))


def test_model_without_confidence_and_compare_side_by_side(ds, model, evaluated, capsys):
    import pandas as pd

    root, _, truth = evaluated
    mean = root / "mean.cgps"
    MeanLocalizer().fit(ds).save(mean)
    out = root / "eval_mean"
    assert main(["evaluate", str(mean), str(ds.root), "--split", "all", "--out", str(out),
                 "--robustness-n", "0"]) == 0
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text
    b = json.loads(text)["confidence"]
    assert b["available"] is False and b["auc"] is None and b["ece"] is None and b["top3_recall"] is None
    assert "gives no confidence" in (out / "report.html").read_text()
    assert pd.read_csv(out / "predictions.csv")["confidence"].isna().all()

    capsys.readouterr()
    cmp = root / "cmp"
    assert main(["compare", str(model), str(mean), str(ds.root), "--split", "all", "--truth", str(truth),
                 "--out", str(cmp)]) == 0
    printed = capsys.readouterr().out
    assert "conf AUC" in printed and "top-3" in printed
    df = pd.read_csv(cmp / "compare.csv").set_index("model")
    ev = json.loads((evaluated[1] / "metrics.json").read_text())["vs_truth"]["confidence"]
    assert df.loc["fake.cgps", "confidence_auc"] == pytest.approx(ev["auc"], abs=1e-4)
    assert df.loc["fake.cgps", "top3_recall"] == pytest.approx(ev["top3_recall"], abs=1e-4)
    assert np.isnan(df.loc["mean.cgps", "confidence_auc"])
    html = (cmp / "compare.html").read_text()
    assert "confidence AUC" in html and "top-3 ≤20 m" in html


# ------------------------------------------------------------------------------------------ HTTP API
def test_api_answers_confidence_and_alternatives(ds, model, photos):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from campusgps.serving.app import create_app
    from campusgps.serving.settings import ServeSettings

    folder, conf = photos
    loc = Localizer.load(model)
    by_n = {}
    for name, c in conf.items():
        by_n.setdefault(2 if c < 0.6 else 1 if c < 0.85 else 0, name)
    assert {0, 2} <= set(by_n)
    with TestClient(create_app(loc, ServeSettings())) as client:
        for n_alt, name in sorted(by_n.items()):
            data = (folder / name).read_bytes()
            body = client.post("/v1/locate", files={"image": (name, data, "image/jpeg")}).json()
            expect = loc.predict([data])
            assert body["confidence"] == pytest.approx(expect.confidence[0], abs=1e-9)
            assert len(body["alternatives"]) == n_alt
            for a, e in zip(body["alternatives"], expect.alternatives[0]):
                assert set(a) == {"lat", "lon", "radius_m", "probability"}
                assert a["lat"] == pytest.approx(e["lat"]) and a["lon"] == pytest.approx(e["lon"])
                assert a["probability"] == pytest.approx(e["probability"]) and a["radius_m"] == 15.0

    mean = MeanLocalizer().fit(ds)  # a model without confidence: null and an empty list, not NaN
    with TestClient(create_app(mean, ServeSettings())) as client:
        r = client.post("/v1/locate", content=(folder / name).read_bytes())
        assert r.status_code == 200 and "NaN" not in r.text
        assert r.json()["confidence"] is None and r.json()["alternatives"] == []


def test_parquet_has_the_same_rows_as_csv_with_min_confidence(model, photos, tmp_path, capsys):
    """The streamed (engine) path writes the local path's columns and honours --min-confidence."""
    pq = pytest.importorskip("pyarrow.parquet")
    from campusgps.answers import ROW_FIELDS

    folder, conf = photos
    p = float(np.median(list(conf.values())))
    for out in ("a.csv", "a.parquet"):
        assert main(["predict", str(model), str(folder), "--min-confidence", str(p), "--batch-size", "5",
                     "--out", str(tmp_path / out)]) == 0
        assert "withheld" in capsys.readouterr().err
    rows = list(csv.DictReader(open(tmp_path / "a.csv")))
    t = pq.read_table(tmp_path / "a.parquet").to_pandas()
    assert list(t.columns) == ["row"] + [c for c, _ in ROW_FIELDS] and len(t) == len(rows) == len(conf)
    assert t["file"].tolist() == [r["file"] for r in rows] and t["flags"].tolist() == [r["flags"] for r in rows]
    for c, kind in ROW_FIELDS:
        if kind in ("deg", "m", "p"):
            want = np.array([float(r[c]) if r[c] else np.nan for r in rows])
            tol = {"deg": 1e-7, "m": 0.006, "p": 6e-5}[kind]  # the CSV's rounding
            np.testing.assert_allclose(t[c].to_numpy(float), want, rtol=0, atol=tol, equal_nan=True)
    low = t["confidence"] < p
    assert low.any() and t.loc[low, "lat"].isna().all() and t.loc[~low, "lat"].notna().all()
    assert all(LOW_CONFIDENCE in f.split(";") for f in t.loc[low, "flags"])
