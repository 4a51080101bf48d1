"""The search page in a real headless Chromium (Debian's ``chromium``, driven by Playwright; nothing is
downloaded): upload a query picture, see the results grouped by camera with a timeline and a review
list, open a hit's full frame, a bad upload's error, search from a sighting, and the token prompt.
Screenshots go to tests/artifacts/ (gitignored)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import _service_world
import pytest

from reidkit.service.app import create_app

CHROMIUM = Path(os.environ.get("REIDKIT_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).parent / "artifacts"
pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        reason = f"{CHROMIUM} missing: apt-get install -y chromium (or set REIDKIT_CHROMIUM)"
        if os.environ.get("REIDKIT_REQUIRE_DATA") == "1":
            pytest.fail(f"REIDKIT_REQUIRE_DATA=1 but: {reason}", pytrace=False)
        pytest.skip(reason)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory, data_root):
    from reidkit.extract import make_embedder

    emb, info = make_embedder(None, None)
    w = _service_world.build(tmp_path_factory.mktemp("e2e"), data_root, emb)
    w.emb, w.info = emb, info
    return w


def until(page, js: str, timeout: float = 30.0) -> None:
    """Wait until the expression is true in the page, polled from here: the page's CSP forbids the eval
    Playwright's own waiting for a function uses, and the test runs under the page's real CSP."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(js):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {js}")
        time.sleep(0.1)


IMAGES_LOADED = "sel => [...document.querySelectorAll(sel)].every(i => i.complete && i.naturalWidth > 0)"


def loaded(page, selector: str) -> None:
    until(page, f"({IMAGES_LOADED})({selector!r})")


def _page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    return page, errors


def test_search_page_end_to_end(browser, world, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    app = create_app(world.gallery, embedder=world.emb, model_info=world.info)
    with _service_world.Server(app) as url:
        page, errors = _page(browser, url)
        # the gallery overview: counts, cameras, recent sightings (their crops loaded)
        page.wait_for_selector("#overview .stats")
        overview = page.inner_text("#overview")
        assert f"{world.n}\nsightings" in overview and "lobby" in overview
        loaded(page, ".recent img")
        tiles = page.locator(".recent .sight")
        assert tiles.count() == 24 and tiles.first.inner_text() == "lobby"  # the sightings added last come first

        # upload a query picture: results grouped by camera, timeline, review list
        page.set_input_files("#file-input", str(world.query))
        page.wait_for_selector(".results section.camera")
        status = page.inner_text("#status")
        assert "appearance" in status and "camera" in status, status
        cameras = page.eval_on_selector_all("section.camera", "els => els.map(e => e.dataset.camera)")
        assert "lobby" in cameras and len(cameras) >= 2
        assert page.locator("#timeline svg rect.mark").count() == page.locator("#appearances .appearance").count()
        assert page.locator("#review .appearance.near").count() >= 1
        assert "for review" in page.inner_text("#review h2")
        loaded(page, ".results img")
        assert page.locator("#query-thumbs img").count() == 1
        page.screenshot(path=str(ARTIFACTS / "service_e2e.png"), full_page=True)

        # open a hit: the full frame with its box, from /frames/{id}
        page.click("section.camera[data-camera='lobby'] .appearance .crop img")
        page.wait_for_selector("#viewer[open] #viewer-frame")
        until(page, "document.querySelector('#viewer-frame').naturalWidth > 0")
        size = page.eval_on_selector("#viewer-frame", "i => [i.naturalWidth, i.naturalHeight]")
        assert size == [320, 240]
        assert "lobby" in page.inner_text("#viewer-title")
        page.screenshot(path=str(ARTIFACTS / "service_e2e_frame.png"))
        page.keyboard.press("Escape")
        page.wait_for_selector("#viewer:not([open])", state="attached")

        # a hit from a folder of crops has no frame: the viewer says so and shows the crop
        market = page.locator("section.camera:not([data-camera='lobby']) .appearance .crop img").first
        market.click()
        page.wait_for_selector("#viewer[open] #viewer-body .none")
        assert "crop is shown" in page.inner_text("#viewer-body")
        loaded(page, "#viewer-body img")
        page.keyboard.press("Escape")

        # search from a sighting (its track)
        page.click("section.camera[data-camera='lobby'] .appearance button.search-from")
        until(page, "document.querySelector('#status').innerText.includes('sighting')")
        page.wait_for_selector(".results[data-query-kind='track']")
        assert "sighting" in page.inner_text("#query-thumbs")

        # a bad upload: a clear error, no crash
        bad = tmp_path / "notes.jpg"
        bad.write_text("not a picture")
        page.set_input_files("#file-input", str(bad))
        page.wait_for_selector("#status .status.error")
        assert "not a decodable picture" in page.inner_text("#status")
        assert page.locator("#results section.camera").count() == 0  # the previous results are gone
        assert page.inner_text("#query-thumbs .bad") == "not a picture"
        page.screenshot(path=str(ARTIFACTS / "service_e2e_error.png"))
        assert errors == []
        page.close()
    print(f"\nscreenshots: {ARTIFACTS}/service_e2e.png, service_e2e_frame.png, service_e2e_error.png")


def test_page_asks_for_the_token(browser, world):
    app = create_app(world.gallery, embedder=world.emb, model_info=world.info, token="page-token")
    with _service_world.Server(app) as url:
        page, errors = _page(browser, url)
        page.wait_for_selector("#token-form:not([hidden])")
        assert "needs a token" in page.inner_text("#token-msg")
        page.fill("#token-input", "wrong")
        page.click("#token-form button")
        until(page, "document.querySelector('#token-msg').innerText.includes('refused')")
        page.fill("#token-input", "page-token")
        page.click("#token-form button")
        page.wait_for_selector("#overview .stats")
        assert page.evaluate("sessionStorage.getItem('reidkit-token')") == "page-token"
        loaded(page, ".recent img")
        assert page.eval_on_selector(".recent img", "i => i.src").startswith("blob:")  # fetched with the header
        page.set_input_files("#file-input", str(world.query))
        page.wait_for_selector(".results section.camera")
        loaded(page, ".results img")
        assert errors == []
        page.close()


def test_page_without_a_gallery(browser, world, tmp_path):
    app = create_app(tmp_path / "none-yet", embedder=world.emb, model_info=world.info)
    with _service_world.Server(app) as url:
        page, errors = _page(browser, url)
        until(page, "document.querySelector('#overview-body').innerText.includes('no gallery at')")
        assert "reidkit ingest" in page.inner_text("#overview-body")
        assert page.is_disabled("#search-btn") and page.is_hidden("#token-form")
        assert errors == []
        page.close()
