"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against a real uvicorn.

The page loads, the live image arrives, counters move during a simulated line run, the stop
button stops it, and an uploaded image shows its overlay (checked against the overlay drawn here
from the in-process predictor). Screenshots go to build/test-artefacts/serve/ (or
$FOVEA_TEST_ARTEFACTS); the line view is also docs/img/dashboard.png, the README's picture.

Chromium must be installed (`apt-get install chromium`; .ci/run does it): without it this test
FAILS with that instruction rather than skipping. Playwright's own browser download is never used.
docs/img/dashboard.png is written when missing or with FOVEA_UPDATE_SCREENSHOTS=1, so a test run
does not modify a tracked file every time.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fovea
from fovea.serve.app import create_app
from fovea.serve.server import ServerThread

from _serve_helpers import png_bytes, textures

REPO = Path(__file__).resolve().parents[2]
ARTEFACTS = Path(os.environ.get("FOVEA_TEST_ARTEFACTS", REPO / "build" / "test-artefacts")) / "serve"
DOCS_SHOT = REPO / "docs" / "img" / "dashboard.png"   # refreshed with FOVEA_UPDATE_SCREENSHOTS=1 (no churn)
pytestmark = pytest.mark.timeout(600)  # hang guard (pytest-timeout), not a speed target
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("the dashboard test needs Debian's Chromium: `apt-get install -y chromium` (make setup / "
                    ".ci/run install it); Playwright's browser download is not used", pytrace=False)
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    exe = _chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


def _int(page, selector: str) -> int:
    return int(page.inner_text(selector) or 0)


def test_dashboard_live_counters_stop_and_overlay(browser, model_dirs, tmp_path):
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    app = create_app({"parts": model_dirs["pc"], "sorter": model_dirs["cls"]})
    with ServerThread(app) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # an endless <img> stream never fires `load`: wait for the DOM only
        page.goto(url + "/", wait_until="domcontentloaded")
        page.wait_for_selector("#conn:text('live')", timeout=15_000)
        assert page.inner_text("#state") == "STOPPED"

        page.fill("#n-objects", "80")
        page.click("#btn-start")
        page.wait_for_function("document.getElementById('live').naturalWidth > 0", timeout=20_000)
        page.wait_for_function("Number(document.getElementById('outcomes').textContent) >= 2", timeout=30_000)
        first = _int(page, "#outcomes")
        page.wait_for_function(f"Number(document.getElementById('outcomes').textContent) > {first}", timeout=30_000)
        assert page.inner_text("#state") == "RUNNING"
        lanes = page.eval_on_selector_all("#lanes td", "tds => tds.map(t => Number(t.textContent))")
        assert sum(lanes) == _int(page, "#outcomes")        # the lane counters add up to the outcomes
        assert page.locator("#decisions-table tbody tr").count() >= 2
        page.wait_for_function("document.querySelectorAll('#sparks canvas').length >= 3", timeout=10_000)
        shot = ARTEFACTS / "dashboard_line.png"
        page.screenshot(path=str(shot))
        if os.environ.get("FOVEA_UPDATE_SCREENSHOTS") or not DOCS_SHOT.is_file():
            DOCS_SHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, DOCS_SHOT)

        page.click("#btn-stop")
        page.wait_for_function("document.getElementById('state').textContent === 'STOPPED'", timeout=30_000)
        assert not app.state.line.running
        settled = _int(page, "#outcomes")
        assert settled == app.state.line.status()["outcomes"]
        page.wait_for_timeout(1500)                           # nothing moves after the stop
        assert _int(page, "#outcomes") == settled
        page.screenshot(path=str(ARTEFACTS / "dashboard_stopped.png"))

        img = textures(1, 48, 64, 11)[0]
        img[12:30, 20:44] = 250
        (tmp_path / "part.png").write_bytes(png_bytes(img))
        page.click("button[data-view='inspect']")
        page.wait_for_function("document.getElementById('model').options.length === 2", timeout=10_000)
        page.select_option("#model", "parts")
        page.set_input_files("#file", str(tmp_path / "part.png"))
        page.wait_for_function("document.getElementById('overlay').naturalWidth > 0", timeout=20_000)
        src = page.get_attribute("#overlay", "src")
        shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))
        from fovea.anomaly.report import overlay_png

        want = overlay_png(img, fovea.load_predictor(model_dirs["pc"]).predict_one(img))
        assert shown.shape == img.shape and np.abs(shown.astype(int) - want.astype(int)).max() <= 2
        assert '"kind": "anomaly"' in page.inner_text("#result")
        page.screenshot(path=str(ARTEFACTS / "dashboard_inspect.png"))
        assert not errors, errors
        page.close()
