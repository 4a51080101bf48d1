"""The search service is safe to expose (issue 22): no credential or server path reaches a client, only the
documented picture formats are decoded, what one search may cost is bounded (pixels per picture and per
search, JPEG draft mode, a decode thread for large pictures, a bounded line that answers 429), the Host
header is checked, cross-site POSTs are refused, slow requests are cut off, the token comes from a file
or the environment, and every answer carries the security headers. Tiny gallery of real Market-1501 crops
(tests/_service_world.py) plus a camera source whose URL holds a user, a password and an API key."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import _service_world
import httpx
import numpy as np
import pytest
from PIL import Image

from reidkit.search.storage import Gallery, Sighting
from reidkit.search.storage.records import public_path, public_source, public_text, redact_uri
from reidkit.service.app import MAX_PIXELS, MAX_REQUEST_PIXELS, Upload, create_app, probe_pictures
from reidkit.service.security import allowed_hosts

pytestmark = pytest.mark.data

CAMERA = "rtsp://admin:hunter2@10.1.2.3:554/Streaming/Channels/101?channel=1&apikey=K3Y-SECRET&token=T0K3N"
SECRETS = ("hunter2", "K3Y-SECRET", "T0K3N", "admin:", "apikey", "token=")


@pytest.fixture(scope="module")
def model():
    from reidkit.extract import make_embedder

    return make_embedder(None, None)


@pytest.fixture(scope="module")
def world(tmp_path_factory, data_root, model):
    """The service world, plus the camera: copies of the lobby track's features on a stream with credentials."""
    w = _service_world.build(tmp_path_factory.mktemp("secure"), data_root, model[0])
    with Gallery.open(w.gallery) as g:
        feats = g.features(w.lobby_ids[:4])
        g.add_source(CAMERA, "gate")
        recs = [Sighting(CAMERA, 100.0 + i, frame=i, box=(0, 0, 64, 128), track_id=1) for i in range(4)]
        w.camera_ids = [int(i) for i in g.add(feats, recs)]
        w.camera_track = next(t.id for t in g.tracks() if t.source == CAMERA)
        w.n = len(g)
    return w


@pytest.fixture(scope="module")
def app(world, model):  # refusals answered at once here (the delay has a test of its own)
    return create_app(world.gallery, embedder=model[0], model_info=model[1], refusal_delay=0)


@pytest.fixture(scope="module")
def client(app):
    with _service_world.client(app) as c:
        yield c


def upload(*paths: Path) -> list:
    return [("image", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def encoded(fmt: str, size: tuple[int, int] = (64, 128), source: Path | None = None, **kw) -> bytes:
    img = Image.open(source).convert("RGB") if source else Image.new("RGB", size, (90, 60, 30))
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels, with one tiny compressed row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# -- nothing private goes out -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("uri", "redacted", "public"),
    [
        (CAMERA, "rtsp://10.1.2.3:554/Streaming/Channels/101?channel=1", "rtsp://10.1.2.3:554/Streaming/Channels/101?channel=1"),
        ("rtsp://cam.local/user=admin&password=s3cr3t&channel=1&stream=0.sdp",
         "rtsp://cam.local/user=***&password=***&channel=1&stream=0.sdp", None),
        ("https://u@cams.example/live.m3u8?X-Amz-Signature=abc&X-Amz-Credential=q&res=hd#t=1",
         "https://cams.example/live.m3u8?res=hd", None),
        ("rtsp://[::1]:8554/x", "rtsp://[::1]:8554/x", None),
        ("/srv/footage/lobby.avi", "/srv/footage/lobby.avi", "lobby.avi"),
        ("/srv/photos/cam1/", "/srv/photos/cam1/", "cam1"),
        ("file:///srv/footage/door.mp4", "file:///srv/footage/door.mp4", "door.mp4"),
    ],
)  # fmt: skip
def test_uris_lose_their_credentials(uri, redacted, public):
    assert redact_uri(uri) == redacted
    assert public_source(uri) == (public or redacted)
    assert redact_uri(redacted) == redacted  # idempotent


def test_messages_lose_server_paths_and_credentials():
    msg = f"gallery /srv/galleries/main is empty; {CAMERA} failed (/usr/lib/x/libfoo.so: bad); ratio 1/2 and/or"
    out = public_text(msg, {"/srv/galleries/main": "main"})
    camera = "rtsp://10.1.2.3:554/Streaming/Channels/101?channel=1"
    assert out == f"gallery main is empty; {camera} failed (libfoo.so: bad); ratio 1/2 and/or"
    assert public_path("/srv/crops/a.jpg") == "a.jpg" and public_path("crops/lobby/1.jpg") == "crops/lobby/1.jpg"
    assert public_path("../../etc/passwd") == "passwd"


def _strings(x):
    if isinstance(x, dict):
        for k, v in x.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)
    elif isinstance(x, str):
        yield x


def _private(text: str, world) -> list[str]:
    """What a client must never see in ``text``: a credential of the camera, a server folder."""
    found = [s for s in SECRETS if s in text]
    found += [p for p in (str(world.root), "/tmp/", str(Path.cwd()), "/src/reidkit") if p in text]
    return found


def test_no_credential_and_no_server_path_reaches_a_client(client, world, tmp_path, model):
    answers: dict[str, httpx.Response] = {
        "gallery": client.get("/gallery", params={"recent": 100}),
        "sighting": client.get(f"/sightings/{world.camera_ids[0]}"),
        "track": client.get(f"/tracks/{world.camera_track}"),
        "search": client.post("/search", files=upload(world.query)),
        "search by track": client.post("/search", data={"track": str(world.camera_track)}),
        "search html": client.post("/search/html", files=upload(world.query)),
        "frame 404": client.get(f"/frames/{world.camera_ids[0]}"),
        "track 404": client.get("/tracks/999999"),
        "page": client.get("/"),
        "script": client.get("/static/app.js"),
    }
    for name, r in answers.items():
        assert not _private(r.text, world), (name, _private(r.text, world), r.text[:500])
        if r.headers["content-type"] == "application/json":
            paths = [s for s in _strings(r.json()) if s.startswith("/") and not s.startswith(("/crops/", "/frames/"))]
            assert paths == [], (name, paths)
    assert answers["frame 404"].status_code == 404
    assert "rtsp://10.1.2.3:554/Streaming/Channels/101?channel=1" in answers["frame 404"].json()["detail"]
    g = answers["gallery"].json()
    assert {s["uri"] for s in g["sources"]} == {world.folder.name, world.video.name, redact_uri(CAMERA)}
    hits = answers["search"].json()["hits"]
    assert {h["source"] for h in hits if h["camera"] == "gate"} == {redact_uri(CAMERA)}  # the camera's hits are there
    assert answers["search"].json()["gallery"] == world.gallery.name
    assert "calibrated (calibration_" in answers["search"].json()["threshold_source"]
    assert "gate" in answers["search html"].text and "10.1.2.3" in answers["search html"].text
    # no gallery yet, an empty one: the messages name the folder, not where it is
    empty = create_app(tmp_path / "later", embedder=model[0], model_info=model[1], refresh_s=0)
    with _service_world.client(empty) as c:
        r = c.get("/gallery")
        assert r.status_code == 503 and "no gallery at later" in r.json()["detail"], r.text
        assert not _private(r.text, world) and str(tmp_path) not in r.text
        Gallery.open(tmp_path / "later", dim=model[1].feat_dim).close()
        r = c.post("/search", files=upload(world.query))
        assert r.status_code == 409 and str(tmp_path) not in r.text and "later" in r.json()["detail"]


def test_the_cli_json_keeps_paths_but_not_credentials(world, model, tmp_path):
    from reidkit.search.query.report import render_html, result_table
    from reidkit.search.query.search import search_person

    with Gallery.open(world.gallery, read_only=True) as g:
        result = search_person(g, model[0], [str(world.query)], model_info=model[1])
        text = json.dumps(result.to_dict())
        html = render_html(result, frames=False)
    assert not [s for s in SECRETS if s in text] and str(world.gallery) in text  # the operator's own paths stay
    assert not [s for s in SECRETS if s in html] and "10.1.2.3" in html
    from rich.console import Console

    console = Console(width=300, record=True, file=io.StringIO())
    console.print(result_table(result))
    assert not [s for s in SECRETS if s in console.export_text()]


# -- pictures: formats and cost ----------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["ICO", "TGA", "PPM", "EPS", "QOI", "PCX", "SGI", "DDS"])
def test_undocumented_formats_are_refused_undecoded(client, fmt, monkeypatch):
    from PIL import EpsImagePlugin

    started: list = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: started.append(a))
    data = encoded(fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # a real picture in that format
    before = client.app.state.stats["searches"]
    r = client.post("/search", files=[("image", (f"q.{fmt.lower()}", data, "image/x-other"))])
    assert r.status_code == 400 and "not a decodable picture" in r.json()["detail"], r.text
    assert "JPEG, PNG, WebP, GIF, BMP, TIFF" in r.json()["detail"]
    assert started == [] and client.app.state.stats["searches"] == before  # refused from the header


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"])
def test_documented_formats_are_searched(client, world, fmt):
    kw = {"save_all": True} if fmt == "MPO" else {}
    data = encoded(fmt, source=world.query, **kw)
    r = client.post("/search", files=[("image", (f"q.{fmt.lower()}", data, "image/x-any"))])
    assert r.status_code == 200, r.text
    assert any(a["camera"] == "lobby" for a in r.json()["appearances"])  # the person is found whatever the format


def test_pixel_caps_per_picture_and_per_search(client):
    over = png_header(4100, 4000)  # 16.4 MP declared, a few bytes
    r = client.post("/search", files=[("image", ("big.png", over, "image/png"))])
    assert r.status_code == 400 and f"limit of {MAX_PIXELS:,} pixels" in r.json()["detail"]
    each = png_header(3500, 3500)  # 12.25 MP each, under the cap; 24.5 MP together, over the search's
    r = client.post("/search", files=[("image", ("a.png", each, "image/png")), ("image", ("b.png", each, "image/png"))])
    assert r.status_code == 400 and f"more than the {MAX_REQUEST_PIXELS:,} one search may decode" in r.json()["detail"]
    sixteen = [("image", (f"{i}.png", png_header(7700, 5200), "image/png")) for i in range(16)]
    t0 = time.perf_counter()
    r = client.post("/search", files=sixteen)  # the sixteen 40-MP pictures: refused from the first header
    assert r.status_code == 400 and time.perf_counter() - t0 < 2.0


def test_a_client_sending_bad_pictures_waits(world, model):
    app = create_app(world.gallery, embedder=model[0], model_info=model[1])  # the default delay: a second
    with _service_world.client(app) as c:
        t0 = time.perf_counter()
        r = c.post("/search", files=[("image", ("q.tga", encoded("TGA"), "image/x-tga"))])
        assert r.status_code == 400 and time.perf_counter() - t0 >= 1.0
        t0 = time.perf_counter()
        assert c.post("/search", data={"track": "999999"}).status_code == 404  # other refusals: at once
        assert time.perf_counter() - t0 < 1.0


def test_large_jpegs_decode_in_draft_mode(client, world):
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8))  # 12 MP
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=80)
    (probed,) = probe_pictures([Upload("photo.jpg", buf.getvalue())], size=(128, 256))
    assert probed.image.size == (500, 375) and probed.pixels == 187_500  # 1/8 scale: libjpeg's DCT scaling
    png = io.BytesIO()
    photo.resize((2000, 1500)).save(png, "PNG", compress_level=1)  # 3 MP PNG: no draft, the decode thread's
    (probed,) = probe_pictures([Upload("photo.png", png.getvalue())], size=(128, 256))
    assert probed.pixels == 3_000_000
    decodes = client.app.state.service.decodes
    before = decodes.done
    r = client.post("/search", files=[("image", ("photo.png", png.getvalue(), "image/png"))])
    assert r.status_code == 200 and decodes.done == before + 1  # decoded in the decode thread, then searched
    r = client.post("/search", files=[("image", ("photo.jpg", buf.getvalue(), "image/jpeg"))])
    assert r.status_code == 200 and decodes.done == before + 1  # small once drafted: decoded in the search thread


def test_a_full_line_is_answered_429_with_retry_after(world, model, monkeypatch):
    from reidkit.search import api

    app = create_app(world.gallery, embedder=model[0], model_info=model[1], workers=1, max_queue=1)
    lane = app.state.service.searches
    entered, release = threading.Event(), threading.Event()
    real = api.search

    def slow(*args, **kwargs):
        entered.set()
        assert release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "search", slow)
    form = {"track": str(world.lobby_track)}
    with _service_world.Server(app) as url:
        answers: list[int] = []

        def post() -> None:
            answers.append(httpx.post(f"{url}/search", data=form, timeout=60).status_code)

        first, second = threading.Thread(target=post), threading.Thread(target=post)
        first.start()
        assert entered.wait(30)
        second.start()  # waits in the line (one place)
        deadline = time.monotonic() + 30
        while lane.inside < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        t0 = time.perf_counter()
        r = httpx.post(f"{url}/search", data=form, timeout=60)
        assert r.status_code == 429 and time.perf_counter() - t0 < 5, r.text
        assert int(r.headers["retry-after"]) >= 1 and "busy" in r.json()["detail"]
        assert httpx.get(f"{url}/gallery", timeout=10).status_code == 200  # reads still answered
        release.set()
        first.join(60)
        second.join(60)
    assert answers == [200, 200] and lane.refused == 1 and lane.inside == 0


# -- requests: Host, origin, time ----------------------------------------------------------------------------
def test_host_header_must_name_the_service(client, world, model):
    for host in ("127.0.0.1:8000", "localhost", "LOCALHOST:1", "[::1]:8000"):
        assert client.get("/gallery", headers={"host": host}).status_code == 200, host
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil.example"):
        for r in (
            client.get("/gallery", headers={"host": host}),
            client.get("/", headers={"host": host}),
            client.post("/search", data={"track": "1"}, headers={"host": host}),
        ):
            assert r.status_code == 400 and "--allow-host" in r.json()["detail"], (host, r.text)
    assert client.get("/health", headers={"host": "10.0.0.9:8000"}).status_code == 200  # a load balancer's probe
    app = create_app(
        world.gallery, embedder=model[0], model_info=model[1], hosts=["reid.example.org", "*.cams.example"]
    )
    with _service_world.client(app) as c:
        for host, status in (("reid.example.org", 200), ("a.cams.example:443", 200), ("cams.example.evil", 400),
                             ("127.0.0.1", 400)):  # fmt: skip
            assert c.get("/gallery", headers={"host": host}).status_code == status, host


def test_allowed_hosts_of_reidkit_serve():
    assert allowed_hosts("127.0.0.1") == ["localhost", "127.0.0.1", "::1"]
    assert allowed_hosts("192.168.1.5", ["reid.example.org"]) == [
        "localhost", "127.0.0.1", "::1", "192.168.1.5", "reid.example.org"
    ]  # fmt: skip
    anywhere = allowed_hosts("0.0.0.0")
    assert socket.gethostname().lower() in anywhere and "*" not in anywhere
    assert "*" in allowed_hosts("::", ["*"])


def test_cross_site_posts_are_refused(client, world, model):
    form = {"track": str(world.lobby_track), "review": "0"}
    for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"}, {"origin": "null"},
                    {"sec-fetch-site": "same-site"}, {"origin": "http://127.0.0.1:9999"}):  # fmt: skip
        r = client.post("/search", data=form, headers=headers)
        assert r.status_code == 403 and "cross-site" in r.json()["detail"], headers
    for headers in ({}, {"origin": "http://127.0.0.1"}, {"sec-fetch-site": "same-origin", "origin": "http://127.0.0.1"},
                    {"sec-fetch-site": "none"}):  # fmt: skip
        assert client.post("/search", data=form, headers=headers).status_code == 200, headers
    assert client.get("/gallery", headers={"origin": "http://evil.example"}).status_code == 200  # reads: no CORS
    app = create_app(world.gallery, embedder=model[0], model_info=model[1], cors=["http://ok.example"])
    with _service_world.client(app) as c:
        ok = c.post("/search", data=form, headers={"origin": "http://ok.example", "sec-fetch-site": "cross-site"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://ok.example"
        assert c.post("/search", data=form, headers={"origin": "http://evil.example"}).status_code == 403


def _raw(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def _read_all(s: socket.socket, limit: float) -> tuple[bytes, float]:
    t0, data = time.perf_counter(), b""
    s.settimeout(limit)
    try:
        while chunk := s.recv(65536):
            data += chunk
    except TimeoutError:
        pass
    return data, time.perf_counter() - t0


def test_slow_bodies_and_slow_headers_are_cut_off(world, model):
    app = create_app(world.gallery, embedder=model[0], model_info=model[1], read_timeout=1.0)
    with _service_world.Server(app, read_timeout=1.0) as url:
        body = b'--x\r\nContent-Disposition: form-data; name="track"\r\n\r\n'
        s = _raw(url)
        s.sendall(
            b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            b"Content-Length: 100000\r\n\r\n" + body
        )
        data, took = _read_all(s, 10)  # the rest never comes
        s.close()
        assert data.startswith(b"HTTP/1.1 408") and b"not received in time" in data, data[:300]
        assert took < 6  # cut off after about a second, and the connection closed
        s = _raw(url)
        s.sendall(b"GET /gallery HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
        data, took = _read_all(s, 10)
        s.close()
        assert data == b"" and took < 6  # closed without an answer
        with httpx.Client(base_url=url, timeout=30) as http:  # an ordinary client is unaffected
            assert http.post("/search", data={"track": str(world.lobby_track)}).status_code == 200


def test_uvicorn_settings():
    from reidkit.service.server import GuardedH11, config

    c = config(object(), "127.0.0.1", 8000, read_timeout=7)
    assert c.timeout_keep_alive == 5 and not c.server_header
    assert issubclass(c.http, GuardedH11) and c.http.header_timeout == 7.0


# -- the token --------------------------------------------------------------------------------------------------
@pytest.fixture
def serve(monkeypatch, tmp_path):
    """``reidkit serve`` with the app and the server stubbed: what it passes them, and what it prints."""
    from rich.console import Console
    from typer.testing import CliRunner

    import reidkit.cli.common
    import reidkit.cli.serve
    import reidkit.service.app
    import reidkit.service.server
    from reidkit.cli import app as cli

    seen: dict = {}
    monkeypatch.setattr(reidkit.service.app, "create_app", lambda gallery, **kw: seen.setdefault("app", kw))
    monkeypatch.setattr(reidkit.service.server, "run", lambda app, host, port, **kw: seen.setdefault("run", kw))
    monkeypatch.delenv("REIDKIT_TOKEN", raising=False)
    (tmp_path / "g").mkdir()

    def run(*args: str, env: dict | None = None):
        seen.clear()
        console = Console(width=300)
        monkeypatch.setattr(reidkit.cli.common, "console", console)
        monkeypatch.setattr(reidkit.cli.serve, "console", console)
        res = CliRunner().invoke(cli, ["serve", "--gallery", str(tmp_path / "g"), *args], env=env)
        return res, dict(seen)

    return run


def test_token_from_a_file_or_the_environment(serve, tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cret-from-file\n")
    os.chmod(secret, 0o600)
    res, seen = serve("--token-file", str(secret))
    assert res.exit_code == 0, res.output
    assert seen["app"]["token"] == "s3cret-from-file" and "visible" not in res.output and "token required" in res.output
    res, seen = serve(env={"REIDKIT_TOKEN": "s3cret-from-env"})
    assert res.exit_code == 0 and seen["app"]["token"] == "s3cret-from-env" and "visible" not in res.output
    res, seen = serve("--token", "s3cret-on-the-line")  # still works, with a warning
    assert res.exit_code == 0 and seen["app"]["token"] == "s3cret-on-the-line"
    assert "visible to every user of this machine (ps)" in res.output
    os.chmod(secret, 0o644)
    res, _ = serve("--token-file", str(secret))
    assert res.exit_code == 0 and "can be read by other users" in res.output
    secret.write_text("\n")
    res, _ = serve("--token-file", str(secret))
    assert res.exit_code == 2 and "one line" in res.output
    res, _ = serve("--token-file", str(tmp_path / "missing"))
    assert res.exit_code == 2 and "cannot read it" in res.output
    res, _ = serve("--token-file", str(secret), "--token", "x")
    assert res.exit_code == 2 and "not both" in res.output


def test_serve_passes_hosts_limits_and_timeouts(serve):
    res, seen = serve("--allow-host", "reid.example.org", "--max-queue", "8", "--read-timeout", "5")
    assert res.exit_code == 0, res.output
    assert seen["app"]["hosts"] == ["localhost", "127.0.0.1", "::1", "reid.example.org"]
    assert seen["app"]["max_queue"] == 8 and seen["app"]["read_timeout"] == 5.0 and seen["run"]["read_timeout"] == 5.0
    assert "no token" in res.output and "reid.example.org" in res.output
    res, seen = serve("--host", "0.0.0.0")
    assert res.exit_code == 0 and "without a token" in res.output and "*" not in seen["app"]["hosts"]


# -- headers ---------------------------------------------------------------------------------------------------
def test_security_headers_on_every_answer(client, world, model):
    app = create_app(world.gallery, embedder=model[0], model_info=model[1], token="t")
    with _service_world.client(app) as locked:
        answers = {
            "page": client.get("/"),
            "json": client.get("/gallery"),
            "jpeg": client.get("/crops/1"),
            "404": client.get("/tracks/999999"),
            "400 host": client.get("/gallery", headers={"host": "evil.example"}),
            "403": client.post("/search", data={"track": "1"}, headers={"origin": "http://evil.example"}),
            "401": locked.get("/gallery"),
            "413": locked.post("/search", content=b"x" * (11 * 1024 * 1024)),
        }
    for name, r in answers.items():
        assert r.headers["referrer-policy"] == "no-referrer", name
        assert r.headers["cross-origin-resource-policy"] == "same-origin", name
        assert r.headers["x-content-type-options"] == "nosniff", name
    assert answers["page"].headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in answers["page"].headers["content-security-policy"]


def test_schema_documents_the_refusals(client):
    responses = client.get("/openapi.json").json()["paths"]["/search"]["post"]["responses"]
    assert {"400", "403", "408", "413", "429"} <= set(responses)


def test_the_raw_uri_stays_in_the_gallery(world):
    """The camera's raw URI is stored (ingest reconnects with it); only what goes out is redacted."""
    with Gallery.open(world.gallery, read_only=True) as g:
        assert CAMERA in {s.uri for s in g.sources()}
