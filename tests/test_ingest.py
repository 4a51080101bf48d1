"""Ingest pipeline: source -> detect -> track -> crops -> embed -> gallery; skip, resume after a kill, images mode."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from reidkit.search.ingest.detect import Detection
from reidkit.search.ingest.person_crops import folder_items, ingest_reid_split
from reidkit.search.ingest.pipeline import ingest
from reidkit.search.storage import Gallery, GalleryError

VTEST = Path(os.environ.get("REIDKIT_VTEST", "/usr/share/doc/opencv-doc/examples/data/vtest.avi"))
W, H, FPS = 320, 240, 10.0
# synthetic "persons": (colour BGR, x at frame 0, x speed px/frame, y, width, height, first frame, last frame)
TWO = [((0, 0, 220), 20, 5, 30, 30, 80, 0, 10**6), ((220, 60, 0), 270, -4, 140, 34, 90, 0, 10**6)]
THREE = [
    ((0, 0, 220), 10, 4, 20, 30, 80, 0, 22),
    ((220, 60, 0), 280, -3, 130, 34, 90, 8, 52),
    ((0, 200, 0), 20, 3, 75, 28, 70, 30, 59),
]
TRACKER = {"max_lost": 5}


@pytest.fixture(autouse=True, scope="module")
def _few_threads():
    """Keep OpenCV and torch on one thread: the tests share the machine with other work."""
    import torch

    before = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    yield
    cv2.setNumThreads(before[0])
    torch.set_num_threads(before[1])


def draw_frame(i: int, persons: list) -> np.ndarray:
    img = np.full((H, W, 3), 128, np.uint8)
    img[::8] = 110
    for colour, x0, v, y, w, h, first, last in persons:
        if first <= i <= last:
            x = int(x0 + v * (i - first))
            img[y : y + h, x : x + w] = colour
            img[y : y + h : 6, x : x + w] = 255
    return img


def write_clip(path: Path, n: int, persons: list) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert vw.isOpened()
    for i in range(n):
        vw.write(draw_frame(i, persons))
    vw.release()
    return path


class ColourDetector:
    """Finds the saturated rectangles of the synthetic clips (one per dominant channel)."""

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        dets = []
        for ch in range(3):
            mask = ((frame_bgr[:, :, ch] > 150) & (frame_bgr.min(axis=2) < 100)).astype(np.uint8)
            x, y, w, h = cv2.boundingRect(mask)
            if w * h >= 200:
                dets.append(Detection((float(x), float(y), float(x + w), float(y + h)), 0.9))
        return dets


class FakeEmbedder:
    """Cheap deterministic 8-d features (colour statistics and size) instead of a network."""

    def embed(self, images, bgr: bool = False) -> np.ndarray:
        out = []
        for im in images:
            a = np.asarray(im if isinstance(im, np.ndarray) else cv2.imread(str(im)), np.float32).reshape(-1, 3)
            out.append(np.r_[a.mean(0), a.std(0), len(a) / 1000.0, 1.0])
        return np.asarray(out, np.float32)


def sightings(g: Gallery) -> list[tuple[int, int, tuple]]:
    return sorted((r.track_id, r.frame, r.box) for r in g.records())


# --- tracking mode -----------------------------------------------------------------------------------


def test_ingest_synthetic_clip_then_skip_and_replace(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "door.avi", 30, TWO)
    with Gallery.open(tmp_path / "g") as g:
        rep = ingest(g, clip, FakeEmbedder(), detector=ColourDetector(), start_time=100.0)
        assert rep.status == "done" and rep.frames == 30 and rep.detections == 60 and rep.tracks == 2
        assert rep.crops == len(g) and 2 <= rep.crops <= 8 and rep.fps > 0
        tracks = g.tracks()
        assert len(tracks) == 2 and {t.camera for t in tracks} == {"door"}
        for r in g.records():
            assert r.camera == "door" and r.timestamp == pytest.approx(100.0 + r.frame / FPS)
            assert (g.root / r.crop).is_file() and r.quality is not None and r.box is not None
            crop = cv2.imread(str(g.root / r.crop))
            assert crop.shape[0] == r.box[3] - r.box[1] and crop.shape[1] == r.box[2] - r.box[0]
        per_track = Counter(r.track_id for r in g.records())
        assert all(1 <= n <= 4 for n in per_track.values())
        src = g.sources()[0]
        assert src.status == "done" and src.progress == 29 and src.fps == pytest.approx(FPS)
        before = sightings(g)

        again = ingest(g, clip, FakeEmbedder(), detector=ColourDetector())
        assert again.status == "skipped" and again.frames == 0 and sightings(g) == before

        redo = ingest(g, clip, FakeEmbedder(), detector=ColourDetector(), replace=True)
        assert redo.replaced and redo.status == "done" and len(g.sources()) == 1
        assert sightings(g) == before and len(g.tracks()) == 2

        write_clip(clip, 31, TWO)  # the content changes
        with pytest.raises(GalleryError, match="changed"):
            ingest(g, clip, FakeEmbedder(), detector=ColourDetector())


def test_max_frames_then_continue(tmp_path: Path) -> None:
    """A run cut by max_frames continues where it stopped; no (track, frame) is stored twice."""
    clip = write_clip(tmp_path / "hall.avi", 40, THREE)
    with Gallery.open(tmp_path / "g") as g:
        kw = {"detector": ColourDetector(), "tracker_opts": TRACKER, "stride": 2}
        first = ingest(g, clip, FakeEmbedder(), max_frames=8, **kw)
        assert first.status == "partial" and first.frames == 8 and g.sources()[0].progress == 14
        rest = ingest(g, clip, FakeEmbedder(), **kw)
        assert rest.resumed_from == 14 and rest.status == "done" and rest.frames == 12
        rows = sightings(g)
        assert len({(t, f) for t, f, _ in rows}) == len(rows) and all(f % 2 == 0 for _, f, _ in rows)
        assert ingest(g, clip, FakeEmbedder(), **kw).status == "skipped"


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_ingest import TRACKER, ColourDetector, FakeEmbedder
from reidkit.search.storage import Gallery
from reidkit.search.ingest.pipeline import ingest

class KillingDetector(ColourDetector):
    calls = 0
    def detect(self, frame):
        if self.calls == int(os.environ["REIDKIT_TEST_KILL_AFTER_FRAMES"]):
            os.kill(os.getpid(), signal.SIGKILL)
        self.calls += 1
        return super().detect(frame)

g = Gallery.open(sys.argv[2])
ingest(g, sys.argv[1], FakeEmbedder(), detector=KillingDetector(), tracker_opts=TRACKER, commit_interval=0)
"""


def test_killed_ingest_resumes_without_duplicates(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "lobby.avi", 60, THREE)
    kw = {"detector": ColourDetector(), "tracker_opts": TRACKER}
    with Gallery.open(tmp_path / "whole") as g:
        whole = ingest(g, clip, FakeEmbedder(), **kw)
        expected, expected_tracks = sightings(g), len(g.tracks())
    assert whole.tracks == expected_tracks == 3

    script = tmp_path / "killed.py"
    script.write_text(KILL_SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "REIDKIT_TEST_KILL_AFTER_FRAMES": "40"}
    proc = subprocess.run(
        [sys.executable, str(script), str(clip), str(tmp_path / "killed")], env=env, capture_output=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]

    with Gallery.open(tmp_path / "killed") as g:
        src = g.sources()[0]
        assert src.status == "ingesting" and src.progress == 39
        assert 0 < len(g) < len(expected)  # the track that ended before frame 40 is in, the open ones are not
        resumed = ingest(g, clip, FakeEmbedder(), commit_interval=0, **kw)
        assert resumed.resumed_from == 39 and resumed.frames == 20 and resumed.status == "done"
        got = sightings(g)
        assert len({(t, f) for t, f, _ in got}) == len(got)  # no duplicate (track, frame)
        assert got == expected and len(g.tracks()) == expected_tracks  # same result as the uninterrupted run
        assert g.db.execute("SELECT COUNT(*) FROM ingest_snapshots").fetchone()[0] == 0
        assert sorted(p.name for p in (g.root / "crops").rglob("*.jpg")) == sorted(
            Path(r.crop).name for r in g.records()
        )


# --- real footage ------------------------------------------------------------------------------------


@pytest.mark.skipif(not VTEST.is_file(), reason=f"{VTEST} missing: apt-get install opencv-doc (or set REIDKIT_VTEST)")
def test_vtest_smoke_with_osnet(tmp_path: Path) -> None:
    from reidkit.embed import Embedder
    from reidkit.models.build import build_model
    from reidkit.search.ingest.pipeline import default_detector

    embedder = Embedder.from_model(build_model("osnet_x0_25", num_classes=0, pretrained=None), workers=1)
    with Gallery.open(tmp_path / "g") as g:
        rep = ingest(g, VTEST, embedder, detector=default_detector(), max_frames=40)
        assert rep.status == "partial" and rep.frames == 40 and rep.detections > 40
        assert rep.tracks >= 3 and rep.crops >= rep.tracks and len(g) == rep.crops
        assert g.dim == embedder.embed([np.zeros((8, 4, 3), np.uint8)]).shape[1]
        assert {r.camera for r in g.records()} == {"vtest"}
        assert all((g.root / r.crop).is_file() for r in g.records())
        assert {t.track_id for t in g.tracks()} == {r.track_id for r in g.records()}


# --- images mode -------------------------------------------------------------------------------------


def test_images_mode_market_crops(tmp_path: Path, data_root: Path) -> None:
    query = data_root / "market1501" / "query"
    names = sorted(os.listdir(query))[:6]
    folder = tmp_path / "crops"
    folder.mkdir()
    for n in names:
        shutil.copy(query / n, folder / n)
    items = folder_items(folder)
    assert [Path(i.path).name for i in items] == names
    for it in items:  # e.g. 0001_c1s1_001051_00.jpg -> camera c1, frame 1051, 42.04 s
        fields = Path(it.path).name.split("_")
        assert (
            it.camera == fields[1][:2] and it.frame == int(fields[2]) and it.timestamp == pytest.approx(it.frame / 25)
        )
    with Gallery.open(tmp_path / "g") as g:
        rep = ingest(g, folder, FakeEmbedder(), images_mode=True, batch_size=4)
        assert rep.status == "done" and rep.frames == rep.crops == 6 and rep.tracks == 0
        recs = g.records()
        assert [r.crop for r in recs] == [i.path for i in items] and [r.camera for r in recs] == [
            i.camera for i in items
        ]
        assert ingest(g, folder, FakeEmbedder(), images_mode=True).status == "skipped"
        copied = ingest(g, folder, FakeEmbedder(), images_mode=True, copy_crops=True, replace=True)
        assert copied.replaced and all((g.root / r.crop).is_file() and r.crop.startswith("crops/") for r in g.records())
        named = ingest(g, folder, FakeEmbedder(), images_mode=True, camera=lambda p: "cam-" + p.name[:4],
                       replace=True)  # fmt: skip
        assert named.crops == 6 and {r.camera for r in g.records()} == {f"cam-{n[:4]}" for n in names}


def test_reid_split_gallery_matches_direct_evaluation(tmp_path: Path, data_root: Path) -> None:
    """Searching an ingested split ranks exactly as evaluating the embedder's features directly."""
    import torch

    from reidkit.datasets import get_dataset
    from reidkit.embed import Embedder
    from reidkit.evaluation import evaluate_features
    from reidkit.io import FeatureSet
    from reidkit.models.build import build_model

    ds = get_dataset("market1501", data_root)
    queries = ds.query[:40:8]
    pids = {q.pid for q in queries}
    gallery = [s for s in ds.gallery if s.pid in pids] + ds.gallery[:10]
    torch.manual_seed(0)
    embedder = Embedder.from_model(build_model("osnet_x0_25", num_classes=0, pretrained=None), workers=1)
    qf = embedder.embed([q.path for q in queries])
    gf = embedder.embed([s.path for s in gallery])

    def arrays(samples: list) -> tuple[np.ndarray, np.ndarray]:
        return np.array([s.pid for s in samples]), np.array([s.camid for s in samples])

    (qp, qc), (gp, gc) = arrays(queries), arrays(gallery)
    direct = evaluate_features(FeatureSet(qf, gf, qp, gp, qc, gc))
    with Gallery.open(tmp_path / "g") as g:
        ids = ingest_reid_split(g, gallery, embedder, batch_size=16)
        assert len(ids) == len(gallery) and len(set(ids.tolist())) == len(ids)
        assert [r.crop for r in g.get(ids)] == [str(Path(s.path).absolute()) for s in gallery]
        assert {r.camera for r in g.get(ids)} == {f"c{s.camid + 1}" for s in gallery}
        via = evaluate_features(FeatureSet(qf, g.features(ids), qp, gp, qc, gc))
        hits = g.search(qf, k=len(gallery))
        pos = {int(i): n for n, i in enumerate(ids)}
        np.testing.assert_array_equal([pos[h[0].id] for h in hits], np.argmax(qf @ gf.T, axis=1))
        np.testing.assert_array_equal(ingest_reid_split(g, gallery, embedder), ids)  # re-run: same ids
    assert via.rank(1) == pytest.approx(direct.rank(1)) and via.mAP == pytest.approx(direct.mAP)
    np.testing.assert_allclose(via.cmc, direct.cmc)


# --- command line ------------------------------------------------------------------------------------


def _cli():
    import typer

    from reidkit.cli.ingest import register

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """test app"""

    register(app)
    return app


def test_cli_ingest(tmp_path: Path, weights_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    import reidkit.cli.ingest

    monkeypatch.setattr(reidkit.cli.ingest, "console", Console(width=200))
    runner = CliRunner()
    app = _cli()
    w = weights_root / "reid" / "osnet_x0_25_market1501.pth"
    clip = write_clip(tmp_path / "yard.avi", 12, TWO)
    bad = runner.invoke(app, ["ingest", str(tmp_path / "nope.avi"), "--gallery", str(tmp_path / "g")])
    assert bad.exit_code == 2 and "nope.avi: no such file or folder" in bad.output
    model = ["--weights", str(w), "--model", "osnet_x0_25"]
    bad = runner.invoke(app, ["ingest", str(clip), "-g", str(tmp_path / "g"), "--weights", str(tmp_path / "x.pth")])
    assert bad.exit_code == 2 and "x.pth" in bad.output and len(bad.output.strip().splitlines()) == 1
    bad = runner.invoke(app, ["ingest", str(clip), "-g", str(tmp_path / "g"), "--detector", "nope", *model])
    assert bad.exit_code == 2 and "unknown detector 'nope'" in bad.output

    video = VTEST if VTEST.is_file() else clip
    args = ["ingest", str(video), "-g", str(tmp_path / "g"), *model, "--max-frames", "6", "--stride", "2"]
    ok = runner.invoke(app, [*args, "--camera", "yard-east"])
    assert ok.exit_code == 0, ok.output
    assert "yard-east" in ok.output and "partial" in ok.output and "frames/s" in ok.output
    again = runner.invoke(app, [*args, "--camera", "yard-east"])
    assert again.exit_code == 0 and "resumed after 10" in again.output
    other = runner.invoke(app, [*args, "--camera", "elsewhere"])  # a source keeps its camera
    assert other.exit_code == 2 and "registered with camera 'yard-east'" in other.output


def test_image_folder_cameras_get_distinct_track_ids(tmp_path: Path) -> None:
    root = tmp_path / "site"
    for cam, persons in (("camA", TWO), ("camB", THREE[:2])):
        (root / cam).mkdir(parents=True)
        for i in range(20):
            cv2.imwrite(str(root / cam / f"f{i:03d}.png"), draw_frame(i, persons))
    with Gallery.open(tmp_path / "g") as g:
        kw = {"detector": ColourDetector(), "tracker_opts": TRACKER}
        first = ingest(g, root, FakeEmbedder(), max_frames=25, sequence=True, **kw)  # stops 5 frames into camB
        assert first.status == "partial" and g.sources()[0].progress == 24
        rest = ingest(g, root, FakeEmbedder(), sequence=True, **kw)
        assert rest.status == "done" and rest.frames == 15
        by_track = {t.track_id: t.camera for t in g.tracks()}
        assert sorted(Counter(by_track.values()).items()) == [("camA", 2), ("camB", 3)]  # camB's 2nd person cut
        rows = sightings(g)
        assert len({(t, f) for t, f, _ in rows}) == len(rows)
        assert {r.camera for r in g.records()} == {"camA", "camB"}


def test_snapshot_unpickler_refuses_foreign_objects() -> None:
    import pickle
    import zlib

    from reidkit.search.ingest.crops import TrackCropper
    from reidkit.search.ingest.track import Tracker
    from reidkit.search.ingest.tracking import CameraState

    evil = zlib.compress(pickle.dumps(("x", {"f": os.system})))
    with pytest.raises(pickle.UnpicklingError, match=r"posix\.system|os\.system"):
        CameraState.loads(evil)
    ok = CameraState("c", Tracker(), TrackCropper(), 0, 0)
    assert CameraState.loads(ok.dumps()).camera == "c"


def test_a_snapshot_from_before_the_layout_change_still_loads(monkeypatch) -> None:
    """Galleries interrupted before search/ was split into stages pickled reidkit.search.track / .crops."""
    import sys
    import zlib

    from reidkit.search.ingest import crops, track
    from reidkit.search.ingest.tracking import CameraState

    tracker = track.Tracker()
    tracker.update([], 0)
    state = CameraState("c", tracker, crops.TrackCropper(), 7, 9)
    for old, mod in (("reidkit.search.track", track), ("reidkit.search.crops", crops)):
        monkeypatch.setitem(sys.modules, old, mod)
        for obj in list(vars(mod).values()):
            if isinstance(obj, type) and obj.__module__ == mod.__name__:
                monkeypatch.setattr(obj, "__module__", old)
    blob = state.dumps()
    raw = zlib.decompress(blob)
    assert b"reidkit.search.track" in raw and b"reidkit.search.ingest.track" not in raw
    monkeypatch.undo()
    back = CameraState.loads(blob)
    assert (back.camera, back.id_base, back.max_id) == ("c", 7, 9)
    assert type(back.tracker) is track.Tracker and type(back.cropper) is crops.TrackCropper

