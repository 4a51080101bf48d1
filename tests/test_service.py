"""The search service (``reidkit serve``): API answers vs ``reidkit search`` / ``search_person``, every
endpoint, error codes, limits, token, CORS, concurrency, following an external writer, and the
OpenAPI schema fuzzed with schemathesis. Tiny gallery of real Market-1501 crops (tests/_service_world.py)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _service_world
import cv2
import httpx
import numpy as np
import pytest

from reidkit.search.query.search import SearchResult, search_person
from reidkit.search.storage import Gallery
from reidkit.service.app import create_app
from reidkit.service.models import (
    BrowseModel,
    ClustersModel,
    GalleryModel,
    SearchResultModel,
    SightingModel,
    TrackDetailModel,
)

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def model():
    from reidkit.extract import make_embedder

    return make_embedder(None, None)  # what `reidkit search` uses: the shipped model, torch backend


@pytest.fixture(scope="module")
def world(tmp_path_factory, data_root, model):
    return _service_world.build(tmp_path_factory.mktemp("service"), data_root, model[0])


@pytest.fixture(scope="module")
def app(world, model):  # refusals answered at once here (the delay has a test of its own)
    return create_app(world.gallery, embedder=model[0], model_info=model[1], refusal_delay=0)


@pytest.fixture(scope="module")
def client(app):
    with _service_world.client(app) as c:
        yield c


def upload(*paths: Path, name: str | None = None) -> list:
    return [("image", (name or p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def public(result: dict) -> dict:
    """The JSON of ``reidkit search --json`` as the service hands it out (sources by name, no server path)."""
    return SearchResult.from_dict(result).public().to_dict()


def cli_json(tmp_path: Path, *args: str) -> dict:
    from typer.testing import CliRunner

    from reidkit.cli import app as cli

    out = tmp_path / "cli.json"
    res = CliRunner().invoke(cli, ["search", *args, "--json", str(out)])
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text())


# -- search ---------------------------------------------------------------------------------------------
def test_search_by_image_is_the_cli_json(client, world, model, tmp_path):
    r = client.post("/search", files=upload(world.query))
    assert r.status_code == 200, r.text
    got = r.json()
    SearchResultModel.model_validate(got)  # the documented schema, no field more or less
    assert got["query"]["kind"] == "images" and got["query"]["labels"] == [world.query.name]
    cli = cli_json(tmp_path, "--gallery", str(world.gallery), "--image", str(world.query))
    assert cli["query"]["labels"] == [str(world.query)]  # the CLI names pictures by path, the service by file name
    assert cli["gallery"] == str(world.gallery) and got["gallery"] == world.gallery.name  # no server path
    assert got == public(cli)  # the CLI's answer, as a client may see it
    with Gallery.open(world.gallery, read_only=True) as g:
        direct = search_person(g, model[0], [str(world.query)], model_info=model[1])
    assert got == direct.public().to_dict()
    # real matches: the target on the lobby video (its track) and on a Market camera, grouped by camera in time order
    cams = [a["camera"] for a in got["appearances"]]
    assert "lobby" in cams and len(set(cams)) >= 2
    assert cams == sorted(cams, key=cams.index)  # one block per camera
    for cam in set(cams):
        starts = [a["start"] for a in got["appearances"] if a["camera"] == cam]
        assert starts == sorted(starts)
    lobby = next(a for a in got["appearances"] if a["camera"] == "lobby")
    assert lobby["track"] == world.lobby_track and lobby["n_crops"] == 4
    assert got["near_misses"] and got["z_threshold"] is not None  # review list, adaptive rule ran (>= 100 rows)


def test_search_by_track_and_sighting(client, world, tmp_path):
    r = client.post("/search", data={"track": str(world.lobby_track)})
    assert r.status_code == 200, r.text
    got = r.json()
    SearchResultModel.model_validate(got)
    assert got == public(cli_json(tmp_path, "--gallery", str(world.gallery), "--track", str(world.lobby_track)))
    assert got["query"]["kind"] == "track" and not any(a["camera"] == "lobby" for a in got["appearances"])
    # a sighting of a track searches for its track; an untracked one with its stored feature
    assert client.post("/search", data={"sighting": str(world.lobby_ids[1])}).json() == got
    one = client.post("/search", data={"sighting": "1", "review": "2"}).json()
    assert one["query"]["kind"] == "features" and one["query"]["labels"] == ["sighting 1"]
    assert one["hits"][0]["id"] == 1 and one["hits"][0]["score"] > 0.999 and len(one["near_misses"]) <= 2


def test_search_options_as_in_search_person(client, world, model):
    form = {"top": "50", "camera": ["c1", "lobby"], "since": "0", "until": "1970-01-01T00:30:00", "rerank": "false"}
    form |= {"review": "3", "threshold": "0.5", "fuse": "max"}
    got = client.post("/search", files=upload(world.query, world.query), data=form).json()
    with Gallery.open(world.gallery, read_only=True) as g:
        direct = search_person(
            g,
            model[0],
            [str(world.query)] * 2,
            model_info=model[1],
            k=50,
            cameras=["c1", "lobby"],
            time_range=(0.0, 1800.0),
            rerank=False,
            review=3,
            threshold=0.5,
            fuse="max",
        )
    assert got == direct.public().to_dict()
    assert {a["camera"] for a in got["appearances"] + got["near_misses"]} <= {"c1", "lobby"}
    assert got["k"] == 50 and not got["reranked"] and got["threshold"] == 0.5 and got["time_range"] == [0.0, 1800.0]


@pytest.mark.parametrize(
    ("form", "files", "status", "message"),
    [
        ({}, None, 400, "give the person to search for"),
        ({"track": "1"}, "query", 400, "exactly one"),
        ({"track": "999999"}, None, 404, "no track 999999"),
        ({"sighting": "999999"}, None, 404, "no sighting 999999"),
        ({"track": "1", "since": "60", "until": "10"}, None, 400, "before since"),
        ({"track": "1", "since": "yesterday"}, None, 400, "ISO-8601"),
        ({"track": "1", "top": "0"}, None, 422, "top"),
        ({"track": "1", "fuse": "median"}, None, 422, "fuse"),
        ({"track": "1", "threshold": "nan"}, None, 422, "threshold"),
        ({"track": "0"}, None, 422, "track"),
    ],
)
def test_search_errors(client, world, form, files, status, message):
    r = client.post("/search", data=form, files=upload(world.query) if files else None)
    assert r.status_code == status, r.text
    assert message in json.dumps(r.json()["detail"])


def test_search_html_fragment_is_the_report_rendering(client, world):
    from reidkit.search.query.report import render_results
    from reidkit.search.query.search import SearchResult

    r = client.post("/search/html", files=upload(world.query))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    text = r.text
    result = SearchResult.from_dict(client.post("/search", files=upload(world.query)).json())

    def url(hit, kind):  # frames where one can be read: the video, not the folder of crops
        return f"/crops/{hit.id}" if kind == "crop" else f"/frames/{hit.id}" if hit.source == world.video.name else None

    assert render_results(result, url, interactive=True) in text  # the same function as `reidkit search --html`
    assert f'data-appearances="{len(result.appearances)}"' in text
    assert 'id="timeline"' in text and 'id="review"' in text and "data:image" not in text
    for a in result.appearances:  # frames offered where one exists: the video, not the folder of crops
        assert f'src="/crops/{a.best.id}"' in text
        assert (f'data-frame="/frames/{a.best.id}"' in text) == (a.camera == "lobby")


def test_search_from_several_sightings(client, world, model):
    """Search again from the confirmed ones: several sightings, each by its track's feature (else its own),
    fused; one sighting alone is the `sighting` search."""
    market = world.market_ids[:2]
    ids = [world.lobby_ids[0], world.lobby_ids[1], *market]
    r = client.post("/search", data={"sightings": [str(i) for i in ids]})
    assert r.status_code == 200, r.text
    got = r.json()
    SearchResultModel.model_validate(got)
    assert got["query"]["kind"] == "features"
    assert got["query"]["labels"] == [f"sightings {world.lobby_ids[0]}, {world.lobby_ids[1]}, 1, 2"]
    with Gallery.open(world.gallery, read_only=True) as g:
        track = g.track_features([world.lobby_track])[0]  # both lobby sightings are of one track: counted once
        feats = np.stack([track, *g.features(market)])
        direct = search_person(g, features=feats, model_info=model[1])
    assert got["hits"] == direct.public().to_dict()["hits"]
    one = client.post("/search", data={"sightings": [str(world.lobby_ids[1])]}).json()
    assert one == client.post("/search", data={"sighting": str(world.lobby_ids[1])}).json()
    assert client.post("/search", data={"sightings": ["1", "999999"]}).status_code == 404
    many = client.post("/search", data={"sightings": [str(i) for i in range(1, 203)]})
    assert many.status_code == 400 and "at most 200 sightings" in many.json()["detail"]
    both = client.post("/search", data={"sightings": ["1", "2"], "track": "1"})
    assert both.status_code == 400 and "exactly one" in both.json()["detail"]


def test_review_list_sorted_with_a_floor(client, world):
    got = client.post("/search", files=upload(world.query), data={"review": "20"}).json()
    scores = [a["score"] for a in got["near_misses"]]
    assert scores == sorted(scores, reverse=True) and got["review_floor"] == pytest.approx(got["threshold"] - 0.2)
    assert all(s >= got["review_floor"] for s in scores)
    low = client.post("/search", files=upload(world.query), data={"review": "20", "review_floor": "-1"}).json()
    assert len(low["near_misses"]) == 20 > len(scores) and low["review_floor"] == -1
    html_text = client.post("/search/html", files=upload(world.query)).text
    assert f"none below similarity {got['review_floor']:.3f}" in html_text


def test_search_report_is_the_cli_html(client, world, tmp_path):
    from typer.testing import CliRunner

    from reidkit.cli import app as cli

    r = client.post("/search/report", data={"track": str(world.lobby_track)})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-disposition"].startswith('attachment; filename="reidkit-search-')
    page = r.text
    assert page.startswith("<!DOCTYPE html>") and "data:image/jpeg;base64," in page
    assert str(world.root) not in page and "/tmp" not in page  # no server path
    out = tmp_path / "cli.html"
    res = CliRunner().invoke(cli, ["search", "--gallery", str(world.gallery), "--track", str(world.lobby_track),
                                   "--html", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    cli_page = out.read_text()
    import reidkit.models

    calibrations = Path(reidkit.models.__file__).parent / "pretrained"
    known = ((world.folder, world.folder.name), (world.video, world.video.name), (world.gallery, "gallery"))
    for path, name in (*known, (calibrations, "")):
        cli_page = cli_page.replace(str(path) + ("/" if not name else ""), name)  # the CLI's report keeps the paths

    def body(text: str) -> str:
        return text[: text.index("<footer")]  # the footer says when it was made

    assert body(page) == body(cli_page)
    pictures = client.post("/search/report", files=upload(world.query), params={"frames": "false"}).text
    assert world.query.name in pictures and 'class="frame"' not in pictures and "Query" in pictures


# -- gallery, tracks, sightings, pictures -----------------------------------------------------------------
def test_gallery_overview(client, world):
    r = client.get("/gallery", params={"recent": 5})
    assert r.status_code == 200
    g = r.json()
    GalleryModel.model_validate(g)
    assert g["totals"] == {"sightings": world.n, "tracks": 2, "sources": 2, "cameras": len(g["cameras"])}
    assert g["searchable"] == world.n and g["model"] == "osnet_x0_25"
    assert sum(c["sightings"] for c in g["cameras"]) == world.n
    lobby = next(c for c in g["cameras"] if c["camera"] == "lobby")
    assert lobby == {**lobby, "sightings": 7, "tracks": 2, "first_time": 0.0, "first_text": "0:00.0"}
    assert {s["uri"]: s["sightings"] for s in g["sources"]} == {world.folder.name: world.n - 7, world.video.name: 7}
    assert g["time_span"]["start"] == 0.0 and g["time_span"]["end"] == max(c["last_time"] for c in g["cameras"])
    recent = [s["id"] for s in g["recent"]]
    assert recent == sorted(world.lobby_ids, reverse=True)[:5]  # the sightings added last, newest first
    assert g["recent"][0]["track"] is not None and g["recent"][0]["crop_url"] == f"/crops/{recent[0]}"


def test_tracks_and_sightings(client, world):
    t = client.get(f"/tracks/{world.lobby_track}").json()
    TrackDetailModel.model_validate(t)
    assert t["camera"] == "lobby" and t["n_crops"] == 4 and [s["id"] for s in t["sightings"]] == world.lobby_ids[:4]
    s = client.get(f"/sightings/{world.lobby_ids[0]}").json()
    SightingModel.model_validate(s)
    assert s["track"] == world.lobby_track and s["frame"] == 0 and s["frame_url"] == f"/frames/{world.lobby_ids[0]}"
    assert client.get("/sightings/1").json()["track"] is None


def test_gallery_says_which_clock(client, world):
    g = client.get("/gallery").json()
    assert [c["clock"] for c in g["clocks"]] == ["offset"]  # every time here is an offset, none a date
    assert {c["clock"] for c in g["cameras"]} == {"offset"}
    assert {s["times"] for s in g["sources"]} == {"offset (no date)"}


def test_browse_a_camera_by_time(client, world):
    r = client.get("/sightings", params={"camera": "lobby"})
    assert r.status_code == 200, r.text
    b = r.json()
    BrowseModel.model_validate(b)
    assert b["total"] == 2 and b["clock"] == "offset" and b["per_track"]  # one per track: the two tracks
    assert [s["n_crops"] for s in b["sightings"]] == [4, 3]
    times = [s["timestamp"] for s in b["sightings"]]
    assert times == sorted(times) and b["sightings"][0]["track"] == world.lobby_track
    assert b["sightings"][0]["crop_url"].startswith("/crops/")
    every = client.get("/sightings", params={"camera": "lobby", "per_track": "false"}).json()
    assert every["total"] == 7 and [s["id"] for s in every["sightings"]] == sorted(
        world.lobby_ids, key=lambda i: next(s["timestamp"] for s in every["sightings"] if s["id"] == i)
    )
    page = client.get("/sightings", params={"camera": "lobby", "per_track": "false", "offset": 2, "limit": 3}).json()
    assert [s["id"] for s in page["sightings"]] == [s["id"] for s in every["sightings"][2:5]] and page["total"] == 7
    late = client.get("/sightings", params={"camera": "lobby", "per_track": "false", "since": "1.0"}).json()
    assert late["total"] == sum(s["timestamp"] >= 1.0 for s in every["sightings"])
    assert client.get("/sightings", params={"camera": "nowhere"}).status_code == 404
    assert client.get("/sightings", params={"camera": "lobby", "since": "noon"}).status_code == 400


def test_clusters_are_albums(client, world):
    r = client.get("/clusters")
    assert r.status_code == 200, r.text
    c = r.json()
    ClustersModel.model_validate(c)
    # the Market crops have no tracks: sightings are clustered; a gallery this small is clustered on cosine
    assert c["level"] == "sightings" and c["n_items"] == world.n and c["rerank"] is False
    sizes = [a["size"] for a in c["clusters"]]
    assert sizes == sorted(sizes, reverse=True) and len(sizes) >= 5
    for album in c["clusters"]:
        assert album["first_time"] <= album["last_time"] and 1 <= len(album["sightings"]) <= 12
        assert all(s["crop_url"] == f"/crops/{s['id']}" for s in album["sightings"])
    # albums are people: most of an album's Market crops are of one identity (their file names start with it)
    pure = 0
    for album in c["clusters"]:
        pids = [s["crop"][:4] for s in album["sightings"] if s["crop"] and s["crop"][:4].isdigit()]
        pure += bool(pids) and max(pids.count(p) for p in set(pids)) >= 0.8 * len(pids)
    assert pure >= 0.8 * len(c["clusters"])
    assert client.get("/clusters").json() == c  # kept until the gallery grows
    tracks = client.get("/clusters", params={"level": "tracks", "min_samples": 1}).json()
    assert tracks["level"] == "tracks" and tracks["n_items"] == 2
    assert client.get("/clusters", params={"eps": "1.5", "rerank": "true"}).status_code == 400


@pytest.mark.parametrize("path", ["/tracks/999999", "/sightings/999999", "/crops/999999", "/frames/999999"])
def test_unknown_ids_are_404_with_a_message(client, path):
    r = client.get(path)
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert "999999" in r.json()["detail"]


@pytest.mark.parametrize("path", ["/sightings/-1", f"/crops/{2**63}", "/frames/abc", "/tracks/1.5"])
def test_malformed_ids_are_422(client, path):
    assert client.get(path).status_code == 422


def _jpeg(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def test_crops_and_frames(client, world):
    r = client.get("/crops/1")  # a referenced Market crop: the file as it is
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    first = sorted(world.folder.iterdir())[0]
    assert r.content == first.read_bytes()
    saved = client.get(f"/crops/{world.lobby_ids[0]}")  # a crop file in the gallery
    rec = client.get(f"/sightings/{world.lobby_ids[0]}").json()
    assert saved.content == (world.gallery / rec["crop"]).read_bytes()
    cut = client.get(f"/crops/{world.lobby_ids[2]}")  # no crop file: cut from the frame
    x1, y1, x2, y2 = client.get(f"/sightings/{world.lobby_ids[2]}").json()["box"]
    assert _jpeg(cut.content).shape == (y2 - y1, x2 - x1, 3)
    f = client.get(f"/frames/{world.lobby_ids[2]}")
    assert f.status_code == 200 and f.headers["content-type"] == "image/jpeg"
    frame = _jpeg(f.content)
    assert frame.shape == (240, 320, 3)
    edge = frame[(y1 + y2) // 2, x1].astype(int)  # the box is drawn green, as in the HTML report
    assert edge[1] > 150 and edge[0] < 100 and edge[2] < 100
    r = client.get("/frames/1")  # a crop-only source has no frame to show
    assert r.status_code == 404 and "cannot be read" in r.json()["detail"]


def test_health_page_and_static(client):
    assert client.get("/health").json() == {"status": "ok", "gallery": True, "auth": False}
    page = client.get("/")
    assert page.status_code == 200 and "static/app.js" in page.text and "<script src" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "http://" not in page.text and "https://" not in page.text  # works offline: nothing from a CDN
    for name, kind in (("app.js", "javascript"), ("app.css", "css"), ("results.css", "css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
    assert ".appearance{" in client.get("/static/results.css").text  # the report's classes, one source
    for bad in ("/static/..%2Fapp.py", "/static/app.py", "/static/%2e%2e/%2e%2e/pyproject.toml"):
        assert client.get(bad).status_code == 404
    schema = client.get("/openapi.json").json()
    paths = {
        "/search",
        "/search/html",
        "/gallery",
        "/tracks/{track_id}",
        "/sightings/{sighting_id}",
        "/crops/{sighting_id}",
    }
    assert paths <= set(schema["paths"])
    ok = schema["paths"]["/search"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/SearchResultModel"}
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN


# -- limits and bad uploads -------------------------------------------------------------------------------
def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels, with one tiny compressed row (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"this is not a picture at all", "not a decodable picture"),
        (b"", "empty file"),
        ("truncated", "truncated"),
        (_png_header(8000, 8000), "8000 x 8000 pixels is more than the limit"),  # the service's own limit
        (_png_header(100_000, 100_000), "decompression bomb"),  # PIL's limit, hit while reading the header
    ],
    ids=["not-an-image", "empty", "truncated", "bomb-over-limit", "bomb-over-pil-limit"],
)
def test_bad_pictures_are_400(client, world, data, message):
    if data == "truncated":
        data = world.query.read_bytes()[:1500]
    before = client.app.state.stats["searches"]
    r = client.post("/search", files=[("image", ("q.jpg", data, "image/jpeg"))])
    assert r.status_code == 400, r.text
    assert message in r.json()["detail"] and "q.jpg" in r.json()["detail"]
    if data[:4] != b"\xff\xd8\xff\xe0":  # refused from its header, before it took a place in the search line
        assert client.app.state.stats["searches"] == before
    else:  # a truncated JPEG: found out while decoding, in the search thread
        assert client.app.state.stats["searches"] == before + 1


def test_upload_limit_is_413_before_reading_the_body(world, model):
    app = create_app(world.gallery, embedder=model[0], model_info=model[1], max_upload=50_000)
    big = b"\xff\xd8\xff" + b"0" * 60_000
    with _service_world.client(app) as c:
        r = c.post("/search", files=[("image", ("big.jpg", big, "image/jpeg"))])
        assert r.status_code == 413 and "upload limit" in r.json()["detail"]
        # no Content-Length (chunked): counted as it arrives
        head = b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
        chunks = iter([head, big, big])
        r = c.post("/search", content=chunks, headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 413 and "upload limit" in r.json()["detail"]
        assert app.state.stats["searches"] == 0  # the search never started
        ok = c.post("/search", files=upload(world.query))  # a normal picture fits
        assert ok.status_code == 200


def test_too_many_pictures(client, world):
    r = client.post("/search", files=upload(*[world.query] * 17))
    assert r.status_code == 400


# -- token, CORS -------------------------------------------------------------------------------------------
def test_bearer_token(world, model):
    app = create_app(world.gallery, embedder=model[0], model_info=model[1], token="s3cret-token")
    good = {"Authorization": "Bearer s3cret-token"}
    with _service_world.client(app) as c:
        assert c.get("/health").json()["auth"] is True
        assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200
        for path in ("/gallery", "/openapi.json", "/tracks/1", "/sightings/1", "/crops/1", "/frames/1"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
                r = c.get(path, headers=headers)
                assert r.status_code == 401, (path, headers)
                assert r.headers["www-authenticate"] == "Bearer" and "Bearer <token>" in r.json()["detail"]
        assert c.post("/search", files=upload(world.query)).status_code == 401
        assert c.post("/search", data={"track": "1"}, headers={"Authorization": "Bearer s3cret"}).status_code == 401
        assert c.get("/gallery", headers=good).status_code == 200
        assert c.post("/search", data={"track": str(world.lobby_track)}, headers=good).status_code == 200
        schema = c.get("/openapi.json", headers=good).json()
        assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
        assert schema["paths"]["/gallery"]["get"]["security"] == [{"bearer": []}]
        assert "401" in schema["paths"]["/gallery"]["get"]["responses"]


def test_no_cors_unless_asked(client, world, model):
    origin = {"Origin": "http://evil.example"}
    r = client.get("/gallery", headers=origin)
    assert r.status_code == 200 and not any(h.startswith("access-control-") for h in r.headers)
    pre = client.options("/search", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers
    app = create_app(world.gallery, embedder=model[0], model_info=model[1], cors=["http://ok.example"], token="t")
    with _service_world.client(app) as c:
        pre = c.options(
            "/search",
            headers={"Origin": "http://ok.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization"},
        )  # fmt: skip
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://ok.example"
        r = c.get("/gallery", headers={"Origin": "http://evil.example", "Authorization": "Bearer t"})
        assert "access-control-allow-origin" not in r.headers


def test_no_gallery_then_an_empty_one_then_sightings(tmp_path, world, model):
    folder = tmp_path / "later"
    app = create_app(folder, embedder=model[0], model_info=model[1], refresh_s=0)
    with _service_world.client(app) as c:
        assert c.get("/health").json()["gallery"] is False
        for r in (c.get("/gallery"), c.post("/search", data={"track": "1"}), c.get("/crops/1")):
            assert (
                r.status_code == 503
                and "no gallery at" in r.json()["detail"]
                and "reidkit ingest" in r.json()["detail"]
            )
        Gallery.open(folder, dim=model[1].feat_dim).close()  # an ingest has created it, nothing added yet
        g = c.get("/gallery").json()
        assert g["totals"] == {"sightings": 0, "tracks": 0, "sources": 0, "cameras": 0} and g["recent"] == []
        r = c.post("/search", files=upload(world.query))
        assert r.status_code == 409 and "empty" in r.json()["detail"]
        shutil.rmtree(folder)
        shutil.copytree(world.gallery, folder)  # a new database under the same name: followed too
        deadline = time.monotonic() + 20  # the request that notices it still gets the old one; the new one follows
        while c.get("/gallery").json()["searchable"] != world.n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/gallery").json()["totals"]["sightings"] == world.n
        assert c.post("/search", files=upload(world.query)).status_code == 200
        assert c.get("/health").json()["gallery"] is True


# -- concurrency and a writer in another process ------------------------------------------------------------
def test_concurrent_searches_over_http(app, world):
    with _service_world.Server(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        one = http.post("/search", files=upload(world.query)).json()
        tr = http.post("/search", data={"track": str(world.lobby_track)}).json()
        before = app.state.stats["max_active"]
        app.state.stats["max_active"] = 0

        def go(i: int) -> dict:
            with httpx.Client(base_url=url, timeout=60) as h:
                if i % 2:
                    return h.post("/search", data={"track": str(world.lobby_track)}).json()
                return h.post("/search", files=upload(world.query)).json()

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(go, range(16)))
        assert all(a == (tr if i % 2 else one) for i, a in enumerate(answers))
        assert app.state.stats["max_active"] >= 2  # searches did run side by side
        app.state.stats["max_active"] = max(before, app.state.stats["max_active"])


WRITER = r"""
import sys, time
import numpy as np
from reidkit.search.storage import Gallery, Sighting
gdir, query_id, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):  # like reidkit ingest: a writable gallery in its own process, one commit per batch
    with Gallery.open(gdir) as g:
        f = g.features([query_id])
        g.add(f, [Sighting("late-door.mp4", 5000.0 + i, "late-door", frame=i)])
    time.sleep(0.3)
print("wrote", n)
"""


def test_new_sightings_searchable_while_another_process_writes(tmp_path, world, model):
    gdir = tmp_path / "gallery"
    shutil.copytree(world.gallery, gdir)
    app = create_app(gdir, embedder=model[0], model_info=model[1], refresh_s=0.1)
    with _service_world.Server(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        before = http.post("/search", data={"sighting": "1"}).json()
        assert not any(a["camera"] == "late-door" for a in before["appearances"])
        client_id = before["hits"][0]["id"]
        errors: list[str] = []
        stop = threading.Event()

        def hammer() -> None:
            with httpx.Client(base_url=url, timeout=60) as h:
                while not stop.is_set():
                    r = h.post("/search", data={"sighting": "1", "review": "0"})
                    if r.status_code != 200:
                        errors.append(r.text)
                    else:
                        SearchResultModel.model_validate(r.json())

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        writer = subprocess.run(
            [sys.executable, "-c", WRITER, str(gdir), str(client_id), "3"], capture_output=True, text=True, timeout=120
        )
        assert writer.returncode == 0, writer.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            g = http.get("/gallery").json()
            if g["searchable"] == world.n + 3:
                break
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join()
        assert errors == []
        assert g["totals"]["sightings"] == g["searchable"] == world.n + 3
        assert any(c["camera"] == "late-door" and c["sightings"] == 3 for c in g["cameras"])
        after = http.post("/search", data={"sighting": "1"}).json()
        target = [a for a in after["appearances"] if a["camera"] == "late-door"]
        assert len(target) == 3 and all(a["score"] > 0.999 for a in target)  # copies of the query's own feature
        assert app.state.live.reopens >= 2  # the start, then at least one swap


# -- the OpenAPI schema, fuzzed ---------------------------------------------------------------------------------
def test_openapi_schema_fuzzed(app, world):
    """schemathesis against the served schema: for every operation, generated requests (valid and invalid,
    multipart uploads of random bytes included) get no 500 and answers whose status, content type,
    headers and body are as the schema says. Driven through schemathesis' Python API (its pytest
    plugin's lazy loader does not run on pytest 9)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    seen: dict[str, set[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    # search, search/html, search/report, gallery, tracks, sightings (one, a camera's), clusters, crops, frames, health
    assert len(operations) == 11

    def fuzz(op, mode):
        @given(case=op.as_strategy(mode))
        @settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        def run(case) -> None:
            response = case.call_and_validate(checks=checks)
            seen.setdefault(op.label, set()).add(response.status_code)

        return run

    # hypothesis refuses to draw floats while denormals flush to zero, which a torch model's Embedder made earlier in
    # this process turns on (reidkit.runtime.flush_denormals) for this thread: off while it draws, then back
    import torch

    from reidkit.runtime import flush_denormals

    torch.set_flush_denormal(False)
    try:
        for op in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    fuzz(op, mode)()
                except Unsatisfiable:
                    assert mode is GenerationMode.NEGATIVE and op.label == "GET /health"  # nothing to break there
    finally:
        flush_denormals()
    # and valid searches, which random ids seldom are: their 200 answers checked against the served schema too
    for label in ("POST /search", "POST /search/html", "POST /search/report"):
        op = next(o for o in operations if o.label == label)
        bodies = ({"track": world.lobby_track}, {"sighting": 1, "camera": ["c1"], "review": 2}, {"sightings": [1, 2]})
        for body in bodies:
            case = op.Case(body=body, media_type="multipart/form-data")
            assert case.call_and_validate(checks=checks).status_code == 200
    for label, query in (("GET /sightings", {"camera": "lobby"}), ("GET /clusters", {})):
        op = next(o for o in operations if o.label == label)
        assert op.Case(query=query).call_and_validate(checks=checks).status_code == 200
    assert set(seen) == {op.label for op in operations}
    assert all(code < 500 for codes in seen.values() for code in codes), seen
