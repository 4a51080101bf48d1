"""The search page in a real headless Chromium (Debian's ``chromium``, driven by Playwright; nothing is
downloaded), at a desktop's 1400 x 900 and a phone's 390 x 844: upload a query picture, see the results
(a grid of crops grouped by camera, a timeline on one clock, a sorted review list with its floor), open a
hit's full frame beside it, zoom, step through the hits, confirm and reject hits and search again from the
confirmed ones, share the search by its URL (Back works), download its report, browse a camera's sightings
by time, the albums, a bad upload's error, search from a sighting, and the token prompt.
Screenshots of every state go to tests/artifacts/ (gitignored): ``page_<state>_<width>.png``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import _service_world
import pytest

from reidkit.service.app import create_app

CHROMIUM = Path(os.environ.get("REIDKIT_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).parent / "artifacts"
DESKTOP, PHONE = (1400, 900), (390, 844)
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


@pytest.fixture(scope="module")
def server(world):
    app = create_app(world.gallery, embedder=world.emb, model_info=world.info)
    with _service_world.Server(app) as url:
        yield url


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


def _page(browser, url: str, size: tuple[int, int] = (1400, 1000)):
    context = browser.new_context(viewport={"width": size[0], "height": size[1]}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    return page, errors


def shot(page, state: str, full: bool = False) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"page_{state}_{page.viewport_size['width']}.png"
    page.screenshot(path=str(path), full_page=full)
    return path


def no_sideways_scroll(page) -> None:
    width = page.viewport_size["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "the page overflows sideways"


def query_of(page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def test_search_page_end_to_end(browser, world, tmp_path):
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


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["1400", "390"])
def test_results_frame_zoom_and_stepping(browser, world, server, size):
    """Results first and usable on a phone; larger crops in a grid; the frame beside the selected hit, zoom,
    previous / next; one clock with a readable axis; the review list sorted, with its floor."""
    page, errors = _page(browser, server, size)
    page.wait_for_selector("#overview .stats")
    shot(page, "gallery", full=True)
    overview = page.inner_text("#overview")
    assert "offsets into the video or folder, no date" in overview and "--start-time" in overview  # which clock
    no_sideways_scroll(page)

    page.set_input_files("#file-input", str(world.query))
    page.wait_for_selector(".results section.camera")
    loaded(page, ".results img")
    assert query_of(page) == {"q": ["pictures"]}
    no_sideways_scroll(page)
    top = page.evaluate("document.querySelector('#results').getBoundingClientRect().top + window.scrollY")
    assert top < 450, f"results start {top:.0f} px down"  # the issue: 1,250 px down on a phone
    crop = page.eval_on_selector(".results .appearance .crop img", "i => i.getBoundingClientRect().height")
    assert crop >= 180, crop  # larger crops (the issue: about 60 x 150 px)
    # the hits: several of them in one screen, in a grid
    lefts = page.eval_on_selector_all(".appearance", "els => els.map(e => e.getBoundingClientRect().left)")
    assert len(set(round(x) for x in lefts)) >= 2  # side by side
    first_hit = page.eval_on_selector("#appearances .appearance", "e => e.getBoundingClientRect().top + window.scrollY")
    assert first_hit < (450 if size == DESKTOP else 560), first_hit  # hits come first, before the timeline
    # one clock, a readable axis: the ticks of the timeline differ from one another, and say which clock
    ticks = page.eval_on_selector_all("#timeline text.tick", "els => els.map(e => e.textContent)")
    assert len(ticks) >= 3 and len(set(ticks)) == len(ticks), ticks
    assert "no date" in page.inner_text("#timeline")
    assert "offset, no date" in page.inner_text("section.camera[data-camera='lobby']")
    # the review list: by similarity, none below the floor
    scores = page.eval_on_selector_all("#review .appearance", "els => els.map(e => Number(e.dataset.score))")
    floor = float(page.get_attribute(".results", "data-review-floor"))
    assert scores == sorted(scores, reverse=True) and min(scores) >= floor
    assert "none below similarity" in page.inner_text("#review")
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "results")
    shot(page, "results_full", full=True)

    # the frame beside the selected hit
    cards = page.locator("#results .appearance")
    n = cards.count()
    page.click("section.camera[data-camera='lobby'] .appearance .crop img")
    page.wait_for_selector("#viewer[open] #viewer-frame")
    until(page, "document.querySelector('#viewer-frame').naturalWidth > 0")
    first = page.inner_text("#viewer-pos")
    assert first.endswith(f"/ {n}") and page.locator(".appearance.selected").count() == 1
    box = page.eval_on_selector("#viewer", "d => d.getBoundingClientRect().toJSON()")
    if size == DESKTOP:  # beside the grid, not over it
        grid = page.eval_on_selector("#main", "m => m.getBoundingClientRect().toJSON()")
        assert box["left"] >= grid["right"] - 1 and box["width"] >= 380
    else:  # the whole screen
        assert box["width"] == size[0]
    no_sideways_scroll(page)
    shot(page, "frame")
    # zoom: to the person (the box in the middle), then fit again
    page.click("button[data-zoom='person']")
    until(page, "document.querySelector('#zoom-level').textContent !== 'fit'")
    zoomed = page.eval_on_selector("#viewer-frame", "i => i.getBoundingClientRect().width")
    view = page.eval_on_selector("#viewer-zoom", "z => [z.clientWidth, z.scrollLeft, z.scrollTop]")
    assert zoomed > 1.5 * view[0] and (view[1] > 0 or view[2] > 0)
    shot(page, "zoom")
    page.click("button[data-zoom='fit']")
    until(page, "document.querySelector('#zoom-level').textContent === 'fit'")
    # previous / next through the hits (keys and buttons), wrapping around
    page.keyboard.press("ArrowRight")
    until(page, f"document.querySelector('#viewer-pos').textContent !== {first!r}")
    second = page.inner_text("#viewer-pos")
    page.click("#viewer-next")
    until(page, f"document.querySelector('#viewer-pos').textContent !== {second!r}")
    page.click("#viewer-prev")
    until(page, f"document.querySelector('#viewer-pos').textContent === {second!r}")
    shot(page, "next")
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer:not([open])", state="attached")
    assert errors == []
    page.context.close()


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["1400", "390"])
def test_confirm_reject_search_again_share_back_and_report(browser, world, server, size, tmp_path):
    page, errors = _page(browser, server + f"/?sighting={world.lobby_ids[0]}", size)
    # a shared URL: the search runs from it
    page.wait_for_selector(".results[data-query-kind='track']")
    loaded(page, ".results img")
    cards = page.locator("#results .appearance")
    assert cards.count() >= 2
    ids = page.eval_on_selector_all("#appearances .appearance", "els => els.map(e => e.dataset.detection)")
    # confirm two hits, reject another: marked on the cards, counted in the toolbar
    page.click(f".appearance[data-detection='{ids[0]}'] button.confirm")
    page.click(f".appearance[data-detection='{ids[1]}'] button.confirm")
    rejected = page.eval_on_selector_all("#review .appearance", "els => els.map(e => e.dataset.detection)")[0]
    page.click(f".appearance[data-detection='{rejected}'] button.reject")
    assert page.locator(".appearance.confirmed").count() == 2 and page.locator(".appearance.rejected").count() == 1
    assert "2 confirmed, 1 rejected" in page.inner_text("#toolbar")
    again = page.inner_text("#again-btn")
    assert "3 sightings" in again  # the query's own sighting and the two confirmed
    page.click("#hide-rejected")
    assert not page.is_visible(f".appearance[data-detection='{rejected}']")
    page.click("#hide-rejected")
    shot(page, "confirm")
    # download the report: the same HTML as reidkit search --html (no server path)
    with page.expect_download() as dl:
        page.click("#report-btn")
    report = Path(dl.value.path()).read_text()
    assert report.startswith("<!DOCTYPE html>") and "Person search: track" in report
    assert str(world.root) not in report and "data:image/jpeg;base64," in report
    assert dl.value.suggested_filename.startswith("reidkit-search-")
    dl.value.save_as(tmp_path / "report.html")
    opened = page.context.new_page()
    opened.goto((tmp_path / "report.html").as_uri())  # the report on its own, as it was mailed
    loaded(opened, "img")
    no_sideways_scroll(opened)
    shot(opened, "report", full=True)
    opened.close()
    # search again from the confirmed ones: a search of several sightings, in the URL
    first_url = page.url
    page.click("#again-btn")
    page.wait_for_selector(".results[data-query-kind='features']")
    loaded(page, ".results img")
    q = query_of(page)
    assert sorted(q["sightings"][0].split(",")) == sorted([str(world.lobby_ids[0]), ids[0], ids[1]])
    assert page.locator(".appearance.confirmed").count() >= 2  # the marks stay on the hits
    shot(page, "again")
    # Back: the previous search comes back (from the URL), Forward the new one
    page.go_back()
    page.wait_for_selector(".results[data-query-kind='track']")
    assert page.url == first_url
    page.go_forward()
    page.wait_for_selector(".results[data-query-kind='features']")
    # filters in the URL: a camera and a review count, kept when shared
    page.goto(server + f"/?sighting={world.lobby_ids[0]}&camera=lobby&camera=c1&review=3")
    page.wait_for_selector(".results[data-query-kind='track']")
    assert page.is_checked("#opt-cameras input[value='lobby']") and page.input_value("#opt-review") == "3"
    cams = page.eval_on_selector_all(".appearance", "els => els.map(e => e.dataset.camera)")
    assert set(cams) <= {"lobby", "c1"} and page.locator("#review .appearance").count() <= 3
    assert errors == []
    page.context.close()


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["1400", "390"])
def test_browse_a_camera_and_albums(browser, world, server, size):
    page, errors = _page(browser, server, size)
    page.wait_for_selector("#overview .stats")
    # browse: a camera's sightings by time, from the gallery's camera table
    page.click("table.cams a:text-is('lobby')")
    page.wait_for_selector("#browse-body .tile")
    loaded(page, "#browse-body img")
    assert query_of(page) == {"view": ["browse"], "camera": ["lobby"]}
    said = page.inner_text("#browse-status")
    assert "2 tracks in time order" in said and "no date" in said
    times = page.eval_on_selector_all("#browse-body .tile b", "els => els.map(e => e.textContent)")
    assert len(times) == 2 and times == sorted(times)
    no_sideways_scroll(page)
    shot(page, "browse")
    page.uncheck("#browse-tracks")
    page.click("#browse-form button[type=submit]")
    until(page, "document.querySelectorAll('#browse-body .tile').length === 7")
    assert query_of(page)["tracks"] == ["0"]
    page.click("#browse-body .tile >> nth=2")
    page.wait_for_selector("#viewer[open] #viewer-frame")
    assert page.inner_text("#viewer-pos") == "3 / 7"
    shot(page, "browse_frame")
    page.keyboard.press("Escape")
    page.go_back()  # one per track again
    until(page, "document.querySelectorAll('#browse-body .tile').length === 2")

    # albums: the gallery grouped by person; search from one
    page.click(".tab[data-view='albums']")
    page.wait_for_selector("#albums-body .album")
    loaded(page, "#albums-body img")
    assert query_of(page) == {"view": ["albums"]}
    assert page.locator(".album").count() >= 5 and "album" in page.inner_text("#albums-status")
    no_sideways_scroll(page)
    shot(page, "albums")
    page.click(".album >> nth=0 >> button:text('Search for this person')")
    page.wait_for_selector("#view-search:not([hidden]) .results section.camera")
    assert "sighting" in "".join(query_of(page))
    shot(page, "album_search")
    page.go_back()
    page.wait_for_selector("#view-albums:not([hidden]) .album")
    assert errors == []
    page.context.close()


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
