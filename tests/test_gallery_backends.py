"""One contract, every gallery backend: the folder gallery (SQLite + FAISS), Milvus Lite and a real Milvus
standalone server (issue 21).

Each test runs against ``faiss`` (a folder), ``milvus-lite`` (a Milvus Lite folder, in this process) and
``milvus`` (a gallery on the session's Milvus server, ``milvus_server`` in conftest.py: the ``milvus``
package's standalone server reachable on 127.0.0.1 only, see tests/milvus_local.py). Milvus backends
skip with the reason when pymilvus / the server is not there (under ``REIDKIT_REQUIRE_DATA=1`` they fail
where they are installable). Exactness: with the flat index both Milvus backends return the same top 100
(ids and order) as the FAISS backend on the same data, filtered or not.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from reidkit.search.storage import Gallery, GalleryError, Sighting, open_gallery
from reidkit.search.storage.base import GalleryBackend
from reidkit.search.storage.records import Photo

DIM = 32
BACKENDS = ["faiss", "milvus-lite", "milvus"]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int = DIM, seed: int = 0, n_clusters: int = 50, noise: float = 0.6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim))
    return unit(centres[rng.integers(0, n_clusters, n)] + noise * rng.standard_normal((n, dim)))


def sightings(n: int, start: int = 0, sources: int = 3) -> list[Sighting]:
    out = []
    for i in range(start, start + n):
        src = i % sources
        out.append(Sighting(f"video{src}.mp4", float(i), f"cam{src}", i, (1, 2, 30, 80), i // 7, None, 0.5))
    return out


def brute(g: np.ndarray, gids: np.ndarray, q: np.ndarray, k: int, keep: np.ndarray | None = None):
    s = q @ g.T
    if keep is not None:
        s[:, ~keep] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), gids[order]


def _unavailable(reason: str, installable: bool) -> None:
    if installable and os.environ.get("REIDKIT_REQUIRE_DATA") == "1":
        pytest.fail(f"REIDKIT_REQUIRE_DATA=1 but: {reason}", pytrace=False)
    pytest.skip(reason)


def _have_milvus_client() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("pymilvus", "milvus_lite"))


class Opener:
    """Opens fresh galleries of one backend for a test (and closes / drops them after it)."""

    def __init__(self, kind: str, tmp: Path, server: object | None) -> None:
        self.kind, self.tmp, self.server = kind, tmp, server
        self.opened: list[object] = []
        self.names: list[str] = []

    def uri(self, tag: str = "g") -> str:
        if self.kind == "faiss":
            return str(self.tmp / tag)
        if self.kind == "milvus-lite":
            return f"milvus-lite://{self.tmp / tag}.db?media={self.tmp / 'media'}"
        name = f"t_{uuid.uuid4().hex[:12]}_{tag}"
        self.names.append(name)
        return f"milvus://127.0.0.1:{self.server.port}/{name}?media={self.tmp / 'media'}"  # type: ignore[attr-defined]

    def open(self, uri: str, **kw: object) -> GalleryBackend:
        g = open_gallery(uri, **kw)
        self.opened.append(g)
        return g

    def new(self, tag: str = "g", **kw: object) -> GalleryBackend:
        kw.setdefault("dim", DIM)  # a Milvus gallery then makes its collections at once (each load takes ~2 s)
        return self.open(self.uri(tag), **kw)

    def crop_root(self, g: GalleryBackend) -> Path:
        return Path(g.root)

    def cleanup(self) -> None:
        for g in self.opened:
            g.close()
        if self.kind == "milvus" and self.names:
            from reidkit.search.storage.milvus import drop_gallery

            for name in self.names:
                drop_gallery(self.server.uri, name)  # type: ignore[attr-defined]


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    kind = request.param
    server = None
    if kind != "faiss" and not _have_milvus_client():
        _unavailable("pymilvus / milvus-lite not installed: pip install -e '.[cluster]'", installable=True)
    if kind == "milvus":
        server = request.getfixturevalue("milvus_server")
    opener = Opener(kind, tmp_path, server)
    try:
        yield opener
    finally:
        opener.cleanup()


# -- the contract ---------------------------------------------------------------------------------------
def test_add_search_get(backend):
    x = clustered(600)
    q = clustered(12, seed=1)
    g = backend.new(dim=DIM)
    assert isinstance(g, GalleryBackend) and g.dim == DIM and len(g) == 0
    ids = np.concatenate([g.add(x[i : i + 200], sightings(200, i)) for i in range(0, 600, 200)])
    assert len(g) == 600 and len(np.unique(ids)) == 600 and (np.diff(ids) > 0).all()
    assert (g.ids() == np.sort(ids)).all()
    hits = g.search(q, k=20)
    ref_s, ref_i = brute(x, ids, q, 20)
    for row, rs, ri in zip(hits, ref_s, ref_i, strict=True):
        assert [h.id for h in row] == ri.tolist()
        np.testing.assert_allclose([h.score for h in row], rs, atol=1e-5)
    h = hits[0][0]
    i = int(np.flatnonzero(ids == h.id)[0])
    assert (h.camera, h.box, h.quality, h.frame, h.track_id) == (f"cam{i % 3}", (1, 2, 30, 80), 0.5, i, i // 7)
    assert (h.source, h.timestamp, h.crop) == (f"video{i % 3}.mp4", float(i), None)
    np.testing.assert_allclose(g.features([h.id]), x[[i]], atol=1e-6)
    assert g.get([ids[5]])[0].timestamp == 5.0 and g.record(int(ids[5])).frame == 5
    assert g.record(10**12) is None
    assert g.cameras() == ["cam0", "cam1", "cam2"]
    with pytest.raises(KeyError, match="no such gallery ids"):
        g.get([10**12])
    with pytest.raises(KeyError, match="no such gallery ids"):
        g.features([10**12])
    assert [r.id for r in g.records("video1.mp4")] == ids[1::3].tolist()
    bare = g.add(x[:1], [Sighting("video0.mp4", 1.5)])  # no frame, box, track, crop or quality
    r = g.get(bare)[0]
    assert (r.frame, r.box, r.track_id, r.crop, r.quality, r.camera) == (None, None, None, None, None, "cam0")


def test_filters_camera_time_exclude(backend):
    x = clustered(900, seed=2)
    q = clustered(8, seed=3)
    g = backend.new()
    ids = g.add(x, sightings(900))
    cams = np.array([f"cam{i % 3}" for i in range(900)])
    ts = np.arange(900.0)
    cases = [
        ({"cameras": ["cam1", "cam2"]}, np.isin(cams, ["cam1", "cam2"])),
        ({"time_range": (100, 399.5)}, (ts >= 100) & (ts <= 399.5)),
        ({"time_range": (None, 50)}, ts <= 50),
        ({"exclude_source": "video0.mp4"}, cams != "cam0"),
        ({"cameras": "cam2", "time_range": (600, None), "exclude_source": ["video1.mp4"]},
         (cams == "cam2") & (ts >= 600)),
        ({"cameras": ["nowhere"]}, np.zeros(900, bool)),
        ({"cameras": []}, np.zeros(900, bool)),
    ]
    for kwargs, keep in cases:
        hits = g.search(q, k=10, **kwargs)
        _, ref = brute(x, ids, q, min(10, int(keep.sum())), keep)
        assert [[h.id for h in row] for row in hits] == ref.tolist(), kwargs
    odd = g.add(x[:3], [Sighting('cam "quoted" \\ back', 5.0, camera=c) for c in ('a"b', "c\\d", "e'f")])
    for cam, i in zip(('a"b', "c\\d", "e'f"), odd, strict=True):
        assert [h.id for h in g.search(x[:1], k=5, cameras=[cam])[0]] == [i]
    hit = g.search(x[:1], k=3, time_range=("1970-01-01T00:00:04Z", "1970-01-01T00:00:06"), exclude_source=ids[:0])
    assert {h.id for h in hit[0]} <= {int(ids[4]), int(ids[5]), int(ids[6]), *odd.tolist()}


def test_tracks_and_track_search(backend):
    x = clustered(40, seed=6)
    recs = [Sighting("v.mp4", float(i), camera="c", track_id=i % 4) for i in range(40)]
    g = backend.new()
    g.add(x[:20], recs[:20])
    g.search_tracks(x[:1], k=1)
    g.add(x[20:], recs[20:])
    tracks = {t.track_id: t for t in g.tracks("v.mp4")}
    assert sorted(tracks) == [0, 1, 2, 3] and g.max_track_id("v.mp4") == 3
    t1 = tracks[1]
    assert (t1.n_crops, t1.first_time, t1.last_time, t1.camera, t1.source) == (10, 1.0, 37.0, "c", "v.mp4")
    assert g.track(t1.id) == t1 and g.track(10**12) is None
    assert g.tracks_by_key([(t1.source_id, 1), (t1.source_id, 99)]) == {(t1.source_id, 1): t1}
    expect = unit(x[1::4].mean(0, keepdims=True))
    np.testing.assert_allclose(g.track_features([t1.id]), expect, atol=1e-5)
    hit = g.search_tracks(expect, k=4)[0][0]
    assert (hit.id, hit.track_id) == (t1.id, 1) and hit.score == pytest.approx(1.0, abs=1e-5)
    assert g.search_tracks(expect, k=4, time_range=(38, 39))[0][0].track_id in (2, 3)
    assert g.search_tracks(expect, k=4, cameras=["elsewhere"]) == [[]]
    assert g.search_tracks(expect, k=4, exclude_source="v.mp4") == [[]]
    assert [r.frame for r in g.records("v.mp4", track_id=1)] == [None] * 10
    assert [r.timestamp for r in g.records("v.mp4", track_id=1)] == [float(i) for i in range(1, 40, 4)]


def test_sources_register_replace_delete(backend):
    x = clustered(300, seed=4)
    g = backend.new()
    src = g.add_source("cam_a.mp4", "A", fps=25.0, fingerprint="f1")
    assert (src.status, src.progress, src.fps, src.camera) == ("pending", None, 25.0, "A")
    assert g.add_source("cam_a.mp4", "A", fingerprint="f1").id == src.id  # idempotent
    with pytest.raises(GalleryError, match="fingerprint"):
        g.add_source("cam_a.mp4", "A", fingerprint="f2")
    with pytest.raises(GalleryError, match="camera"):
        g.add_source("cam_a.mp4", "B", fingerprint="f1")
    assert g.register("cam_a.mp4", "A", 25.0, "f1")[1] == "resume"
    g.set_source_status("cam_a.mp4", "done", 12)
    s = g.source_status(src.id)
    assert (s.status, s.progress, s.uri) == ("done", 12.0, "cam_a.mp4")
    assert g.register("cam_a.mp4", "A", 25.0, "f1") == (s, "skip")
    with pytest.raises(GalleryError, match="changed"):
        g.register("cam_a.mp4", "A", 25.0, "f2")
    with pytest.raises(ValueError, match="status"):
        g.set_source_status("cam_a.mp4", "bogus")
    g.add_source("video1.mp4", "cam1")
    crop = g.save_crop(np.zeros((40, 20, 3), np.uint8), "video1.mp4", "a")
    assert (Path(g.root) / crop).is_file() and crop.startswith("crops/")
    ids = g.add(x, sightings(300))
    assert [s.uri for s in g.sources()] == ["cam_a.mp4", "video1.mp4", "video0.mp4", "video2.mp4"]
    assert g.remove_source("video1.mp4") == 100
    assert len(g) == 200 and g.source_status("video1.mp4") is None and not (Path(g.root) / crop).exists()
    gone = set(ids[1::3].tolist())
    for row in g.search(x, k=20):
        assert len(row) == 20 and not gone & {h.id for h in row}
    assert all(t.source != "video1.mp4" for t in g.tracks())
    assert all(t.source != "video1.mp4" for row in g.search_tracks(x[:3], k=50) for t in row)
    assert g.cameras() == ["cam0", "cam2"]
    with pytest.raises(KeyError):
        g.features([ids[1]])
    with pytest.raises(KeyError):
        g.remove_source("video1.mp4")
    old = g.source_status("video0.mp4")
    new, action = g.register("video0.mp4", "cam0", None, "fp0", replace=True)
    assert action == "replaced" and new.id != old.id and new.status == "pending"
    assert len(g) == 100 and g.records("video0.mp4") == []
    more = g.add(x[:5], sightings(5, sources=1))
    assert more.min() > ids.max()  # ids are never reused
    ov = g.overview(recent=3)
    assert ov.searchable == 105 and ov.sightings == 105 and [r.id for r in ov.recent] == more[::-1][:3].tolist()
    assert {c.camera: c.sightings for c in ov.cameras} == {"cam0": 5, "cam2": 100}
    video2_tracks = len({i // 7 for i in range(2, 300, 3)})
    assert {sc.source.uri: (sc.sightings, sc.tracks) for sc in ov.sources}["video2.mp4"] == (100, video2_tracks)
    assert ov.tracks == video2_tracks + 1


def test_progress_snapshots_photos_events(backend, tmp_path):
    x = clustered(10, seed=7)
    g = backend.new()
    src = g.add_source("folder", "P")
    photos = [Photo(src.id, f, f"img{f}.jpg", f"d{f}", 100 + f, 10**9 + f, 50.0 + f, "exif" if f < 3 else "mtime", 2)
              for f in range(1, 5)]  # fmt: skip
    recs = [Sighting("folder", 50.0 + i // 2 + 1, frame=i // 2 + 1, track_id=i // 2 + 1) for i in range(8)]
    g.add(x[:8], recs, progress=4.0, source=src.id, snapshot=b"state-at-4", photos=photos)
    s = g.source_status("folder")
    assert (s.status, s.progress) == ("ingesting", 4.0)
    assert g.snapshot("folder", 4.0) == b"state-at-4" and g.snapshot("folder", 3.0) is None
    big = os.urandom(150_000)
    g.add(x[:0], [], progress=5.0, source="folder", snapshot=big)
    assert g.snapshot("folder", 5.0) == big and g.snapshot("folder", 4.0) is None
    g.drop_snapshots("folder")
    assert g.snapshot("folder", 5.0) is None
    led = g.photo_ledger("folder")
    assert (led.digests, led.next_frame, led.next_track) == ({"d1", "d2", "d3", "d4"}, 5, 5)
    assert led.stats["img2.jpg"] == (102, 10**9 + 2)
    assert g.time_bases() == {src.id: "exif 2, mtime 2"}
    assert g.pictures([(src.id, 2), (src.id, 9)]) == {(src.id, 2): "img2.jpg"}
    assert g.photo_path("folder", 3) == Path("folder") / "img3.jpg" and g.photo_path("folder", 9) is None
    if hasattr(g, "log_event"):
        g.log_event("folder", "online", at=1.0)
        g.log_event("folder", "offline", "no frames for 3 s", at=2.0)
        assert [(e.event, e.detail) for e in g.events("folder")] == [("online", ""), ("offline", "no frames for 3 s")]


def test_width_and_model_mismatch_refused(backend):
    x = clustered(10)
    uri = backend.uri("m")
    g = backend.open(uri, dim=DIM, **({} if backend.kind == "faiss" else {"model": "osnet_x0_25"}))
    g.add(x, sightings(10))
    with pytest.raises(GalleryError, match=f"dim={DIM}"):
        g.add(np.ones((2, 16), np.float32), sightings(2))
    with pytest.raises(GalleryError, match=f"dim={DIM}"):
        g.search(np.ones(16, np.float32))
    with pytest.raises(GalleryError, match="unknown source"):
        g.add(x[:1], [Sighting("nowhere.mp4", 0.0)])
    with pytest.raises(GalleryError, match="ISO-8601"):
        g.add(x[:1], [Sighting("v", "yesterday", camera="c")])
    with pytest.raises(ValueError, match="NaN"):
        g.add(np.full((1, DIM), np.nan), sightings(1))
    g.close()
    with pytest.raises(GalleryError, match=f"holds dim={DIM} features; dim=64 was asked for"):
        backend.open(uri, dim=64)
    with pytest.raises(GalleryError, match="reindex"):
        backend.open(uri, index="hnsw")
    if backend.kind != "faiss":
        with pytest.raises(GalleryError, match=r"model 'osnet_x0_25'.*model 'resnet50'"):
            backend.open(uri, model="resnet50")
    ro = backend.open(uri, read_only=True)
    assert len(ro) == 10
    with pytest.raises(GalleryError, match="read-only"):
        ro.add(x[:1], sightings(1))
    ro.close()
    with pytest.raises(GalleryError, match="not a reidkit gallery"):
        backend.open(backend.uri("missing"), create=False)


def test_same_top100_as_the_faiss_backend(backend, tmp_path):
    if backend.kind == "faiss":
        pytest.skip("the reference itself")
    rng = np.random.default_rng(11)
    x = unit(rng.standard_normal((3000, 64)))
    q = unit(rng.standard_normal((16, 64)))
    recs = sightings(3000, sources=5)
    with Gallery.open(tmp_path / "ref") as ref:
        ref_ids = ref.add(x, recs)
        want = {key: ref.search(q, k=100, **kw) for key, kw in
                [("all", {}), ("cam", {"cameras": ["cam1", "cam3"], "time_range": (500, 2500)})]}  # fmt: skip
    g = backend.new("same", dim=64)
    ids = np.concatenate([g.add(x[i : i + 1000], recs[i : i + 1000]) for i in range(0, 3000, 1000)])
    to_ref = dict(zip(ids.tolist(), ref_ids.tolist(), strict=True))
    for key, kw in [("all", {}), ("cam", {"cameras": ["cam1", "cam3"], "time_range": (500, 2500)})]:
        got = g.search(q, k=100, **kw)
        for a, b in zip(got, want[key], strict=True):
            assert [to_ref[h.id] for h in a] == [h.id for h in b], key
            np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)


def test_implements_the_backend_interface(backend):
    g = backend.new()
    assert isinstance(g, GalleryBackend)
    missing = [n for n in dir(GalleryBackend) if not n.startswith("_") and not hasattr(g, n)]
    assert not missing, missing


# -- Milvus only ----------------------------------------------------------------------------------------
def test_an_unfinished_add_is_undone_on_resume(backend, monkeypatch):
    if backend.kind == "faiss":
        pytest.skip("the folder gallery commits an add in one SQLite transaction")
    x = clustered(60, seed=8)
    recs = [Sighting("v.mp4", float(i), frame=i, track_id=i % 3) for i in range(60)]
    uri = backend.uri("crash")
    g = backend.open(uri, dim=DIM)
    g.add_source("v.mp4", "c", fingerprint="f")
    g.add(x[:30], recs[:30], progress=29, source="v.mp4")
    before = g.search(x[:2], k=50)
    cls = type(g)

    def die(self, *a, **k):
        raise RuntimeError("killed between the sightings and their tracks")

    monkeypatch.setattr(cls, "_add_tracks", die)
    with pytest.raises(RuntimeError, match="killed"):
        g.add(x[30:], recs[30:], progress=59, source="v.mp4")
    monkeypatch.undo()
    g.close()
    g = backend.open(uri)
    src, action = g.register("v.mp4", "c", None, "f")
    assert (action, src.progress) == ("resume", 29.0) and g.repairs["rolled_back_rows"] == 30
    assert len(g) == 30 and [[h.id for h in r] for r in g.search(x[:2], k=50)] == [[h.id for h in r] for r in before]
    assert sum(t.n_crops for t in g.tracks()) == 30
    g.add(x[30:], recs[30:], progress=59, source="v.mp4")
    tracks = g.tracks("v.mp4")
    assert [t.n_crops for t in tracks] == [20, 20, 20]
    np.testing.assert_allclose(g.track_features([tracks[0].id]), unit(x[0::3].sum(0, keepdims=True)), atol=1e-5)


def test_open_gallery_uris(tmp_path, monkeypatch):
    with open_gallery(tmp_path / "folder") as g:
        assert isinstance(g, Gallery)
    with pytest.raises(GalleryError, match="not of the folder gallery"):
        open_gallery(tmp_path / "folder", media="/x")
    bad_uris = [("milvus://host", "milvus://HOST:PORT/NAME"), ("milvus://h:1/a/b", "milvus://HOST:PORT/NAME"),
                ("milvus://h:1/g?colour=red", "unknown gallery URI option"),
                ("milvus://h:1/bad-name", "letters, digits"), ("milvus-lite:///x/notdb", "ending .db")]
    for bad, msg in bad_uris:
        with pytest.raises(GalleryError, match=msg):
            open_gallery(bad)
    (tmp_path / "file.db").write_text("")
    with pytest.raises(GalleryError, match="is a file"):
        open_gallery(tmp_path / "file.db")
    with pytest.raises(GalleryError, match="no such Milvus Lite folder"):
        open_gallery(tmp_path / "none.db", create=False)
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # as without the cluster extra
    with pytest.raises(GalleryError, match=r"reidkit\[cluster\]"):
        open_gallery(tmp_path / "lite.db")
    with open_gallery(tmp_path / "folder2") as g:
        assert isinstance(g, Gallery)


def test_milvus_lite_is_one_process_per_folder(tmp_path):
    if not _have_milvus_client():
        _unavailable("pymilvus / milvus-lite not installed: pip install -e '.[cluster]'", installable=True)
    path = tmp_path / "one.db"
    code = (
        "import sys\nfrom reidkit.search.storage import open_gallery, GalleryError\n"
        "try:\n    open_gallery(sys.argv[1])\nexcept GalleryError as e:\n    print('REFUSED', e)\n"
    )
    with open_gallery(path) as g:
        g.add(clustered(3), sightings(3))
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
        assert "REFUSED" in out.stdout and "one process per folder" in out.stdout, out.stdout + out.stderr[-2000:]
    with open_gallery(path) as g:  # closed: free again
        assert len(g) == 3


WRITER = """
import sys
import numpy as np
from reidkit.search.storage import Sighting, open_gallery
uri, me = sys.argv[1], int(sys.argv[2])
x = np.random.default_rng(me).standard_normal((200, 32)).astype(np.float32)
with open_gallery(uri) as g:
    ids = [g.add(x[i : i + 50], [Sighting(f"w{me}.mp4", float(i + j), camera=f"cam{me}", track_id=j % 5)
                                 for j in range(50)], progress=i + 49, source=None) for i in range(0, 200, 50)]
    g.set_source_status(f"w{me}.mp4", "done")
print(" ".join(str(int(i)) for i in np.concatenate(ids)))
"""


def test_two_writers_at_once_share_one_server_gallery(backend):
    if backend.kind != "milvus":
        pytest.skip("a folder and a Milvus Lite folder have one writer")
    uri = backend.uri("shared")
    g = backend.open(uri, dim=DIM)  # made first, as the first ingest would
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, uri, str(me)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for me in (1, 2)]  # fmt: skip
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    ids = [set(map(int, out.split())) for out, _ in outs]
    assert len(ids[0]) == len(ids[1]) == 200 and not ids[0] & ids[1]
    assert len(g) == 400 and set(g.ids().tolist()) == ids[0] | ids[1]
    assert {s.uri: s.status for s in g.sources()} == {"w1.mp4": "done", "w2.mp4": "done"}
    assert {t.source: t.n_crops for t in g.tracks()} == {"w1.mp4": 40, "w2.mp4": 40}
    x1 = unit(np.random.default_rng(1).standard_normal((200, 32)))
    hit = g.search(x1[7], k=1, exclude_source="w2.mp4")[0][0]
    assert (hit.source, hit.timestamp, hit.score) == ("w1.mp4", 7.0, pytest.approx(1.0, abs=1e-5))
