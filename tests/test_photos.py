"""Photo folders: every person in every picture is a sighting; camera subfolders; photo times; re-runs."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from reidkit.imaging import PhotoError, decode_photo, read_photo
from reidkit.search.ingest.detect import build_detector
from reidkit.search.ingest.photos import PhotoClock, TimePattern
from reidkit.search.ingest.pipeline import ingest
from reidkit.search.ingest.sources import camera_folders, list_photos
from reidkit.search.storage import Gallery

VTEST = Path(os.environ.get("REIDKIT_VTEST", "/usr/share/doc/opencv-doc/examples/data/vtest.avi"))
T0 = 1_700_000_000.0  # photo times: T0 + video second
FRAMES = list(range(100, 341, 20))  # two seconds apart; odd steps -> cam1, even -> cam2


def _exif_bytes(when: datetime, offset: str | None = None) -> bytes:
    exif = Image.Exif()
    sub = {36867: when.strftime("%Y:%m:%d %H:%M:%S")}
    if offset:
        sub[36881] = offset
    exif[0x8769] = sub  # Pillow writes a dict as the Exif sub-IFD
    return exif.tobytes()


def _write_jpeg(path: Path, bgr: np.ndarray, exif: bytes | None = None, orientation: int | None = None) -> None:
    im = Image.fromarray(bgr[:, :, ::-1])
    kw: dict = {"quality": 92}
    if exif is not None or orientation is not None:
        e = Image.Exif()
        if exif is not None:
            e.load(exif)
        if orientation is not None:
            e[0x0112] = orientation
        kw["exif"] = e.tobytes()
    im.save(path, **kw)


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vtest.avi frames 2 s apart as photos of two cameras: cam1 dated by EXIF, cam2 by mtime; one corrupt file."""
    if not VTEST.is_file():
        if os.environ.get("REIDKIT_REQUIRE_DATA") == "1":
            pytest.fail(f"REIDKIT_REQUIRE_DATA=1 but {VTEST} is missing (Debian opencv-doc)", pytrace=False)
        pytest.skip(f"{VTEST} not installed (Debian opencv-doc)")
    root = tmp_path_factory.mktemp("photos") / "site"
    cap = cv2.VideoCapture(str(VTEST))
    i = 0
    while i <= FRAMES[-1]:
        ok, frame = cap.read()
        assert ok
        if i in FRAMES:
            cam = "cam1" if (i // 20) % 2 else "cam2"
            (root / cam).mkdir(parents=True, exist_ok=True)
            p = root / cam / f"IMG_{i:04d}.jpg"
            t = T0 + i / 10
            if cam == "cam1":  # EXIF in UTC+01:00; mtime set to something else, to see EXIF wins
                when = datetime.fromtimestamp(t, timezone(timedelta(hours=1))).replace(tzinfo=None)
                _write_jpeg(p, frame, _exif_bytes(when, "+01:00"))
                os.utime(p, (T0 - 86400, T0 - 86400))
            else:
                _write_jpeg(p, frame)
                os.utime(p, (t, t))
        i += 1
    cap.release()
    good = root / "cam1" / "IMG_0100.jpg"
    (root / "cam1" / "broken.jpg").write_bytes(good.read_bytes()[:4000])  # a truncated JPEG
    return root


@pytest.fixture(scope="module")
def detector():
    return build_detector("ssd")


@pytest.fixture(scope="module")
def embedder():
    from reidkit.extract import make_embedder

    emb, _ = make_embedder(None, None, "torch", batch_size=32, threads=1)
    return emb


@pytest.fixture(scope="module")
def photo_gallery(tmp_path_factory: pytest.TempPathFactory, photo_root: Path, detector, embedder):
    """The two camera folders ingested as photos with the shipped model (reports kept beside)."""
    gdir = tmp_path_factory.mktemp("pg") / "g"
    with Gallery.open(gdir) as g:
        reports = [ingest(g, d, embedder, detector=detector) for d in camera_folders(photo_root)]
    return gdir, reports


# --- parts -------------------------------------------------------------------------------------------


def test_time_pattern() -> None:
    p = TimePattern("IMG_%Y%m%d_%H%M%S")
    assert p.parse("IMG_20240105_101502.jpg") == datetime(2024, 1, 5, 10, 15, 2).timestamp()
    assert p.parse("holiday IMG_20240105_101502 (2).jpg") == datetime(2024, 1, 5, 10, 15, 2).timestamp()
    assert p.parse("IMG_20241305_101502.jpg") is None  # month 13: not a time
    assert p.parse("DSC01234.jpg") is None
    dashed = TimePattern("%Y-%m-%d %H.%M.%S")
    assert dashed.parse("2023-07-09 08.05.59.png") == datetime(2023, 7, 9, 8, 5, 59).timestamp()
    with pytest.raises(ValueError, match="no strftime directive"):
        TimePattern("IMG_")
    with pytest.raises(ValueError, match="unsupported directive"):
        TimePattern("%Q")


def test_decode_photo_exif_orientation_and_bad_files(tmp_path: Path) -> None:
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :30] = (0, 0, 255)  # left half red (BGR)
    when = datetime(2024, 5, 1, 12, 30, 0)
    p = tmp_path / "a.jpg"
    _write_jpeg(p, img, _exif_bytes(when, "+02:00"))
    ph = decode_photo(p.read_bytes(), p)
    assert ph.image_bgr.shape == (40, 60, 3) and ph.image_bgr[20, 5, 2] > 200 and ph.image_bgr[20, 55, 2] < 50
    assert ph.exif_time == datetime(2024, 5, 1, 10, 30, 0, tzinfo=UTC).timestamp()
    _write_jpeg(p, img, _exif_bytes(when))  # no offset: local time, as cameras write it
    assert decode_photo(p.read_bytes(), p).exif_time == when.timestamp()
    _write_jpeg(p, img, orientation=6)  # "rotate 90 CW to display"
    up = decode_photo(p.read_bytes(), p).image_bgr
    assert up.shape == (60, 40, 3) and up[5, 20, 2] > 200 and up[55, 20, 2] < 50  # red now on top
    assert decode_photo(p.read_bytes(), p).exif_time is None
    with pytest.raises(PhotoError, match=r"b\.jpg: not a readable image"):
        decode_photo(p.read_bytes()[:300], "b.jpg")
    with pytest.raises(PhotoError, match=r"c\.png: not a readable image"):
        decode_photo(b"hello, not an image", "c.png")
    with pytest.raises(PhotoError, match=r"d\.jpg: 60x40 pixels is more than the 1,000 allowed"):
        decode_photo(_jpeg(img), "d.jpg", max_pixels=1000)
    with pytest.raises(PhotoError, match=r"nope\.jpg: cannot read"):
        read_photo(tmp_path / "nope.jpg")


def _jpeg(img: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", img)[1].tobytes()


def test_camera_folders_and_clock(tmp_path: Path) -> None:
    img = _jpeg(np.zeros((8, 8, 3), np.uint8))
    single = tmp_path / "album"
    single.mkdir()
    for n in ("b10.jpg", "b9.jpg", ".hidden.jpg", "notes.txt"):
        (single / n).write_bytes(img)
    assert camera_folders(single) == [single]
    assert [p.name for p in list_photos(single)] == ["b9.jpg", "b10.jpg"]
    site = tmp_path / "site"
    for cam in ("gate", "hall", ".trash"):
        (site / cam).mkdir(parents=True)
        (site / cam / "x.jpg").write_bytes(img)
    (site / "empty").mkdir()
    assert camera_folders(site) == [site / "gate", site / "hall"]
    (site / "top.jpg").write_bytes(img)
    assert camera_folders(site) == [site, site / "gate", site / "hall"]

    # times: sidecar (here: above the camera folder) > EXIF > name pattern > mtime
    (site / "hall" / "IMG_20240105_101502.jpg").write_bytes(img)
    (site / "frames.csv").write_text("path,camera,timestamp\ngate/x.jpg,,2024-01-01T00:00:10+00:00\n")
    clock = PhotoClock(site / "gate", pattern="IMG_%Y%m%d_%H%M%S")
    assert clock.time_of(site / "gate" / "x.jpg", 5.0) == (1704067210.0, "sidecar")
    hall = PhotoClock(site / "hall", pattern="IMG_%Y%m%d_%H%M%S")
    named = site / "hall" / "IMG_20240105_101502.jpg"
    assert hall.time_of(named, 5.0) == (5.0, "exif")
    assert hall.time_of(named, None) == (datetime(2024, 1, 5, 10, 15, 2).timestamp(), "pattern")
    assert hall.time_of(site / "hall" / "x.jpg", None) == ((site / "hall" / "x.jpg").stat().st_mtime, "mtime")


# --- ingest on real pictures --------------------------------------------------------------------------


def test_every_detection_is_a_sighting(photo_root: Path, photo_gallery, detector) -> None:
    gdir, reports = photo_gallery
    assert [Path(r.uri).name for r in reports] == ["cam1", "cam2"]
    r1, r2 = reports
    assert (r1.mode, r1.status, r1.frames, r1.unreadable, r1.time_from) == ("photos", "done", 7, ["broken.jpg"], "exif")
    assert (r2.frames, r2.unreadable, r2.time_from) == (6, [], "mtime")
    expected: dict[tuple[str, str], int] = {}
    for cam in ("cam1", "cam2"):
        for p in list_photos(photo_root / cam):
            if p.name != "broken.jpg":
                expected[(cam, p.name)] = len(detector.detect(read_photo(p)))
    assert sum(expected.values()) >= 40  # vtest: several people in every frame
    with Gallery.open(gdir, read_only=True) as g:
        recs = g.records()
        assert len(recs) == sum(expected.values()) == r1.crops + r2.crops == r1.detections + r2.detections
        assert len(g.tracks()) == len(recs)  # one single-crop track per person seen
        assert [s.camera for s in g.sources()] == ["cam1", "cam2"] and all(s.status == "done" for s in g.sources())
        got = Counter((r.camera, g.photo_path(r.source_id, r.frame).name) for r in recs)
        assert {k: v for k, v in expected.items() if v} == dict(got)
        by_name = {p: T0 + int(p[4:8]) / 10 for _, p in expected}
        for r in recs:
            assert r.timestamp == pytest.approx(by_name[g.photo_path(r.source_id, r.frame).name])
            assert (Path(gdir) / r.crop).is_file() and r.box is not None
        assert set(g.time_bases().values()) == {"exif", "mtime"}


# Hand-labelled (looked at on the pictures): the woman in a white hat and light-blue coat walks left
# through frames 120 -> 200, box centres (x, y) in pixels; her crop from cam1 is the query.
WOMAN = {120: (707, 255), 140: (534, 233), 160: (359, 207), 180: (214, 197), 200: (97, 186)}


def _centre(box) -> np.ndarray:
    return np.array(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))


def test_person_from_one_folder_found_in_the_other(photo_gallery, embedder) -> None:
    from reidkit.search.query.search import search_person
    from reidkit.search.storage.media import FrameReader

    gdir, _ = photo_gallery
    with Gallery.open(gdir, read_only=True) as g:
        in140 = [r for r in g.records() if r.camera == "cam1" and r.timestamp == T0 + 14]
        q = min(in140, key=lambda r: np.linalg.norm(_centre(r.box) - WOMAN[140]))
        assert np.linalg.norm(_centre(q.box) - WOMAN[140]) < 15, "the detector missed her in IMG_0140"
        crop = cv2.imread(str(Path(gdir) / q.crop))
        res = search_person(g, embedder, crop, bgr=True, cameras=["cam2"], review=0, threshold=0.0, adaptive=False)
        assert {h.camera for h in res.hits} == {"cam2"} and res.time_from == {res.hits[0].source: "mtime"}
        best = max(res.hits, key=lambda h: h.score)
        for frame in (120, 160):  # the best match in each neighbouring cam2 photo is her, with that photo's time
            at = [h for h in res.hits if h.timestamp == T0 + frame / 10]
            top = max(at, key=lambda h: h.score)
            assert np.linalg.norm(_centre(top.box) - WOMAN[frame]) < 25, (frame, top)
        at_frame = round((best.timestamp - T0) * 10)  # her best match overall: her, in some cam2 photo
        assert at_frame in (120, 160, 200) and np.linalg.norm(_centre(best.box) - WOMAN[at_frame]) < 25
        frame = FrameReader(str(gdir)).read(best.source, best.frame)  # the report's full picture
        assert frame is not None and frame.shape == (576, 768, 3)


def test_rerun_adds_only_new_pictures_and_resumes_after_a_kill(tmp_path: Path, photo_root: Path, detector) -> None:
    from test_ingest import FakeEmbedder

    folder = tmp_path / "cam2"
    shutil.copytree(photo_root / "cam2", folder)
    extra = folder.with_name("later")
    extra.mkdir()
    shutil.move(folder / "IMG_0320.jpg", extra / "IMG_0320.jpg")

    class Killed(RuntimeError):
        pass

    class DiesAfter(FakeEmbedder):
        def __init__(self, calls: int) -> None:
            self.calls = calls

        def embed(self, images, bgr: bool = False):
            self.calls -= 1
            if self.calls < 0:
                raise Killed
            return super().embed(images, bgr)

    def rows(g: Gallery) -> list[tuple]:
        return sorted((r.frame, r.box, r.timestamp) for r in g.records())

    with Gallery.open(tmp_path / "whole") as g:
        ingest(g, folder, FakeEmbedder(), detector=detector, batch_size=8)
        (folder / "IMG_0320.jpg").write_bytes((extra / "IMG_0320.jpg").read_bytes())
        os.utime(folder / "IMG_0320.jpg", (T0 + 32.0, T0 + 32.0))
        whole_plus = ingest(g, folder, FakeEmbedder(), detector=detector, batch_size=8)
        assert (whole_plus.status, whole_plus.frames, whole_plus.already) == ("done", 1, 5)
        reference = rows(g)
    (folder / "IMG_0320.jpg").unlink()

    with Gallery.open(tmp_path / "g") as g:
        with pytest.raises(Killed):  # killed after the first committed batch
            ingest(g, folder, DiesAfter(1), detector=detector, batch_size=8)
        first = rows(g)
        assert 0 < len(first) < len(reference) and g.sources()[0].status == "failed"
        again = ingest(g, folder, FakeEmbedder(), detector=detector, batch_size=8)
        assert again.status == "done" and again.already >= 1 and again.frames + again.already == 5
        assert ingest(g, folder, FakeEmbedder(), detector=detector).status == "skipped"
        # a picture added later is ingested by a re-run; a copy under another name is not added twice
        (folder / "IMG_0320.jpg").write_bytes((extra / "IMG_0320.jpg").read_bytes())
        os.utime(folder / "IMG_0320.jpg", (T0 + 32.0, T0 + 32.0))
        shutil.copy(folder / "IMG_0120.jpg", folder / "copy of IMG_0120.jpg")
        later = ingest(g, folder, FakeEmbedder(), detector=detector)
        assert (later.frames, later.already) == (1, 6)
        assert rows(g) == reference
        assert len({(r.frame, r.box) for r in g.records()}) == len(reference)
        n_photos = sqlite3.connect(tmp_path / "g" / "gallery.db").execute("SELECT COUNT(*) FROM photos").fetchone()
        assert n_photos[0] == 6


def test_camera_set_folder_is_refused_by_the_api(photo_root: Path, detector) -> None:
    from test_ingest import FakeEmbedder

    from reidkit.search.ingest.sources import SourceError

    with Gallery.open(photo_root.parent / "refused") as g, pytest.raises(SourceError, match="camera folders"):
        ingest(g, photo_root, FakeEmbedder(), detector=detector)
    mixed = photo_root.parent / "mixed"  # pictures at the top and in a camera folder: two sources
    shutil.copytree(photo_root / "cam2", mixed / "cam2")
    shutil.copy(photo_root / "cam1" / "IMG_0140.jpg", mixed / "IMG_0140.jpg")
    with Gallery.open(photo_root.parent / "g_mixed") as g:
        reps = [ingest(g, d, FakeEmbedder(), detector=detector) for d in camera_folders(mixed)]
        assert [(r.camera, r.frames) for r in reps] == [("mixed", 1), ("cam2", 6)]


# --- command line ------------------------------------------------------------------------------------


def _cli():
    import typer

    from reidkit.cli.ingest import register as reg_ingest
    from reidkit.cli.search import register as reg_search

    app = typer.Typer()
    reg_ingest(app)
    reg_search(app)
    return app


def test_cli_photo_folder_truncated_video_and_positional_query(
    tmp_path: Path, photo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    import reidkit.cli.ingest
    import reidkit.cli.search

    monkeypatch.setattr(reidkit.cli.ingest, "console", Console(width=200))
    monkeypatch.setattr(reidkit.cli.search, "console", Console(width=200))
    runner = CliRunner()
    app = _cli()
    truncated = tmp_path / "door.avi"
    truncated.write_bytes(VTEST.read_bytes()[:300_000])
    g = str(tmp_path / "g")
    res = runner.invoke(app, ["ingest", str(truncated), str(photo_root), "-g", g, "--threads", "1"])
    out = res.output
    assert res.exit_code == 2, out
    assert "cam1" in out and "cam2" in out and "exif" in out and "mtime" in out  # both cameras, after the video
    assert "broken.jpg" in out and "1 unreadable" in out
    assert "door.avi: the video ended at frame" in out and "1 of 3 source(s) failed" in out
    with Gallery.open(g, read_only=True) as gal:
        st = {Path(s.uri).name: s.status for s in gal.sources()}
        assert st == {"door.avi": "failed", "cam1": "done", "cam2": "done"}
        q = next(r for r in gal.records() if r.camera == "cam1")
    again = runner.invoke(app, ["ingest", str(photo_root), "-g", g, "--threads", "1"])
    assert again.exit_code == 0 and again.output.count("skipped") == 2, again.output
    html_out = tmp_path / "r.html"
    res = runner.invoke(app, ["search", str(Path(g) / q.crop), "--gallery", g, "--html", str(html_out)])
    assert res.exit_code == 0, res.output
    assert "photo times from" in res.output and "EXIF capture time" in res.output
    assert "photo times from cam1: EXIF capture time" in html_out.read_text()
    tops = []
    for backend in ("torch", "openvino-int8"):  # the INT8 default finds the same first hit (the crop's own picture)
        out_json = tmp_path / f"{backend}.json"
        res = runner.invoke(
            app, ["search", str(Path(g) / q.crop), "--gallery", g, "--backend", backend, "--json", str(out_json)]
        )
        assert res.exit_code == 0, res.output
        top = json.loads(out_json.read_text())["hits"][0]
        tops.append((top["picture"], [round(v) for v in top["box"]]))
    assert tops[0] == tops[1], tops
    bad = runner.invoke(app, ["ingest", str(photo_root), "-g", g, "--time-pattern", "IMG_"])
    assert bad.exit_code == 2 and "--time-pattern" in bad.output
    seq = runner.invoke(app, ["ingest", str(photo_root / "cam2"), "-g", str(tmp_path / "s"), "--sequence"])
    assert seq.exit_code == 0 and "done sequence" in seq.output, seq.output  # tracked: far fewer sightings
    with Gallery.open(tmp_path / "s", read_only=True) as gs, Gallery.open(g, read_only=True) as gp:
        assert len(gs) < len([r for r in gp.records() if r.camera == "cam2"])


def test_cluster_photo_gallery_into_albums(tmp_path: Path, photo_gallery) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from reidkit.cli.cluster import register

    gdir, _ = photo_gallery
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(app, ["cluster", "--gallery", str(gdir), "--out", str(tmp_path / "albums")])
    assert res.exit_code == 0, res.output
    assert "clusters" in res.output and "cam1, cam2" in res.output
    clusters = json.loads((tmp_path / "albums" / "clusters.json").read_text())["clusters"]
    with Gallery.open(gdir, read_only=True) as g:
        recs = {r.id: r for r in g.records()}

    def her(frame: int) -> int:
        at = [r for r in recs.values() if r.timestamp == T0 + frame / 10]
        return min(at, key=lambda r: np.linalg.norm(_centre(r.box) - WOMAN[frame])).id

    album = next(c for c in clusters if her(140) in c["records"])
    assert {her(120), her(160)} & set(album["records"]), "her album has none of her cam2 photos"
    assert {recs[i].camera for i in album["records"]} == {"cam1", "cam2"}
    assert (tmp_path / "albums" / f"cluster_{album['id']:04d}.jpg").is_file()


def test_search_json_names_the_picture_of_every_photo_hit(photo_gallery, embedder) -> None:
    """`reidkit search --json` and `POST /search`: a photo folder's hit names its picture (file name in the
    folder, not a server path), not only the ledger number in `frame`; the JSON reads back the same."""
    import dataclasses

    from fastapi.testclient import TestClient

    from reidkit.search import api
    from reidkit.search.query.search import SearchResult
    from reidkit.service.app import create_app

    gdir, _ = photo_gallery
    with Gallery.open(gdir, read_only=True) as g:
        q = next(r for r in g.records() if r.camera == "cam1")
        query = Path(gdir) / q.crop
        model = api.LoadedModel(embedder, None)
        request = api.SearchRequest([str(query)], top=30, threshold=-1.0, adaptive=False, rerank=False, review=3)
        every = sorted((h["score"] for h in api.search(g, request, model).to_dict()["hits"]), reverse=True)
        request = dataclasses.replace(request, threshold=every[8])  # some matches, and near misses to review
        got = api.search(g, request, model).to_dict()
        expected = {r.id: g.photo_path(r.source_id, r.frame).name for r in g.records()}
    hits = [*got["hits"], *(a["best"] for a in got["appearances"] + got["near_misses"])]
    assert len(got["hits"]) > 3 and got["near_misses"]
    for h in hits:
        assert h["picture"] == expected[h["id"]] and (Path(h["source"]) / h["picture"]).is_file()
        assert not Path(h["picture"]).is_absolute()
    assert SearchResult.from_dict(got).to_dict() == got
    with TestClient(create_app(gdir, embedder=embedder)) as client:
        form = {"top": "30", "threshold": str(every[8]), "adaptive": "false", "rerank": "false", "review": "3"}
        r = client.post("/search", data=form, files=[("image", (query.name, query.read_bytes(), "image/jpeg"))])
    assert r.status_code == 200, r.text
    served = r.json()
    assert [h["picture"] for h in served["hits"]] == [expected[h["id"]] for h in served["hits"]]
    assert {h["id"]: h["picture"] for h in served["hits"]}.items() <= {h["id"]: h["picture"] for h in hits}.items()


# --- times to trust (issue 22) ----------------------------------------------------------------------------
def test_same_mtime_warning() -> None:
    from reidkit.search.ingest.photos import same_mtime_warning

    copied = [T0 + i * 0.3 for i in range(13)]  # a folder copied in four seconds
    warning = same_mtime_warning("cam1", copied)
    assert warning is not None and "13 pictures" in warning and "copied" in warning and "--time-pattern" in warning
    assert same_mtime_warning("cam1", [T0, T0 + 3600]) is None  # an hour apart: plausible capture times
    assert same_mtime_warning("cam1", [T0]) is None and same_mtime_warning("cam1", []) is None


def test_copied_folder_warns_and_a_video_without_start_time_is_named_an_offset(
    tmp_path: Path, photo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`reidkit ingest` of a folder whose pictures (no EXIF) were all copied at once warns that their times are
    the copy's; a video without --start-time is reported as video offsets, with --start-time suggested."""
    from rich.console import Console
    from typer.testing import CliRunner

    import reidkit.cli.common
    import reidkit.cli.ingest

    console = Console(width=400)
    monkeypatch.setattr(reidkit.cli.ingest, "console", console)
    monkeypatch.setattr(reidkit.cli.common, "console", console)
    copied = tmp_path / "copied"
    copied.mkdir()
    for p in sorted((photo_root / "cam2").glob("*.jpg"))[:3]:
        shutil.copy(p, copied / p.name)  # no EXIF; the copy's modification time
    spread = tmp_path / "spread"
    shutil.copytree(copied, spread)
    for i, p in enumerate(sorted(spread.iterdir())):
        os.utime(p, (T0 + 3600 * i, T0 + 3600 * i))  # an hour apart
    runner = CliRunner()
    g = str(tmp_path / "g")
    res = runner.invoke(_cli(), ["ingest", str(copied), str(spread), "-g", g, "--threads", "1", "--json",
                                 str(tmp_path / "r.json")])  # fmt: skip
    out = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert "warning: copied: the 3 pictures without EXIF times were all modified within" in out
    assert "warning: spread" not in out  # its times are an hour apart: no warning
    reports = {Path(r["uri"]).name: r for r in json.loads((tmp_path / "r.json").read_text())["reports"]}
    assert reports["copied"]["warnings"] and reports["spread"]["warnings"] == []
    video = runner.invoke(_cli(), ["ingest", str(VTEST), "-g", str(tmp_path / "v"), "--threads", "1",
                                   "--max-frames", "3", "--json", str(tmp_path / "v.json")])  # fmt: skip
    out = " ".join(video.output.split())
    assert video.exit_code == 0, video.output
    assert "video offset" in out and "vtest.avi: times are offsets into the video" in out and "--start-time" in out
    (report,) = json.loads((tmp_path / "v.json").read_text())["reports"]
    assert report["time_from"] == "video offset"
    dated = runner.invoke(_cli(), ["ingest", str(VTEST), "-g", str(tmp_path / "d"), "--threads", "1",
                                   "--max-frames", "3", "--start-time", "2026-11-24T08:00:00"])  # fmt: skip
    assert dated.exit_code == 0 and "offsets into the video" not in dated.output, dated.output
    assert "start + frame/fps" in dated.output


def test_gallery_overview_says_how_photos_were_timed(photo_gallery) -> None:
    """The page's gallery panel: each source's time basis in words, one span per clock, and a warning for a
    camera whose pictures all read one file-modification minute (cam2 here: its mtimes span 24 s)."""
    from reidkit.search import api

    gdir, _ = photo_gallery
    with api.open_gallery(gdir) as g:
        o = api.gallery_overview(g)
    assert {s["camera"]: s["times"] for s in o["sources"]} == {
        "cam1": "EXIF capture time",
        "cam2": "file modification time",
    }
    assert [c["clock"] for c in o["clocks"]] == ["date"] and {c["clock"] for c in o["cameras"]} == {"date"}
    assert len(o["warnings"]) == 1 and o["warnings"][0].startswith("cam2: ") and "copied" in o["warnings"][0]
