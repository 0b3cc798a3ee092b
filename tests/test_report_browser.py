"""The evaluation report opened in a real browser (Debian chromium via Playwright): images load, tables show."""
import os
import shutil

import pytest

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.browser


def _browser_or_skip():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        pytest.skip("python package playwright not installed (pip install playwright)")


def test_report_renders_in_chromium(tmp_path):
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    from campusgps.cli.main import main
    from campusgps.localizers.base import MeanLocalizer

    from conftest import make_toy_dataset

    ds = make_toy_dataset(tmp_path / "ds", n_spots=8, views=2)
    model = MeanLocalizer().fit(ds).save(tmp_path / "m.cgps")
    out = tmp_path / "ev"
    assert main(["evaluate", str(model), str(ds.root), "--out", str(out), "--robustness-n", "3", "--worst", "3"]) == 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto((out / "report.html").as_uri())
        page.wait_for_load_state("load")
        imgs = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])")
        assert len(imgs) >= 4 + 3  # CDF, histogram, two maps, plus gallery thumbnails
        broken = [alt for alt, done, w in imgs if not done or w == 0]
        assert not broken, f"images that did not load: {broken}"
        headings = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
        for h in ("Summary", "Error distribution", "Where the errors are", "By area", "Robustness"):
            assert any(h in x for x in headings), (h, headings)
        assert page.locator("table").count() >= 4
        assert page.locator("table").first.locator("tr").count() >= 12
        assert all(u.startswith(("file:", "data:")) for u in requests), requests  # nothing from the network
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000
