"""`campusgps train` and `campusgps predict` as a user runs them."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from campusgps.cli.main import main


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    from conftest import make_toy_dataset

    return make_toy_dataset(tmp_path_factory.mktemp("cli") / "toy", n_spots=16, views=4, extent_m=20.0)


@pytest.fixture(scope="module")
def model(ds, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "model.cgps"
    rc = main(["train", str(ds.root), "--method", "regression", "--backbone", "tiny-cnn", "--epochs", "30",
               "--views", "1", "--out", str(out)])
    assert rc == 0
    return out


def test_train_writes_bundle_and_run_record(model):
    assert model.exists() and not model.with_name(model.name + ".ckpt").exists()
    rec = json.loads(model.with_name(model.name + ".run.json").read_text())
    assert rec["method"] == "regression" and rec["config"]["backbone"] == "tiny-cnn"
    assert rec["summary"]["val"]["median_m"] > 0


def test_predict_csv_folder_with_bad_files(ds, model, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, p in enumerate(ds.subset("test").paths()[:3]):
        (photos / f"p{i}.jpg").write_bytes(p.read_bytes())
    Image.fromarray(np.full((40, 60), 100, np.uint8)).save(photos / "gray.png")
    Image.fromarray(np.zeros((40, 60, 4), np.uint8)).save(photos / "rgba.png")
    Image.fromarray((np.arange(40 * 60).reshape(40, 60) * 20).astype(np.uint16)).save(photos / "deep.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "located.csv"
    rc = main(["predict", str(model), str(photos), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0
    assert "broken.jpg" in err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and {"file", "lat", "lon", "radius_m"} <= set(rows[0])
    for r in rows:
        assert abs(float(r["lat"]) - 31.262) < 0.01 and float(r["radius_m"]) > 0


def test_predict_geojson_and_stdout(ds, model, tmp_path, capsys):
    f = str(ds.paths()[0])
    out = tmp_path / "x.geojson"
    assert main(["predict", str(model), f, "--out", str(out)]) == 0
    gj = json.loads(out.read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == 1
    lon, lat = gj["features"][0]["geometry"]["coordinates"]
    assert gj["features"][0]["properties"]["lat"] == pytest.approx(lat)
    capsys.readouterr()
    assert main(["predict", str(model), f]) == 0
    assert capsys.readouterr().out.startswith("file,lat,lon,radius_m")


def test_bad_input_exits_2(ds, model, tmp_path, capsys):
    from campusgps.dataset import Dataset

    unsplit = Dataset(root=tmp_path / "unsplit", manifest=ds.manifest.assign(split=""), frame=ds.frame)
    unsplit.save()
    assert main(["train", str(unsplit.root), "--backbone", "tiny-cnn", "--out", str(tmp_path / "m.cgps")]) == 2
    assert "campusgps split" in capsys.readouterr().err
    from campusgps.cli.train import _method_classes

    if "retrieval" in dict(_method_classes()):  # a retrieval-only flag given to regression is refused
        assert main(["train", str(ds.root), "--method", "regression", "--k", "5",
                     "--out", str(tmp_path / "m.cgps")]) == 2
        assert "do not apply" in capsys.readouterr().err
    garbage = tmp_path / "g.cgps"
    garbage.write_text("hello")
    assert main(["predict", str(garbage), str(ds.paths()[0])]) == 2
    assert "not a campusgps model bundle" in capsys.readouterr().err
    assert main(["predict", str(model), str(tmp_path / "nothing_here")]) == 2
