"""The searchable gallery: exact/approximate search, filters, removal, persistence, crash recovery."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import faiss
import numpy as np
import pytest

from reidkit.search.storage import Gallery, GalleryError, IndexConfig, Sighting
from reidkit.search.storage import gallery as gallery_mod

DIM = 32


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(old)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, seed: int = 0, n_clusters: int = 50, noise: float = 0.6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim))
    return unit(centres[rng.integers(0, n_clusters, n)] + noise * rng.standard_normal((n, dim)))


def sightings(n: int, start: int = 0, sources: int = 3) -> list[Sighting]:
    return [
        Sighting(
            source=f"video{(start + i) % sources}.mp4",
            camera=f"cam{(start + i) % sources}",
            timestamp=float(start + i),
            frame=start + i,
            box=(1, 2, 30, 80),
            track_id=(start + i) // 7,
            quality=0.5,
        )
        for i in range(n)
    ]


def brute(g: np.ndarray, gids: np.ndarray, q: np.ndarray, k: int, keep: np.ndarray | None = None):
    s = q @ g.T
    if keep is not None:
        s[:, ~keep] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), gids[order]


def test_add_search_exact_matches_brute_force(tmp_path):
    x = clustered(600, DIM)
    q = clustered(12, DIM, seed=1)
    with Gallery.open(tmp_path / "g", dim=DIM) as g:
        ids = np.concatenate([g.add(x[i : i + 200], sightings(200, i)) for i in range(0, 600, 200)])
        assert len(g) == 600 and len(np.unique(ids)) == 600 and (np.diff(ids) > 0).all()
        hits = g.search(q, k=20)
        ref_s, ref_i = brute(x, ids, q, 20)
        for row, rs, ri in zip(hits, ref_s, ref_i, strict=True):
            assert [h.id for h in row] == ri.tolist()
            np.testing.assert_allclose([h.score for h in row], rs, atol=1e-5)
        h = hits[0][0]
        assert (h.camera, h.box, h.quality) == (f"cam{h.frame % 3}", (1, 2, 30, 80), 0.5)
        np.testing.assert_allclose(g.features([h.id]), x[[h.id - ids[0]]], atol=1e-6)
        assert g.get([ids[5]])[0].timestamp == 5.0
        assert g.cameras() == ["cam0", "cam1", "cam2"]
        with pytest.raises(KeyError, match="no such gallery ids"):
            g.get([10**9])


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
@pytest.mark.parametrize("exact_subset", [None, 0])
def test_filters_camera_time_exclude(tmp_path, monkeypatch, kind, exact_subset):
    if exact_subset is not None:  # force the FAISS selector path instead of the exact-subset shortcut
        monkeypatch.setattr(gallery_mod, "EXACT_SUBSET", exact_subset)
    x = clustered(900, DIM, seed=2)
    q = clustered(8, DIM, seed=3)
    cfg = IndexConfig(kind=kind, nlist=8, train_size=320, nprobe=6, ef_search=64)
    with Gallery.open(tmp_path / "g", index=cfg) as g:
        ids = g.add(x, sightings(900))
        assert g.index_structure == kind
        cams = np.array([f"cam{i % 3}" for i in range(900)])
        ts = np.arange(900.0)
        cases = [
            ({"cameras": ["cam1", "cam2"]}, np.isin(cams, ["cam1", "cam2"])),
            ({"time_range": (100, 399.5)}, (ts >= 100) & (ts <= 399.5)),
            ({"time_range": (None, 50)}, ts <= 50),
            ({"exclude_source": "video0.mp4"}, cams != "cam0"),
            (
                {"cameras": "cam2", "time_range": (600, None), "exclude_source": ["video1.mp4"]},
                (cams == "cam2") & (ts >= 600),
            ),
            ({"cameras": ["nowhere"]}, np.zeros(900, bool)),
        ]
        for kwargs, keep in cases:
            hits = g.search(q, k=10, **kwargs)
            _, ref = brute(x, ids, q, min(10, int(keep.sum())), keep)
            got = [[h.id for h in row] for row in hits]
            assert all(keep[i - ids[0]] for row in got for i in row), kwargs
            if kind == "flat" or exact_subset is None:  # exact
                assert got == ref.tolist(), kwargs
            else:  # approximate: FAISS with an id selector
                overlap = [len(set(a) & set(b)) for a, b in zip(got, ref.tolist(), strict=True)]
                assert sum(overlap) >= 0.9 * ref.size, kwargs


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_remove_source(tmp_path, kind):
    x = clustered(300, DIM, seed=4)
    root = tmp_path / "g"
    with Gallery.open(root, index=kind) as g:
        g.add_source("video1.mp4", "cam1", fps=25.0)
        crop = g.save_crop(np.zeros((40, 20, 3), np.uint8), "video1.mp4", "a")
        ids = g.add(x, sightings(300))
        assert (root / crop).is_file()
        assert g.remove_source("video1.mp4") == 100
        assert len(g) == 200 and g.source_status("video1.mp4") is None
        assert not (root / "crops" / "1").exists() and not (root / crop).exists()
        gone = set(ids[1::3].tolist())
        for row in g.search(x, k=20):
            assert len(row) == 20 and not gone & {h.id for h in row}
        assert all(t.source != "video1.mp4" for t in g.tracks())
        assert all(t.source != "video1.mp4" for row in g.search_tracks(x[:3], k=50) for t in row)
        with pytest.raises(KeyError):
            g.features([ids[1]])
        with pytest.raises(KeyError):
            g.remove_source("video1.mp4")
    with Gallery.open(root) as g:
        assert len(g) == 200
        assert g._index.ntotal - len(g) in ((0,) if kind == "flat" else (0, 100))
        assert not {h.id for row in g.search(x, k=20) for h in row} & gone


def test_persistence_and_sources(tmp_path):
    x = clustered(200, DIM, seed=5)
    root = tmp_path / "g"
    with Gallery.open(root, index="hnsw") as g:
        src = g.add_source("cam_a.mp4", "A", fps=25.0, fingerprint="f1")
        assert (src.status, src.progress) == ("pending", None)
        assert g.add_source("cam_a.mp4", "A", fingerprint="f1").id == src.id  # idempotent
        ids = g.add(
            x[:100],
            [Sighting("cam_a.mp4", f"2024-05-01T10:{i // 60:02d}:{i % 60:02d}Z", frame=i) for i in range(100)],
            progress=99,
        )
        g.set_source_status("cam_a.mp4", "done")
        before = g.search(x[:5], k=10)
    assert (root / "index.faiss").is_file()
    with Gallery.open(root) as g:
        assert len(g) == 100 and g.index_structure == "hnsw" and g.repairs == {}
        assert [[h.id for h in r] for r in g.search(x[:5], k=10)] == [[h.id for h in r] for r in before]
        s = g.source_status("cam_a.mp4")
        assert (s.status, s.progress, s.fps, s.camera) == ("done", 99.0, 25.0, "A")
        assert g.get([ids[0]])[0].timestamp == 1714557600.0  # ISO converted to Unix seconds
        hits = g.search(x[:1], k=5, time_range=("2024-05-01T09:00:00", "2024-05-01T10:00:00+00:00"))
        assert [h.id for h in hits[0]] == [ids[0]]
        with pytest.raises(GalleryError, match="fingerprint"):
            g.add_source("cam_a.mp4", "A", fingerprint="f2")
        new = g.add_source("cam_a.mp4", "A", fingerprint="f2", replace_changed=True)
        assert new.id != s.id and len(g) == 0
        more = g.add(x[100:], sightings(100))
        assert more.min() > ids.max()  # ids are never reused
    with Gallery.open(root, read_only=True) as g:
        assert len(g) == 100 and g.search(x[150:151], k=1)[0][0].id == more[50]
        with pytest.raises(GalleryError, match="read-only"):
            g.add(x[:1], sightings(1))


def test_tracks(tmp_path):
    x = clustered(40, DIM, seed=6)
    recs = [Sighting("v.mp4", float(i), camera="c", track_id=i % 4) for i in range(40)]
    with Gallery.open(tmp_path / "g") as g:
        g.add(x[:20], recs[:20])
        g.search_tracks(x[:1], k=1)  # builds the in-memory track cache, then updated incrementally
        g.add(x[20:], recs[20:])
        tracks = {t.track_id: t for t in g.tracks("v.mp4")}
        assert sorted(tracks) == [0, 1, 2, 3]
        t1 = tracks[1]
        assert (t1.n_crops, t1.first_time, t1.last_time, t1.camera) == (10, 1.0, 37.0, "c")
        expect = unit(x[1::4].mean(0, keepdims=True))
        np.testing.assert_allclose(g.track_features([t1.id]), expect, atol=1e-5)
        hit = g.search_tracks(expect, k=4)[0][0]
        assert (hit.id, hit.track_id) == (t1.id, 1) and hit.score == pytest.approx(1.0, abs=1e-5)
        assert g.search_tracks(expect, k=4, time_range=(38, 39))[0][0].track_id in (2, 3)
        assert [r.id for r in g.records("v.mp4", track_id=1)] == list(range(2, 41, 4))


def test_hnsw_recall_at_10(tmp_path):
    data = clustered(5100, 64, seed=7, n_clusters=100, noise=0.8)
    x, q = data[:5000], data[5000:]  # queries: unseen members of the same clusters
    cfg = IndexConfig(kind="hnsw", hnsw_m=32, ef_construction=80)  # default ef_search
    with Gallery.open(tmp_path / "g", index=cfg, autosave=None) as g:
        ids = g.add(x, [Sighting("v", float(i), camera="c") for i in range(5000)])
        got = [[h.id for h in r] for r in g.search(q, k=10)]
    _, ref = brute(x, ids, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, ref.tolist(), strict=True)])
    assert recall >= 0.95, recall


def test_ivf_trains_once_big_enough(tmp_path):
    x = clustered(500, DIM, seed=9)
    cfg = IndexConfig(kind="ivf", nlist=8, nprobe=8, train_size=320)
    with Gallery.open(tmp_path / "g", index=cfg) as g:
        g.add(x[:200], sightings(200))
        assert g.index_structure == "flat"  # not enough vectors to train yet
        ids = np.concatenate([np.arange(1, 201), g.add(x[200:], sightings(300, 200))])
        assert g.index_structure == "ivf"
        _, ref = brute(x, ids, x[:5], 5)
        assert [[h.id for h in r] for r in g.search(x[:5], k=5)] == ref.tolist()  # nprobe = nlist: exact
    with Gallery.open(tmp_path / "g") as g:
        assert g.index_structure == "ivf" and len(g) == 500


@pytest.mark.parametrize("codec", ["sq8", "sq4"])
def test_ivf_with_compressed_lists(tmp_path, codec):
    """IVF-SQ (the 10-million-sighting index): trains, finds the exact neighbours at full nprobe within the
    codec's rounding, persists its codec, filters, removes, and refuses a different structure on opening."""
    x = clustered(600, DIM, seed=13)
    with Gallery.open(tmp_path / "g", index=f"ivf-{codec}") as g:  # the kind string names both
        assert g.config.kind == "ivf" and g.config.codec == codec
    cfg = IndexConfig(kind="ivf", codec=codec, nlist=8, nprobe=8, train_size=320)
    with Gallery.open(tmp_path / "h", index=cfg) as g:
        ids = g.add(x, sightings(600))
        assert g.index_structure == "ivf"
        assert isinstance(g._index.index, faiss.IndexIVFScalarQuantizer)
        _, ref = brute(x, ids, x[:20], 10)
        got = [[h.id for h in r] for r in g.search(x[:20], k=10)]
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, ref.tolist(), strict=True)])
        assert recall >= (0.97 if codec == "sq8" else 0.85), recall
        assert all(h.id == ids[i] for i, h in enumerate(r[0] for r in g.search(x[:20], k=1)))  # itself first
        kept = [h.id for h in g.search(x[:1], k=50, cameras="cam1")[0]]
        assert kept and all(g.record(i).camera == "cam1" for i in kept)
        g.remove_source("video0.mp4")
        assert len(g) < 600
    with Gallery.open(tmp_path / "h") as g:  # the codec is kept with the gallery
        assert g.index_structure == "ivf" and g.config.codec == codec
    with pytest.raises(GalleryError, match="reindex"):
        Gallery.open(tmp_path / "h", index="ivf")  # plain IVF asked of an IVF-SQ gallery
    with pytest.raises(ValueError, match="needs kind 'ivf'"):
        IndexConfig(kind="hnsw", codec="sq8")


def test_reindex_and_search_params(tmp_path):
    x = clustered(400, DIM, seed=11)
    root = tmp_path / "g"
    with Gallery.open(root) as g:
        ids = g.add(x, sightings(400))
        exact = [[h.id for h in r] for r in g.search(x[:5], k=10)]
        g.reindex("hnsw", hnsw_m=16)
        assert g.index_structure == "hnsw" and g.config.hnsw_m == 16
        assert [[h.id for h in r] for r in g.search(x[:5], k=10)] == exact
        with Gallery.open(root, read_only=True) as reader:  # a reader beside the writer
            assert len(reader) == 400 and reader.search(x[:1], k=1)[0][0].id == ids[0]
    with Gallery.open(root, index="hnsw", ef_search=300) as g:
        assert (g.index_structure, g.config.ef_search, g.config.hnsw_m) == ("hnsw", 300, 16)
        g.set_search_params(ef_search=20)
        assert g.config.ef_search == 20 and len(g.search(x[:1], k=50)[0]) == 50


def assert_consistent(g: Gallery) -> None:
    """Index and database agree: no duplicates, every row's vector present and searchable."""
    db_ids = np.array([r[0] for r in g.db.execute("SELECT id FROM detections ORDER BY id")], np.int64)
    idx_ids = g._index.ids()
    assert len(db_ids) == len(g)
    assert len(np.unique(idx_ids)) == len(idx_ids), "duplicate vectors"
    assert g.db.execute("SELECT COUNT(*) FROM features").fetchone()[0] == len(db_ids)
    if g.index_structure == "flat":
        assert g._index.ntotal == len(g)
        assert np.array_equal(np.sort(idx_ids), db_ids)
    else:
        assert np.isin(db_ids, idx_ids).all()
    if len(db_ids):
        hits = g.search(g.features(db_ids), k=3)
        found = np.mean([i in {h.id for h in row} for i, row in zip(db_ids, hits, strict=True)])
        assert found >= (1.0 if g.index_structure == "flat" else 0.99)


WRITER = """
import sys, numpy as np, faiss
faiss.omp_set_num_threads(1)
from reidkit.search.storage import Gallery, Sighting
root, kind = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
with Gallery.open(root, index=kind, autosave=None) as g:
    for b in range(10_000):
        x = rng.standard_normal((100, 32)).astype(np.float32)
        g.add(x, [Sighting(f"s{b}", float(i), camera=f"c{b % 3}", track_id=i % 5) for i in range(100)], progress=b)
        if b % 3 == 2:
            g.save()
        if b % 4 == 3:
            g.remove_source(f"s{b - 2}")
        print("batch", b, flush=True)
"""


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_kill9_while_adding_then_reopen_consistent(tmp_path, kind):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    root = tmp_path / "g"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(root), kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        seen = -1
        while seen < 7 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"writer died: {proc.stderr.read()}")
            seen = int(line.split()[1])
        time.sleep(0.01 * (seen % 5))  # land somewhere inside a later batch
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    with Gallery.open(root) as g:
        assert len(g) > 0
        assert_consistent(g)
        n, top = len(g), g._index.ids().max()
        assert sum(s.status == "ingesting" for s in g.sources()) == len(g.sources())
        ids = g.add(np.random.default_rng(1).standard_normal((50, 32)), sightings(50))
        assert len(g) == n + 50 and ids.min() > top
        assert_consistent(g)
    with Gallery.open(root) as g:
        assert len(g) == n + 50 and g.repairs == {}
        assert_consistent(g)


CRASH_IN_SAVE = """
import os, signal, sys, numpy as np
from reidkit.search.storage import Gallery, Sighting
from reidkit.search.storage import index as index_mod
root = sys.argv[1]
with Gallery.open(root, autosave=None) as g:
    g.add(np.eye(32, dtype=np.float32)[:10], [Sighting("a", float(i), camera="c") for i in range(10)])
    g.save()
    g.add(np.eye(32, dtype=np.float32)[10:20], [Sighting("a", float(i), camera="c") for i in range(10)])
    g.remove_source("a")
    g.add(np.eye(32, dtype=np.float32)[20:], [Sighting("b", float(i), camera="c") for i in range(12)])

    def dying_write(self, path):  # die half-way through writing the temp file
        tmp = os.path.join(os.path.dirname(path), ".index.faiss.crash.faiss")
        with open(tmp, "wb") as fh:
            fh.write(b"IxM2 partial")
        os.kill(os.getpid(), signal.SIGKILL)

    index_mod.VectorIndex.write = dying_write
    g.save()
"""


def test_kill9_during_index_save_keeps_last_snapshot(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(CRASH_IN_SAVE)
    root = tmp_path / "g"
    proc = subprocess.run([sys.executable, str(script), str(root)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (root / ".index.faiss.crash.faiss").exists()
    with Gallery.open(root) as g:
        # snapshot held source a's first 10 (now removed); the db holds only b's 12 rows
        assert g.repairs == {"stale_vectors": 10, "readded_vectors": 12, "temp_files": 1}
        assert len(g) == 12 and not (root / ".index.faiss.crash.faiss").exists()
        assert_consistent(g)
        assert [r[0].camera for r in g.search(np.eye(32, dtype=np.float32)[20:], k=1)] == ["c"] * 12


def test_stale_and_corrupt_snapshots_are_repaired(tmp_path):
    x = clustered(120, DIM, seed=10)
    root = tmp_path / "g"
    with Gallery.open(root) as g:
        g.add(x, sightings(120))
    old = (root / "index.faiss").read_bytes()
    with Gallery.open(root) as g:
        g.remove_source("video2.mp4")
    (root / "index.faiss").write_bytes(old)  # as if the process died before saving after the removal
    with Gallery.open(root) as g:
        assert g.repairs == {"stale_vectors": 40} and len(g) == 80
        assert_consistent(g)
    (root / "index.faiss").write_bytes(b"garbage")
    with Gallery.open(root) as g:
        assert g.repairs["index_unreadable"] == 1 and g.repairs["readded_vectors"] == 80
        assert_consistent(g)
    (root / "index.faiss").unlink()
    with Gallery.open(root) as g:
        assert g.repairs == {"readded_vectors": 80}
        assert_consistent(g)


def test_save_crop(tmp_path):
    frame = np.zeros((100, 60, 3), np.uint8)
    frame[10:50, 5:25] = (255, 0, 0)  # blue in BGR
    with Gallery.open(tmp_path / "g") as g:
        g.add_source("v.mp4", "c")
        rel = g.save_crop(frame, "v.mp4", "f1_p0", box=(5, 10, 25, 50))
        assert rel == "crops/1/f1_p0.jpg"
        img = cv2.imread(str(tmp_path / "g" / rel))
        assert img.shape == (40, 20, 3) and img[20, 10, 0] > 200 and img[20, 10, 2] < 50
        rel2 = g.save_crop(frame[10:50, 5:25, ::-1], "v.mp4", bgr=False)  # RGB input, random name
        assert cv2.imread(str(tmp_path / "g" / rel2))[20, 10, 0] > 200
        with pytest.raises(ValueError, match="plain relative"):
            g.save_crop(frame, "v.mp4", "../escape")
        with pytest.raises(KeyError, match="add_source"):
            g.save_crop(frame, "unknown.mp4")


def test_clear_errors(tmp_path):
    x = clustered(10, DIM)
    root = tmp_path / "g"
    # width, unknown source, bad time and NaN errors: every backend, tests/test_gallery_backends.py
    with Gallery.open(root, dim=DIM) as g:
        with pytest.raises(GalleryError, match="already open for writing"):
            Gallery.open(root)
        g.add(x, sightings(10))
    with pytest.raises(GalleryError, match=f"dim={DIM}"):
        Gallery.open(root, dim=64)
    with pytest.raises(GalleryError, match="reindex"):
        Gallery.open(root, index="hnsw")
    other = tmp_path / "videos"
    other.mkdir()
    (other / "a.mp4").write_bytes(b"")
    with pytest.raises(GalleryError, match="not a reidkit gallery"):
        Gallery.open(other)
    with pytest.raises(GalleryError, match="not a reidkit gallery"):
        Gallery.open(tmp_path / "missing", create=False)
    sqlite3.connect(other / "gallery.db").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(GalleryError, match="not a reidkit gallery database"):
        Gallery.open(other)
    with pytest.raises(ValueError, match="unknown index kind"):
        Gallery.open(tmp_path / "new", index="annoy")
    assert not Path(tmp_path / "new" / "gallery.db").exists()


def test_the_embedded_gallery_implements_the_backend_interface(tmp_path: Path) -> None:
    from reidkit.search.storage.base import GalleryBackend

    with Gallery.open(tmp_path / "g") as g:
        assert isinstance(g, GalleryBackend)
        missing = [n for n in dir(GalleryBackend) if not n.startswith("_") and not hasattr(g, n)]
    assert not missing, missing
