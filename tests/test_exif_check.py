"""A query's own EXIF GPS against the answer: exif_distance_m, exif_disagrees, exif_outside_area (issue 10)."""
import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from campusgps.cli.main import main
from campusgps.exif.metadata import gps_exif_bytes
from campusgps.geo import haversine_m

from conftest import make_toy_dataset
from campusgps.localizers.base import register
from test_serve import TinyRetrieval


@register
class SavedTiny(TinyRetrieval):
    method = "test-exif-tiny"

    def _state(self):
        return {"feats": self.feats, "en": self.en}, {"ids": self.ids}

    @classmethod
    def _from_state(cls, tensors, meta):
        loc = cls()
        loc.feats, loc.en, loc.ids, loc.thumbs = tensors["feats"], tensors["en"], list(meta["ids"]), {}
        return loc


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exifcheck")
    ds = make_toy_dataset(tmp / "ds", n_spots=12, views=2, seed=4)
    loc = SavedTiny().fit(ds)
    img = ds.load_image(0)
    plain = loc.predict([img])
    lat, lon = float(plain.lat[0]), float(plain.lon[0])
    north_80 = ds.frame.to_wgs84(*(np.array(ds.frame.to_local(lat, lon)) + [0.0, 80.0]))
    files = {}
    for name, gps in (("here", (lat, lon)), ("near", tuple(map(float, north_80))), ("paris", (48.8584, 2.2945)),
                      ("nogps", None)):
        buf = io.BytesIO()
        kw = {"exif": gps_exif_bytes(*gps)} if gps else {}
        Image.fromarray(img).save(buf, "JPEG", quality=95, **kw)
        files[name] = tmp / f"{name}.jpg"
        files[name].write_bytes(buf.getvalue())
    return loc, files, (lat, lon), tmp


def test_predict_checks_the_photos_own_gps(setup):
    loc, files, (lat, lon), _ = setup
    p = loc.predict([str(files[k]) for k in ("here", "near", "paris", "nogps")] + [files["here"].read_bytes()])
    assert np.allclose(p.lat, lat) and np.allclose(p.lon, lon)  # the pixels decide the answer, not the GPS
    flags = [set(f) - {"tiny"} for f in p.flags]
    assert flags[0] == set() and p.exif_distance_m[0] < 0.01
    assert flags[1] == {"exif_disagrees"} and p.exif_distance_m[1] == pytest.approx(80.0, abs=0.5)
    assert flags[2] == {"exif_disagrees", "exif_outside_area"}
    assert p.exif_distance_m[2] == pytest.approx(float(haversine_m(48.8584, 2.2945, lat, lon)), rel=1e-6)
    assert flags[3] == set() and np.isnan(p.exif_distance_m[3])
    assert flags[4] == set() and p.exif_distance_m[4] < 0.01  # raw bytes are checked too
    arr = loc.predict([np.asarray(Image.open(files["paris"]))])  # a decoded array has no EXIF to check
    assert np.isnan(arr.exif_distance_m[0]) and "exif_outside_area" not in arr.flags[0]


def test_predict_cli_writes_exif_columns(setup, tmp_path):
    loc, files, _, tmp = setup
    model = str(loc.save(tmp_path / "m.cgps"))
    assert main(["predict", model, str(files["paris"]), str(files["nogps"]), "--out", str(tmp_path / "p.csv")]) == 0
    rows = {r["file"].rsplit("/", 1)[-1]: r for r in csv.DictReader(open(tmp_path / "p.csv"))}
    assert set(rows["paris.jpg"]["flags"].split(";")) >= {"exif_outside_area", "exif_disagrees"}
    assert float(rows["paris.jpg"]["exif_distance_m"]) > 1e6 and rows["nogps.jpg"]["exif_distance_m"] == ""
    assert main(["predict", model, str(files["near"]), "--out", str(tmp_path / "p.geojson")]) == 0
    props = json.loads((tmp_path / "p.geojson").read_text())["features"][0]["properties"]
    assert "exif_disagrees" in props["flags"] and props["exif_distance_m"] == pytest.approx(80.0, abs=0.5)


def test_api_reports_exif_distance(setup):
    from fastapi.testclient import TestClient

    from campusgps.serving.app import create_app
    from campusgps.serving.settings import ServeSettings

    loc, files, _, _ = setup
    with TestClient(create_app(loc, ServeSettings())) as c:
        paris = c.post("/v1/locate", files={"image": ("p.jpg", files["paris"].read_bytes(), "image/jpeg")}).json()
        plain = c.post("/v1/locate", content=files["nogps"].read_bytes()).json()
    assert {"exif_outside_area", "exif_disagrees"} <= set(paris["flags"]) and paris["exif_distance_m"] > 1e6
    assert plain["exif_distance_m"] is None and not any(f.startswith("exif") for f in plain["flags"])
    js = (__import__("campusgps.serving", fromlist=["x"]).__path__[0]) + "/static/app.js"
    assert "exif_distance_m" in open(js).read()
