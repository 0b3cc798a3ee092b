"""The web page in a real browser: Debian's chromium driven by Playwright, against a real uvicorn server.

Skipped (with the reason) when /usr/bin/chromium or the playwright package is missing; `.ci/run` installs
chromium. The browser may only reach 127.0.0.1: every other request is aborted and counted, which also
proves the page needs no network (no CDN).
"""
import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CAMPUSGPS_CHROMIUM", "/usr/bin/chromium")


def _skip_reason():
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"{CHROMIUM} not found (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except Exception as e:  # pragma: no cover
        return f"playwright python package missing ({e})"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless"])
        try:
            yield b
        finally:
            b.close()


def test_upload_shows_prediction_on_map(browser, tmp_path, toy):
    import httpx
    from test_serve import TinyRetrieval, live_server

    from campusgps.serving import ServeSettings, create_app

    model = TinyRetrieval().fit(toy)
    photo = toy.root / toy.subset("test").manifest["file"].iloc[0]
    app = create_app(model, ServeSettings())
    with live_server(app) as url:
        api = httpx.post(url + "/v1/locate", files={"image": (photo.name, photo.read_bytes(), "image/jpeg")},
                         timeout=30).json()
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        offsite, console_errors = [], []

        def guard(route):
            if route.request.url.startswith(url):
                route.continue_()
            else:
                offsite.append(route.request.url)
                route.abort()

        page.route("**/*", guard)
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console_errors.append(str(e)))
        page.goto(url + "/")
        page.wait_for_selector("body[data-state='ready']", state="attached", timeout=15000)
        assert "reference photos" in page.inner_text("#model-badge")

        page.set_input_files("#file", str(photo))
        page.wait_for_selector("body[data-state='done']", state="attached", timeout=20000)
        page.wait_for_selector(".leaflet-marker-icon.cg-pred-marker", state="visible", timeout=10000)
        page.wait_for_selector("path.cg-uncertainty", state="visible", timeout=10000)
        page.wait_for_selector("#neighbors li .thumb img", timeout=10000)
        for img in page.locator("#neighbors img").all():  # thumbnails really loaded
            img.evaluate("i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })")
            assert img.evaluate("i => i.naturalWidth") > 0

        shown = {k: page.get_attribute(f"#result-{k}", "data-value") for k in ("lat", "lon", "radius")}
        assert float(shown["lat"]) == api["lat"]
        assert float(shown["lon"]) == api["lon"]
        assert float(shown["radius"]) == api["radius_m"]
        assert page.inner_text("#result-lat") == f"{api['lat']:.6f}"
        assert page.inner_text("#result-lon") == f"{api['lon']:.6f}"
        assert page.locator("#neighbors li").count() == len(api["neighbors"])
        assert page.locator("path.cg-neighbor").count() == len(api["neighbors"])

        shot = tmp_path / "serve_page.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000

        # the page's Content-Security-Policy ('self' only) was in force: nothing inline, nothing remote
        assert "default-src 'self'" in (page.evaluate("() => document.contentType") and
                                        httpx.get(url + "/").headers["content-security-policy"])

        # an error is shown on the page, and the page keeps working afterwards
        bad = tmp_path / "not_a_photo.jpg"
        bad.write_bytes(b"definitely not a jpeg")
        page.set_input_files("#file", str(bad))
        page.wait_for_selector("body[data-state='error']", state="attached", timeout=10000)
        assert "not an image" in page.inner_text("#error")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("body[data-state='done']", state="attached", timeout=20000)
        assert page.is_hidden("#error")
        page.close()

    assert offsite == [], f"the page tried to reach the network: {offsite}"
    assert not [e for e in console_errors if "415" not in e], console_errors


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from conftest import make_toy_dataset

    return make_toy_dataset(tmp_path_factory.mktemp("browser") / "toy", n_spots=8, views=3, size=(160, 120))


def test_confidence_sentence_and_alternative_circles(browser, tmp_path, toy):
    """Issue 12: a low-confidence answer says "not sure: one of N places" and draws its alternatives as
    labelled circles; a confident one says "confident (NN%)" and draws none. Screenshots at desktop and
    phone widths go to tmp_path (CAMPUSGPS_SHOTS=DIR keeps a copy)."""
    import httpx
    from fake_confident import ConfidentFake
    from test_serve import live_server

    from campusgps.serving import ServeSettings, create_app

    model = ConfidentFake().fit(toy)
    paths = toy.paths()
    conf = {str(p): model.predict([str(p)]).confidence[0] for p in paths}
    unsure = min(conf, key=conf.get)        # two alternatives, confidence < 0.5
    sure = max(conf, key=conf.get)          # no alternatives
    assert conf[unsure] < 0.5 and conf[sure] >= 0.85
    shots = os.environ.get("CAMPUSGPS_SHOTS")
    with live_server(create_app(model, ServeSettings())) as url:
        api = httpx.post(url + "/v1/locate", content=open(unsure, "rb").read(), timeout=30).json()
        assert len(api["alternatives"]) == 2
        for width, height in ((1280, 800), (390, 844)):
            page = browser.new_page(viewport={"width": width, "height": height})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            page.wait_for_selector("body[data-state='ready']", state="attached", timeout=15000)
            page.set_input_files("#file", unsure)
            page.wait_for_selector("body[data-state='done']", state="attached", timeout=20000)
            assert page.inner_text("#result-confidence .sentence") == "Not sure: one of 3 places"
            assert "low" in page.get_attribute("#result-confidence", "class")
            assert float(page.get_attribute("#result-confidence", "data-value")) == api["confidence"]
            assert page.locator("path.cg-alternative").count() == 2
            labels = [t.inner_text() for t in page.locator(".alt-label").all()]
            assert [x.split(" · ")[0] for x in labels] == ["B", "C"]
            assert labels[0] == f"B · {round(100 * api['alternatives'][0]['probability'])}%"
            assert page.locator("#alternatives-list li").count() == 2 and page.is_visible("#result-alternatives")
            # the alternatives are smaller than the answer's circle on screen
            box = lambda sel: page.locator(sel).first.bounding_box()  # noqa: E731
            assert box("path.cg-alternative")["width"] < box("path.cg-uncertainty")["width"]
            tag = "desktop" if width > 800 else "phone"
            for d in [tmp_path] + ([Path(shots)] if shots else []):
                d.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(d / f"confidence_unsure_{tag}.png"), full_page=True)

            page.set_input_files("#file", sure)
            page.wait_for_function("() => window.campusgps.lastResult && window.campusgps.state === 'done' && "
                                   "window.campusgps.lastResult.alternatives.length === 0", timeout=20000)
            sentence = page.inner_text("#result-confidence .sentence")
            assert sentence == f"Confident ({round(100 * conf[sure])}%)", sentence
            assert page.locator("path.cg-alternative").count() == 0 and page.is_hidden("#result-alternatives")
            if shots:
                page.screenshot(path=str(Path(shots) / f"confidence_sure_{tag}.png"), full_page=True)
            page.close()
            assert not errors, errors
