"""`campusgps serve`: the HTTP API, its limits, micro-batching and the CLI wrapper.

Uses MeanLocalizer (the real baseline) and ``TinyRetrieval`` below, a small but real nearest-neighbour
localizer over colour-layout features that keeps reference positions and thumbnails, so neighbours,
thumbnail URLs and the basemap payload are exercised without waiting for the big methods. Network access
is loopback only; every request loop is bounded.
"""
import concurrent.futures as cf
import contextlib
import io
import socket
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from campusgps.localizers.base import Localizer, MeanLocalizer, Prediction

fastapi = pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from campusgps.serving.app import create_app  # noqa: E402
from campusgps.serving.batcher import MicroBatcher  # noqa: E402
from campusgps.serving.payloads import convex_hull  # noqa: E402
from campusgps.serving.settings import ServeSettings  # noqa: E402


# ------------------------------------------------------------------------------------------ helpers
def _features(img: np.ndarray) -> np.ndarray:
    a = np.asarray(Image.fromarray(img).resize((8, 6), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    f = a.ravel()
    return f / (np.linalg.norm(f) + 1e-9)


class TinyRetrieval(Localizer):
    """k-nearest reference photos by colour layout; keeps positions and JPEG thumbnails (test helper)."""

    method = "tiny-retrieval"

    def fit(self, dataset, **opts):
        train = dataset.subset("train")
        self.frame = dataset.frame
        self.ids = list(train.manifest["id"])
        self.en = train.en()
        self.feats = np.stack([_features(train.load_image(i)) for i in range(len(train))])
        self.thumbs = {}
        for i, rid in enumerate(self.ids):
            buf = io.BytesIO()
            Image.fromarray(train.load_image(i)).save(buf, "JPEG", quality=80)
            self.thumbs[rid] = buf.getvalue()
        return self

    def _predict_arrays(self, images):
        q = np.stack([_features(im) for im in images])
        sims = q @ self.feats.T
        out_e, out_n, nbs = [], [], []
        for s in sims:
            top = np.argsort(-s)[:3]
            w = np.maximum(s[top], 1e-6)
            e, n = (self.en[top] * w[:, None]).sum(0) / w.sum()
            out_e.append(e)
            out_n.append(n)
            nbs.append([{"id": self.ids[j], "east": float(self.en[j, 0]), "north": float(self.en[j, 1]),
                         "score": float(s[j])} for j in top])
        n = len(images)
        return Prediction(east=np.array(out_e), north=np.array(out_n), radius_m=np.full(n, 12.5),
                          neighbors=nbs, flags=[["tiny"] for _ in range(n)])

    def input_max_side(self):
        return 128

    def reference_thumbnail(self, ref_id):
        return self.thumbs.get(ref_id)

    def reference_positions(self):
        lat, lon = self.frame.to_wgs84(self.en[:, 0], self.en[:, 1])
        return {"lat": lat, "lon": lon, "id": self.ids}


class SlowLocalizer(Localizer):
    """Wraps another localizer; sleeps per predict() call and records batch sizes (for batching tests)."""

    method = "slow"

    def __init__(self, inner, delay_s=0.05, fail_on_black=False):
        super().__init__()
        self.inner, self.delay_s, self.fail_on_black = inner, delay_s, fail_on_black
        self.frame = inner.frame
        self.batch_sizes = []

    def _predict_arrays(self, images):
        self.batch_sizes.append(len(images))
        time.sleep(self.delay_s)
        if self.fail_on_black and any(int(im.max()) == 0 for im in images):
            raise RuntimeError("cannot locate an all-black photo")
        return self.inner._predict_arrays(images)

    def input_max_side(self):
        return self.inner.input_max_side()


def jpeg_bytes(w=320, h=240, seed=0, color=None) -> bytes:
    rng = np.random.default_rng(seed)
    a = np.zeros((h, w, 3), np.uint8) + np.asarray(color, np.uint8) if color is not None else \
        rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def png_with_declared_size(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w x h pixels (the shape of a decompression bomb)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + \
        chunk(b"IEND", b"")


@contextlib.contextmanager
def live_server(app):
    """Run ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           limit_concurrency=256))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not t.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(10)
        sock.close()


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from conftest import make_toy_dataset

    return make_toy_dataset(tmp_path_factory.mktemp("serve") / "toy", n_spots=8, views=3)


@pytest.fixture(scope="module")
def mean_model(toy):
    return MeanLocalizer().fit(toy)


@pytest.fixture(scope="module")
def tiny_model(toy):
    return TinyRetrieval().fit(toy)


@pytest.fixture(scope="module")
def client(mean_model):
    app = create_app(mean_model, ServeSettings(max_upload_mb=1.0, max_pixels=4_000_000))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def photo(toy) -> bytes:
    return (toy.root / toy.manifest["file"].iloc[0]).read_bytes()


# ------------------------------------------------------------------------------------------ good requests
def test_locate_multipart_matches_the_model(client, mean_model, photo):
    r = client.post("/v1/locate", files={"image": ("a.jpg", photo, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    for k in ("lat", "lon", "radius_m", "neighbors", "elapsed_ms", "flags"):
        assert k in body
    p = mean_model.predict([photo])
    assert body["lat"] == pytest.approx(p.lat[0], abs=1e-9)
    assert body["lon"] == pytest.approx(p.lon[0], abs=1e-9)
    assert body["radius_m"] == pytest.approx(p.radius_m[0])
    assert body["elapsed_ms"] >= 0 and body["method"] == "mean"


def test_locate_raw_body(client, photo):
    a = client.post("/v1/locate", content=photo, headers={"content-type": "image/jpeg"}).json()
    b = client.post("/v1/locate", content=photo).json()  # no content type at all
    c = client.post("/v1/locate", content=photo,  # what `curl --data-binary @photo.jpg` sends
                    headers={"content-type": "application/x-www-form-urlencoded"}).json()
    assert a["lat"] == b["lat"] == c["lat"] and a["lon"] == b["lon"] == c["lon"]


def test_png_and_grayscale_accepted(client):
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 60), 128, np.uint8)).save(buf, "PNG")
    assert client.post("/v1/locate", files={"image": ("g.png", buf.getvalue(), "image/png")}).status_code == 200


def test_neighbors_thumbnails_and_reference_positions(tiny_model, toy):
    app = create_app(tiny_model, ServeSettings())
    with TestClient(app) as c:
        q = (toy.root / toy.subset("test").manifest["file"].iloc[0]).read_bytes()
        body = c.post("/v1/locate", files={"image": ("q.jpg", q, "image/jpeg")}).json()
        expect = tiny_model.predict([q])
        assert body["lat"] == pytest.approx(expect.lat[0]) and body["flags"] == ["tiny"]
        assert len(body["neighbors"]) == 3
        nb = body["neighbors"][0]
        assert {"lat", "lon", "score", "id", "thumbnail"} <= set(nb)
        assert nb["lat"] == pytest.approx(expect.neighbors[0][0]["lat"])
        t = c.get("/" + nb["thumbnail"])
        assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(t.content)).size[0] > 0
        assert c.get("/v1/reference/nope/thumb.jpg").status_code == 404
        assert c.get("/v1/reference/..%2F..%2Fetc/thumb.jpg").status_code == 404
        m = c.get("/v1/model").json()
        ref = m["reference"]
        assert ref["available"] and ref["n"] == len(tiny_model.ids) == len(ref["lat"]) == len(ref["id"])
        assert len(ref["hull"]) >= 3 and m["server"]["thumbnails"] is True


# ------------------------------------------------------------------------------------------ bad requests
def test_not_an_image_is_415_json(client):
    r = client.post("/v1/locate", files={"image": ("x.jpg", b"this is not a photo", "image/jpeg")})
    assert r.status_code == 415
    assert "not an image" in r.json()["error"]
    r = client.post("/v1/locate", content=b"\x00" * 1000)
    assert r.status_code == 415 and r.json()["reason"] == "not_an_image"


def test_truncated_jpeg_is_422(client):
    data = jpeg_bytes(320, 240)
    r = client.post("/v1/locate", content=data[: len(data) // 3])
    assert r.status_code == 422
    assert r.json()["reason"] == "truncated" and "truncated" in r.json()["error"]


def test_wrong_field_name_says_image(client, photo):
    r = client.post("/v1/locate", files={"photo": ("a.jpg", photo, "image/jpeg")})
    assert r.status_code == 422
    err = r.json()["error"]
    assert "'image'" in err and "'photo'" in err
    r = client.post("/v1/locate", data={"image": "not a file"},
                    files={"other": ("a.jpg", photo, "image/jpeg")})
    assert r.status_code == 422 and "must be a file" in r.json()["error"]


def test_empty_and_malformed_bodies(client):
    assert client.post("/v1/locate", content=b"").status_code == 422
    r = client.post("/v1/locate", content=b"--xx\r\ngarbage",
                    headers={"content-type": "multipart/form-data; boundary=yy"})
    assert r.status_code == 422 and "image" in r.json()["error"]


def test_oversized_body_is_413(client):
    r = client.post("/v1/locate", content=b"\xff\xd8" + b"0" * (2 * 1024 * 1024))
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_decompression_bomb_is_rejected(client):
    r = client.post("/v1/locate", files={"image": ("bomb.png", png_with_declared_size(60000, 60000), "image/png")})
    assert r.status_code == 413
    assert r.json()["reason"] == "decompression_bomb" and "pixel limit" in r.json()["error"]
    # an honest but too-big image against this server's 4 MP limit
    buf = io.BytesIO()
    Image.new("L", (2500, 2000)).save(buf, "PNG")
    r = client.post("/v1/locate", content=buf.getvalue())
    assert r.status_code == 413 and r.json()["reason"] == "decompression_bomb"


def test_errors_are_json_everywhere(client):
    r = client.get("/no/such/page")
    assert r.status_code == 404 and "error" in r.json()
    r = client.get("/v1/locate")
    assert r.status_code == 405 and "error" in r.json()


def test_server_keeps_serving_after_bad_requests(client, photo):
    for bad in (b"", b"junk", photo[:100], png_with_declared_size(99999, 99999)):
        assert client.post("/v1/locate", content=bad).status_code in (413, 415, 422)
    assert client.post("/v1/locate", content=photo).status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}


def test_model_failure_is_500_json_and_isolated(mean_model):
    slow = SlowLocalizer(mean_model, delay_s=0.0, fail_on_black=True)
    app = create_app(slow, ServeSettings(batch_wait_ms=50))
    with TestClient(app) as c:
        r = c.post("/v1/locate", content=jpeg_bytes(64, 48, color=(0, 0, 0)))
        assert r.status_code == 500 and "all-black" in r.json()["error"]
        assert c.post("/v1/locate", content=jpeg_bytes(64, 48, seed=1)).status_code == 200


# ------------------------------------------------------------------------------------------ real sockets
def test_huge_declared_content_length_is_413_before_reading(mean_model):
    app = create_app(mean_model, ServeSettings(max_upload_mb=1.0))
    with live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /v1/locate HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                      b"Content-Length: 50000000000\r\n\r\n\xff\xd8")  # 50 GB announced, 2 bytes sent
            s.settimeout(10)
            raw = b""
            while b"\r\n\r\n" not in raw or b'"}' not in raw.split(b"\r\n\r\n", 1)[1]:
                chunk = s.recv(65536)
                if not chunk:
                    break
                raw += chunk
        text = raw.decode("latin-1")
        assert text.startswith("HTTP/1.1 413"), text[:200]
        assert '"error"' in text and "limit" in text
        assert httpx.get(url + "/healthz").status_code == 200


def test_chunked_upload_over_limit_is_413(mean_model):
    app = create_app(mean_model, ServeSettings(max_upload_mb=1.0))

    def body():  # no Content-Length: the limit must be enforced while reading
        for _ in range(40):
            yield b"\xff" * 65536

    with live_server(app) as url:
        r = httpx.post(url + "/v1/locate", content=body(), timeout=30)
        assert r.status_code == 413 and "limit" in r.json()["error"]
        assert httpx.get(url + "/healthz").status_code == 200


def test_50_concurrent_requests_all_answered(tiny_model, toy):
    app = create_app(tiny_model, ServeSettings(max_batch=8, batch_wait_ms=5))
    photos = [(toy.root / f).read_bytes() for f in toy.manifest["file"]][:10]
    photos.append(b"not an image")  # bad ones mixed in must not disturb the good ones

    def call(i, url):
        data = photos[i % len(photos)]
        with httpx.Client(timeout=60) as c:
            if i % 2:
                return c.post(url + "/v1/locate", files={"image": ("p.jpg", data, "image/jpeg")})
            return c.post(url + "/v1/locate", content=data)

    with live_server(app) as url:
        with cf.ThreadPoolExecutor(50) as ex:
            responses = list(ex.map(lambda i: call(i, url), range(50)))
        stats = httpx.get(url + "/v1/model").json()["server"]["stats"]
    codes = [r.status_code for r in responses]
    bad = [i for i in range(50) if i % len(photos) == len(photos) - 1]
    assert all(codes[i] == 415 for i in bad)
    assert all(codes[i] == 200 for i in range(50) if i not in bad), codes
    expect = tiny_model.predict(photos[:10])
    for i, r in enumerate(responses):
        if i not in bad:
            assert r.json()["lat"] == pytest.approx(expect.lat[i % len(photos)])
    assert stats["images"] == 50 - len(bad) and stats["batches"] <= stats["images"]


def test_micro_batching_gathers_concurrent_requests(mean_model):
    slow = SlowLocalizer(mean_model, delay_s=0.1)
    b = MicroBatcher(slow, max_batch=8, wait_ms=20, workers=1)
    try:
        imgs = [np.full((48, 64, 3), i * 20, np.uint8) for i in range(12)]
        futs = [b.submit(im) for im in imgs]
        res = [f.result(timeout=30) for f in futs]
    finally:
        b.close()
    assert len(res) == 12 and all(np.isfinite(r["lat"]) for r in res)
    assert max(slow.batch_sizes) > 1 and sum(slow.batch_sizes) == 12
    assert max(slow.batch_sizes) <= 8


def test_busy_server_answers_503_not_hang(mean_model):
    slow = SlowLocalizer(mean_model, delay_s=0.3)
    app = create_app(slow, ServeSettings(max_pending=2, max_batch=1))
    data = jpeg_bytes(64, 48)
    with live_server(app) as url:
        with cf.ThreadPoolExecutor(8) as ex:
            codes = list(ex.map(lambda _: httpx.post(url + "/v1/locate", content=data, timeout=30).status_code,
                                range(8)))
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes


# ------------------------------------------------------------------------------------------ other endpoints
def test_healthz_and_model_metadata(client, mean_model):
    assert client.get("/healthz").json() == {"status": "ok"}
    m = client.get("/v1/model").json()
    assert m["method"] == "mean" and m["frame"]["lat0"] == pytest.approx(mean_model.frame.lat0)
    assert "versions" in m and "info" in m and "state" not in m
    assert m["reference"]["available"] is False and m["reference"]["lat"] == []
    assert m["origin"]["lat"] == pytest.approx(mean_model.frame.lat0)
    assert m["server"]["image_field"] == "image" and m["server"]["max_upload_bytes"] == 1024 * 1024


def test_page_docs_and_static_are_local(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    html = r.text
    for ident in ("result-lat", "result-lon", "result-radius", 'capture="environment"', 'accept="image/*"'):
        assert ident in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for path in ("static/app.js", "static/style.css", "static/vendor/leaflet/leaflet.js",
                 "static/vendor/leaflet/leaflet.css", "static/vendor/leaflet/images/marker-icon.png",
                 "static/vendor/leaflet/LICENSE"):
        assert client.get("/" + path).status_code == 200, path
    d = client.get("/docs")
    assert d.status_code == 200 and "cdn" not in d.text.lower() and "static/vendor/swagger-ui" in d.text
    assert client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/v1/locate" in spec["paths"] and "multipart/form-data" in str(spec["paths"]["/v1/locate"])


def test_cors_off_by_default_and_configurable(mean_model, client):
    r = client.get("/healthz", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in r.headers
    app = create_app(mean_model, ServeSettings(cors_origins=["https://nav.example"]))
    with TestClient(app) as c:
        r = c.options("/v1/locate", headers={"Origin": "https://nav.example", "Access-Control-Request-Method": "POST"})
        assert r.headers.get("access-control-allow-origin") == "https://nav.example"


def test_convex_hull():
    pts = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5], [0.2, 0.8]])
    hull = convex_hull(pts)
    assert len(hull) == 4 and {tuple(p) for p in hull} == {(0, 0), (1, 0), (1, 1), (0, 1)}


def test_app_from_bundle_path(tmp_path, mean_model, photo):
    path = mean_model.save(tmp_path / "m.cgps")
    with TestClient(create_app(path)) as c:
        assert c.post("/v1/locate", content=photo).status_code == 200
        assert c.get("/v1/model").json()["saved_at"]


# ------------------------------------------------------------------------------------------ CLI
def test_cli_missing_and_corrupt_model_exit_2(tmp_path, capsys):
    from campusgps.cli.main import main

    assert main(["serve", str(tmp_path / "nope.cgps"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "campusgps serve: error:" in err and "not found" in err
    bad = tmp_path / "bad.cgps"
    bad.write_bytes(b"garbage" * 100)
    assert main(["serve", str(bad), "--port", "0"]) == 2
    assert "not a campusgps model bundle" in capsys.readouterr().err


def test_cli_port_in_use_exit_2(tmp_path, mean_model, capsys):
    from campusgps.cli.main import main

    path = mean_model.save(tmp_path / "m.cgps")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["serve", str(path), "--port", str(port)]) == 2
    assert "cannot listen" in capsys.readouterr().err


def test_cli_serves_a_bundle(tmp_path, mean_model, photo):
    """The real command in a subprocess: starts, answers, stops on SIGTERM."""
    import os
    import signal
    import subprocess
    import sys

    path = mean_model.save(tmp_path / "m.cgps")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "campusgps", "serve", str(path), "--port", str(port),
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
            assert proc.poll() is None, proc.stderr.read().decode()
        r = httpx.post(url + "/v1/locate", files={"image": ("a.jpg", photo, "image/jpeg")}, timeout=30)
        assert r.status_code == 200 and r.json()["method"] == "mean"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert "page http://127.0.0.1" in proc.stderr.read().decode()


def test_cli_flags_come_from_serve_settings():
    """Every ServeSettings option is a `serve` flag with the dataclass's default (none typed twice)."""
    import argparse
    import dataclasses

    from campusgps.cli import serve
    from campusgps.configs import from_args

    p = argparse.ArgumentParser()
    serve.add_arguments(p)
    dests = {a.dest for a in p._actions}
    assert {f.name for f in dataclasses.fields(ServeSettings)} - dests == {"warmup"}  # the command always warms up
    default = from_args(ServeSettings, p.parse_args(["m.cgps"]), warmup=False)
    assert default == ServeSettings()
    s = from_args(ServeSettings, p.parse_args(["m.cgps", "--cors-origin", "https://a", "--cors-origin", "https://b",
                                               "--tiles", "https://t.example/{z}/{x}/{y}.png", "--port", "9000"]))
    assert s.cors_origins == ["https://a", "https://b"] and s.tiles_url.startswith("https://t.example")
    assert s.port == 9000 and s.max_batch == ServeSettings().max_batch


# ------------------------------------------------------------------------------------------ real methods
_REAL = {  # fast settings, as in those methods' own tests
    "regression": dict(backbone="tiny-cnn", epochs=15, views=1, patience=10),
    "retrieval": dict(backbone="tiny-cnn", ft_steps=0),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(_REAL))
def test_real_method_bundle_served(method, toy, tmp_path):
    """Every method through its saved bundle, only via the Localizer interface (as `campusgps serve` does)."""
    from campusgps.errors import UserError
    from campusgps.localizers.base import get_localizer_class

    try:
        cls = get_localizer_class(method)
    except (UserError, ImportError) as e:
        pytest.skip(f"{method} not available in this checkout: {e}")
    try:
        trained = cls(**_REAL[method]).fit(toy)
    except TypeError as e:  # options renamed by that method's owner
        pytest.skip(f"{method} fast options changed: {e}")
    path = trained.save(tmp_path / f"{method}.cgps")
    loc = Localizer.load(path)
    q = [(toy.root / f).read_bytes() for f in toy.subset("test").manifest["file"]][:4]
    expect = loc.predict(q)
    with TestClient(create_app(path)) as c:
        for i, data in enumerate(q):
            body = c.post("/v1/locate", files={"image": ("q.jpg", data, "image/jpeg")}).json()
            assert body["lat"] == pytest.approx(expect.lat[i], abs=1e-6), body  # ~0.1 m
            assert body["radius_m"] == pytest.approx(expect.radius_m[i], rel=1e-4)  # float noise across batch sizes
            assert len(body["neighbors"]) == len(expect.neighbors[i][:20])
        m = c.get("/v1/model").json()
        assert m["method"] == method and "state" not in m
        if m["server"]["thumbnails"]:
            nb = body["neighbors"][0]
            assert c.get("/" + nb["thumbnail"]).headers["content-type"] == "image/jpeg"
            assert m["reference"]["available"]
