"""Tracking mode: a video, a stream or a frame sequence, frame by frame (detect -> track -> best crops
-> embed -> storage), resumable exactly (see :mod:`reidkit.search.ingest.pipeline` for the semantics).

The state a resume needs (the tracker and the crop selection of the camera being processed) is
pickled into the gallery with every commit, in the same transaction as the sightings and the
source's progress (:meth:`Gallery.add` with ``snapshot=``); a restricted unpickler reads it back.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import pickle
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from reidkit.embed import FeatureExtractor
from reidkit.search.ingest.crops import TrackCropper, TrackCrops
from reidkit.search.ingest.detect import Detector
from reidkit.search.ingest.report import IngestReport, Progress, ProgressFn
from reidkit.search.ingest.sources import Frame, ImageFolderSource, VideoSource
from reidkit.search.ingest.track import Tracker
from reidkit.search.storage import Gallery, Sighting

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1


class SnapshotUnpickler(pickle.Unpickler):
    """Unpickles only tracker / crop-selection objects and numpy arrays (never arbitrary callables)."""

    MODULES = ("reidkit.search.ingest.track", "reidkit.search.ingest.crops")
    # where these classes lived before the search package was laid out as stages: snapshots an
    # interrupted ingest left then still resume exactly
    RENAMED: ClassVar[dict[str, str]] = {"reidkit.search.track": MODULES[0], "reidkit.search.crops": MODULES[1]}
    ALLOWED = frozenset(
        (mod, name)
        for mod in (
            "numpy",
            "numpy.core.numeric",
            "numpy._core.numeric",
            "numpy.core.multiarray",
            "numpy._core.multiarray",
        )
        for name in ("dtype", "ndarray", "_frombuffer", "_reconstruct", "scalar")
    )

    def find_class(self, module: str, name: str) -> Any:
        module = self.RENAMED.get(module, module)
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        if module in self.MODULES:
            obj = getattr(importlib.import_module(module), name, None)
            if isinstance(obj, type) and obj.__module__ == module:  # classes defined there, not imported ones
                return obj
        raise pickle.UnpicklingError(f"ingest snapshot refers to {module}.{name}, which a snapshot may not hold")


@dataclass
class CameraState:
    """Tracking state of the camera being processed; track ids are ``id_base`` + the tracker's id."""

    camera: str
    tracker: Tracker
    cropper: TrackCropper
    id_base: int
    max_id: int

    def dumps(self) -> bytes:
        return zlib.compress(pickle.dumps((_snapshot_version(), self.__dict__), protocol=5), 1)

    @classmethod
    def loads(cls, blob: bytes) -> CameraState:
        """The state back; ValueError for a snapshot of another reidkit version (its classes may differ)."""
        version, state = SnapshotUnpickler(io.BytesIO(zlib.decompress(blob))).load()
        if version != _snapshot_version():
            raise ValueError(f"snapshot written by {version}, this is {_snapshot_version()}")
        return cls(**state)


def _snapshot_version() -> str:
    from reidkit import __version__

    return f"reidkit {__version__} snapshot {SNAPSHOT_VERSION}"


@dataclass
class _Run:
    """One tracking-mode run over a source: the pipeline state, the pending tracks and the counters."""

    gallery: Gallery
    uri: str
    sid: int
    embedder: FeatureExtractor
    camera: str | None
    tracker_opts: dict[str, Any]
    cropper_opts: dict[str, Any]
    batch_size: int
    commit_interval: float
    state: CameraState | None = None
    next_base: int = 0
    pending: list[tuple[int, TrackCrops]] = field(default_factory=list)
    report: IngestReport | None = None
    last_commit: float = field(default_factory=time.monotonic)

    def new_camera(self, camera: str) -> None:
        if self.state is not None:
            self.close_camera()
        self.state = CameraState(
            camera, Tracker(**self.tracker_opts), TrackCropper(camera=camera, **self.cropper_opts), self.next_base, 0
        )

    def close_camera(self) -> None:
        st = self.state
        assert st is not None
        st.tracker.flush()
        self._take(st.cropper.flush())
        self.next_base = max(self.next_base, st.max_id)
        self.state = None

    def _take(self, finished: list[TrackCrops]) -> None:
        st = self.state
        assert st is not None
        for tc in finished:
            gid = st.id_base + tc.track_id
            st.max_id = max(st.max_id, gid)
            if tc.crops:
                self.pending.append((gid, tc))

    def process(self, frame: Frame, detector: Detector) -> int:
        if self.state is None or frame.camera != self.state.camera:
            self.new_camera(frame.camera)
        st = self.state
        assert st is not None
        dets = detector.detect(frame.image_bgr)
        for tb in st.tracker.update(dets, frame.frame_index):
            st.cropper.add(tb.track_id, frame.image_bgr, tb.box, tb.score, frame.timestamp, frame.frame_index)
            st.max_id = max(st.max_id, st.id_base + tb.track_id)
        st.tracker.finished()
        self._take(st.cropper.pop_finished(st.tracker.active_ids))
        return len(dets)

    def due(self) -> bool:
        n = sum(len(tc.crops) for _, tc in self.pending)
        return n >= self.batch_size or time.monotonic() - self.last_commit >= self.commit_interval

    def commit(self, position: int | None, final: bool) -> None:
        """Embed and store the pending tracks with ``progress = position`` (see the module docstring)."""
        rep = self.report
        assert rep is not None
        items = [(gid, tc, c) for gid, tc in self.pending for c in tc.crops]
        feats = self.embedder.embed([c.image_bgr for _, _, c in items], bgr=True) if items else None
        sightings = []
        for gid, tc, c in items:
            crop = self.gallery.save_crop(c.image_bgr, self.sid, f"{gid:06d}_{c.frame_index:07d}")
            sightings.append(
                Sighting(
                    self.uri,
                    c.timestamp,
                    camera=self.camera or tc.camera,
                    frame=c.frame_index,
                    box=c.box,
                    track_id=gid,
                    crop=crop,
                    quality=c.quality,
                )
            )
        if final:
            self.gallery.drop_snapshots(self.sid)
        if sightings or position is not None:
            snap = None if final or position is None or self.state is None else self.state.dumps()
            self.gallery.add(feats, sightings, progress=position, source=self.sid, snapshot=snap)
        rep.tracks += len(self.pending)
        rep.crops += len(sightings)
        self.pending = []
        self.last_commit = time.monotonic()


def ingest_tracking(
    gallery: Gallery,
    sid: int,
    uri: str,
    src: VideoSource | ImageFolderSource,
    embedder: FeatureExtractor,
    report: IngestReport,
    *,
    camera: str | None,
    detector: Detector,
    tracker_opts: dict[str, Any],
    cropper_opts: dict[str, Any],
    stride: int,
    max_frames: int | None,
    stream: bool,
    batch_size: int,
    commit_interval: float,
    progress: ProgressFn | None,
    stop: threading.Event | None = None,
) -> None:
    run = _Run(gallery, uri, sid, embedder, camera, tracker_opts, cropper_opts, batch_size, commit_interval)
    run.report = report
    run.next_base = gallery.max_track_id(sid)
    start = 0
    if report.resumed_from is not None:
        start = report.resumed_from + stride
        blob = gallery.snapshot(sid, report.resumed_from)
        if blob is not None:
            try:
                run.state = CameraState.loads(blob)
                run.next_base = max(run.next_base, run.state.max_id)
            except Exception as exc:  # unreadable: resume with a fresh tracker (tracks open at the cut split)
                log.warning("%s: ignoring an unreadable ingest snapshot (%s)", uri, exc)
        log.info("%s: resuming after frame %d%s", uri, report.resumed_from, "" if run.state else " (fresh tracker)")
    elif stream:
        gallery.drop_snapshots(sid)

    total, frames = src.positions(start)
    total = None if stream else total
    if total is not None and max_frames is not None:
        total = min(total, max_frames)
    label = Path(uri).name if not stream else uri

    def tell(final: bool = False) -> None:
        if progress is not None:
            info = f"tracks {report.tracks} crops {report.crops}"
            progress(Progress(label, report.frames, total, "frames", info, final))

    position: int | None = report.resumed_from
    try:
        for pos, frame in frames:
            report.detections += run.process(frame, detector)
            report.frames += 1
            position = pos
            tell()
            if stop is not None and stop.is_set():
                report.status = "partial"
                break
            if max_frames is not None and report.frames >= max_frames:
                if next(frames, None) is not None:  # more frames left: this run stops short of the end
                    report.status = "partial"
                break
            if run.due():
                run.commit(position, final=False)
        if run.state is not None:
            run.close_camera()
        run.commit(position, final=True)
        if isinstance(src, VideoSource) and report.status == "done" and not stream:
            _check_complete(src, report, position)
    finally:
        tell(final=True)
        with contextlib.suppress(Exception):
            frames.close()  # type: ignore[attr-defined]


def _check_complete(src: VideoSource, report: IngestReport, position: int | None) -> None:
    """Mark ``report`` truncated when the video ended well before the frame count its container gives."""
    n = src.frame_count
    last = src.last_index if src.last_index is not None else position
    if not n:
        return
    read = 0 if last is None else last + 1
    if read < 0.95 * n - 1:  # containers' counts are estimates: allow 5 % slack
        report.status = "truncated"
        report.message = (
            f"{src.uri_str}: the video ended at frame {read:,} of the {n:,} its container announces "
            "(truncated or damaged file); what could be read is in the gallery, the source is marked failed"
        )
        log.warning("%s", report.message)
