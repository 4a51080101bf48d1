"""Ingest: cameras in, searchable gallery out (detect -> track -> best crops -> embed -> store).

:func:`ingest` takes one source (video file, stream URL or image folder, see ``sources.py``),
registers it in a :class:`~reidkit.search.Gallery` with its content fingerprint and writes one
:class:`~reidkit.search.Sighting` (with its feature and JPEG crop) per chosen crop of every track.
``images_mode=True`` is for folders of ready-made person crops (e.g. Market-1501's
``bounding_box_test``): every image is one sighting, nothing is detected or tracked.
:func:`ingest_reid_split` adds a dataset split that way and returns the gallery ids in sample order.

Re-running an ingest
--------------------
* A source whose fingerprint is unchanged and whose status is ``done`` is skipped.
* A changed source is an error unless ``replace=True``, which removes what the gallery holds of it
  and ingests it again (``replace=True`` re-ingests an unchanged source as well). Streams have no
  fingerprint worth comparing: each run appends to what earlier runs stored.
* Anything else (status ``pending`` / ``ingesting`` / ``failed``) resumes.

Resume semantics (tracking mode)
--------------------------------
The source's ``progress`` is the position of the last processed frame (for videos the frame index;
for image folders the position in the camera-by-camera frame order). A commit happens after the
frame at position P was processed, when ``batch_size`` crops of finished tracks are waiting or
``commit_interval`` seconds have passed:

1. the waiting tracks' crops are embedded and their JPEGs written (named ``<track>_<frame>.jpg``,
   so a repeated write overwrites rather than duplicates);
2. a snapshot of the live tracker and crop-selection state after frame P is written to the
   ``ingest_snapshots`` table (keyed by source and P; a restricted unpickler reads it back);
3. the sightings, their features, the track updates and ``progress = P`` are committed in **one**
   transaction (:meth:`Gallery.add`);
4. older snapshots of the source are deleted.

A killed ingest therefore leaves ``progress = P`` together with exactly the rows of the tracks that
had finished by frame P and a snapshot of every track still open at P; re-running restores that
snapshot and continues at frame ``P + stride``. The result is the same set of tracks, crops and
sightings as an uninterrupted run (for a deterministic detector), with no duplicate
``(source, track_id, frame)``. A kill between steps 2 and 3 leaves the previous ``(progress,
snapshot)`` pair in force; the crop files of step 1 are rewritten on resume.

When a run ends (end of the source, or ``max_frames`` reached) every open track is closed and
committed, the snapshots are deleted first, and the source is marked ``done`` (or stays
``ingesting`` after ``max_frames``: the next run continues after the last processed frame with a
fresh tracker, so a person crossing that cut becomes two tracks; track ids keep increasing, so no
(track, frame) pair repeats). Image folders close all tracks when the camera changes.

Images mode resumes exactly: ``progress`` is the index of the last committed image.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import logging
import os
import pickle
import re
import shutil
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from reidkit.search.ingest.crops import TrackCropper, TrackCrops
from reidkit.search.ingest.detect import Detector, build_detector, find_ssd_model
from reidkit.search.ingest.photos import PhotoClock, camera_folders, ingest_photos, list_photos, photo_fingerprint
from reidkit.search.ingest.sources import (
    IMAGE_EXTENSIONS,
    Frame,
    ImageFolderSource,
    SourceError,
    VideoSource,
    camera_from_uri,
    is_stream_uri,
    parse_timestamp,
    source_fingerprint,
)
from reidkit.search.ingest.track import Tracker
from reidkit.search.storage.gallery import CROPS, Gallery
from reidkit.search.storage.records import GalleryError, Sighting

log = logging.getLogger(__name__)

SNAPSHOT_TABLE = "ingest_snapshots"
SNAPSHOT_VERSION = 1
MARKET_CAMERA = r"_(c\d+)"  # 0002_c1s1_000451_03.jpg -> "c1"
MARKET_FRAME = r"c\d+s\d+_(\d+)"  # 0002_c1s1_000451_03.jpg -> 451


class FeatureExtractor(Protocol):
    """What ingest needs of an :class:`~reidkit.embed.Embedder`."""

    def embed(self, images: Sequence[Any], bgr: bool = False) -> np.ndarray: ...


@dataclass
class IngestReport:
    """What one :func:`ingest` call did.

    ``status``: ``done`` (the whole source is in the gallery), ``partial`` (stopped at
    ``max_frames``; a re-run continues), ``skipped`` (unchanged and already done) or ``truncated``
    (a video that ended well before the frame count its container announces: what could be read is
    in the gallery, the source is marked failed, and a re-run tries again).
    ``frames`` / ``detections`` / ``tracks`` / ``crops`` count this run's work only (photos: pictures
    ingested, people detected, and one track and crop per person). ``mode`` is ``video``,
    ``sequence``, ``photos`` or ``crops``; for photos ``already`` counts pictures already in the
    gallery, ``unreadable`` names the pictures skipped, and ``time_from`` says where the times came
    from (``exif``, ``sidecar``, ``pattern``, ``mtime`` or a mix such as ``exif 12, mtime 1``).
    """

    uri: str
    camera: str
    source_id: int
    status: str
    resumed_from: int | None = None
    replaced: bool = False
    frames: int = 0
    detections: int = 0
    tracks: int = 0
    crops: int = 0
    seconds: float = 0.0
    mode: str = "video"
    already: int = 0
    unreadable: list[str] = field(default_factory=list)
    time_from: str | None = None
    message: str | None = None

    @property
    def fps(self) -> float:
        """Frames (images in images mode) processed per second."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# --- snapshots of the tracking state -------------------------------------------------------------------


class _SnapshotUnpickler(pickle.Unpickler):
    """Unpickles only tracker / crop-selection objects and numpy arrays (never arbitrary callables)."""

    MODULES = ("reidkit.search.ingest.track", "reidkit.search.ingest.crops")
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
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        if module in self.MODULES:
            obj = getattr(importlib.import_module(module), name, None)
            if isinstance(obj, type) and obj.__module__ == module:  # classes defined there, not imported ones
                return obj
        raise pickle.UnpicklingError(f"ingest snapshot refers to {module}.{name}, which a snapshot may not hold")


@dataclass
class _CameraState:
    """Tracking state of the camera being processed; track ids are ``id_base`` + the tracker's id."""

    camera: str
    tracker: Tracker
    cropper: TrackCropper
    id_base: int
    max_id: int

    def dumps(self) -> bytes:
        return zlib.compress(pickle.dumps((_snapshot_version(), self.__dict__), protocol=5), 1)

    @classmethod
    def loads(cls, blob: bytes) -> _CameraState:
        """The state back; ValueError for a snapshot of another reidkit version (its classes may differ)."""
        version, state = _SnapshotUnpickler(io.BytesIO(zlib.decompress(blob))).load()
        if version != _snapshot_version():
            raise ValueError(f"snapshot written by {version}, this is {_snapshot_version()}")
        return cls(**state)


def _snapshot_version() -> str:
    from reidkit import __version__

    return f"reidkit {__version__} snapshot {SNAPSHOT_VERSION}"


class _Snapshots:
    """The ``ingest_snapshots`` table: one tracking snapshot per (source, progress)."""

    def __init__(self, gallery: Gallery) -> None:
        self.g = gallery
        with self._locked():
            gallery.db.execute(
                f"CREATE TABLE IF NOT EXISTS {SNAPSHOT_TABLE} (source_id INTEGER NOT NULL, progress REAL NOT NULL, "
                "created REAL NOT NULL, state BLOB NOT NULL, PRIMARY KEY (source_id, progress))"
            )
            gallery.db.execute(f"DELETE FROM {SNAPSHOT_TABLE} WHERE source_id NOT IN (SELECT id FROM sources)")

    def _locked(self) -> contextlib.AbstractContextManager[Any]:
        return getattr(self.g, "_lock", contextlib.nullcontext())  # the gallery's own lock, if it has one

    def get(self, sid: int, progress: float) -> bytes | None:
        with self._locked():
            row = self.g.db.execute(
                f"SELECT state FROM {SNAPSHOT_TABLE} WHERE source_id = ? AND progress = ?", (sid, progress)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, sid: int, progress: float, blob: bytes) -> None:
        with self._locked():
            self.g.db.execute(
                f"INSERT OR REPLACE INTO {SNAPSHOT_TABLE}(source_id, progress, created, state) VALUES (?, ?, ?, ?)",
                (sid, float(progress), time.time(), blob),
            )

    def delete(self, sid: int, keep: float | None = None) -> None:
        """Delete the source's snapshots, except the one at ``keep``."""
        with self._locked():
            if keep is None:
                self.g.db.execute(f"DELETE FROM {SNAPSHOT_TABLE} WHERE source_id = ?", (sid,))
            else:
                self.g.db.execute(
                    f"DELETE FROM {SNAPSHOT_TABLE} WHERE source_id = ? AND progress != ?", (sid, float(keep))
                )


# --- helpers ------------------------------------------------------------------------------------------


def default_detector() -> str:
    """``ssd`` when its model files are installed, else ``hog``."""
    try:
        find_ssd_model()
    except FileNotFoundError:
        return "hog"
    return "ssd"


def canonical_uri(uri: str | os.PathLike[str]) -> str:
    """Streams as given; local paths absolute (so re-runs from another folder find the same source)."""
    s = str(uri)
    if is_stream_uri(s):
        return s
    return str(Path(s.removeprefix("file://")).expanduser().absolute())


def _seconds(t: float | str | datetime | None) -> float | None:
    if t is None:
        return None
    if isinstance(t, datetime):
        return t.timestamp()
    return parse_timestamp(t)


def _check_dim(gallery: Gallery, embedder: FeatureExtractor) -> None:
    """Fail before any work when the embedder's feature width does not match the gallery's."""
    if gallery.dim is None:
        return
    dim = embedder.embed([np.zeros((64, 32, 3), np.uint8)], bgr=True).shape[1]
    if dim != gallery.dim:
        raise GalleryError(
            f"gallery {gallery.root} holds dim={gallery.dim} features but this model gives {dim}: "
            "use the model the gallery was built with, or another gallery"
        )


def _max_track_id(gallery: Gallery, sid: int) -> int:
    row = gallery.db.execute("SELECT MAX(track_id) FROM detections WHERE source_id = ?", (sid,)).fetchone()
    return int(row[0] or 0)


class _Bar:
    """A rich progress bar with a rate column (or nothing when disabled)."""

    def __init__(self, enabled: bool, label: str, total: int | None, unit: str) -> None:
        self.bar: Any = None
        self.unit = unit
        self.t0 = time.perf_counter()
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
        )
        self.task = self.bar.add_task(label, total=total, rate="", info="")
        self.bar.start()

    def update(self, done: int, info: str = "", advance: int = 1) -> None:
        if self.bar is None:
            return
        dt = time.perf_counter() - self.t0
        rate = f"{done / dt:6.1f} {self.unit}/s" if dt > 0 else ""
        self.bar.update(self.task, advance=advance, rate=rate, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _iter_positions(src: VideoSource | ImageFolderSource, start: int) -> Iterator[tuple[int, Frame]]:
    """``(position, frame)`` from ``start`` on: video frame indices, or folder positions camera by camera."""
    if isinstance(src, VideoSource):
        src.start_frame = start
        for f in src:
            yield f.frame_index, f
        return
    offset = 0
    for cam in src.cameras:
        n = len(src.timeline(cam))
        if offset + n > start:
            src.start_frame = max(0, start - offset)
            for f in src.iter_camera(cam):
                yield offset + f.frame_index, f
        offset += n


def _source_total(src: VideoSource | ImageFolderSource) -> int | None:
    if isinstance(src, VideoSource):
        return src.frame_count
    return sum(len(src.timeline(c)) for c in src.cameras)


# --- tracking mode -----------------------------------------------------------------------------------


@dataclass
class _Run:
    """One tracking-mode run over a source: the pipeline state, the pending tracks and the counters."""

    gallery: Gallery
    uri: str
    sid: int
    embedder: FeatureExtractor
    snapshots: _Snapshots
    camera: str | None
    tracker_opts: dict[str, Any]
    cropper_opts: dict[str, Any]
    batch_size: int
    commit_interval: float
    state: _CameraState | None = None
    next_base: int = 0
    pending: list[tuple[int, TrackCrops]] = field(default_factory=list)
    report: IngestReport | None = None
    last_commit: float = field(default_factory=time.monotonic)

    def new_camera(self, camera: str) -> None:
        if self.state is not None:
            self.close_camera()
        self.state = _CameraState(
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
            self.snapshots.delete(self.sid)
        elif position is not None and self.state is not None:
            self.snapshots.put(self.sid, position, self.state.dumps())
        if sightings:
            self.gallery.add(feats, sightings, progress=position)
        elif position is not None:
            self.gallery.set_source_status(self.sid, "ingesting", progress=position)
        if not final and position is not None:
            self.snapshots.delete(self.sid, keep=position)
        rep.tracks += len(self.pending)
        rep.crops += len(sightings)
        self.pending = []
        self.last_commit = time.monotonic()


def _open_tracking_source(
    uri: str,
    camera: str | None,
    start_time: float | None,
    fps: float | None,
    stride: int,
    sidecar: str | os.PathLike[str] | None = None,
) -> VideoSource | ImageFolderSource:
    if not is_stream_uri(uri) and Path(uri).is_dir():
        return ImageFolderSource(uri, stride=stride, start_time=start_time, fps=fps or 1.0, sidecar=sidecar)
    wall = is_stream_uri(uri) and start_time is None
    return VideoSource(uri, camera=camera, start_time=start_time, fps=fps, stride=stride, wall_clock=wall)


def ingest(
    gallery: Gallery,
    uri: str | os.PathLike[str],
    embedder: FeatureExtractor,
    *,
    camera: str | Callable[[Path], str] | None = None,
    detector: str | Detector | None = None,
    detector_opts: dict[str, Any] | None = None,
    tracker_opts: dict[str, Any] | None = None,
    stride: int = 1,
    max_frames: int | None = None,
    start_time: float | str | datetime | None = None,
    fps: float | None = None,
    crops_per_track: int = 4,
    min_gap_s: float = 0.5,
    images_mode: bool = False,
    sequence: bool = False,
    camera_pattern: str | None = MARKET_CAMERA,
    time_pattern: str | None = MARKET_FRAME,
    time_format: str | None = None,
    sidecar: str | os.PathLike[str] | None = None,
    copy_crops: bool = False,
    replace: bool = False,
    batch_size: int = 64,
    commit_interval: float = 10.0,
    progress: bool = True,
) -> IngestReport:
    """Ingest one source into ``gallery``; skip it when done and unchanged, resume it when interrupted.

    Tracking mode (default): ``detector`` (a registered name, default :func:`default_detector`, with
    ``detector_opts``, or a :class:`Detector`), a :class:`Tracker` (``tracker_opts``) per camera and
    up to ``crops_per_track`` crops per track at least ``min_gap_s`` apart. ``stride`` keeps every
    n-th frame; ``max_frames`` stops this run after that many (a later run continues); ``start_time``
    (seconds or ISO 8601) dates frame 0; ``fps`` overrides the container's. ``camera`` names the camera
    (default: from the file / folder names). Crops are embedded ``batch_size`` at a time (BGR);
    progress is committed at least every ``commit_interval`` seconds.

    Photos (the default for a folder of full-scene pictures, see ``photos.py``): every person
    detected in each picture is a sighting (no tracking); times from a ``sidecar`` (default: found in
    the folder or above it), EXIF, ``time_format`` (a strptime format in the file names) or the mtime.
    A re-run adds only pictures not yet in the gallery. A folder of camera subfolders is refused
    here: ingest each of :func:`reidkit.search.ingest.photos.camera_folders` (``reidkit ingest`` does).
    ``max_frames`` caps the pictures of this run. ``sequence=True`` tracks a folder as a frame
    sequence instead (``ImageFolderSource``: frames in time order, ``fps`` for name-ordered times).

    Images mode: every image under the folder ``uri`` is one person crop. Its camera comes from
    ``camera`` (a name or a callable on the path), else the first group of ``camera_pattern`` in the
    file name, else its folder; its frame from ``time_pattern``'s group (else its order within its
    camera) and its time from ``start_time + frame / fps`` (``fps`` defaults to 25). Crops are
    referenced where they are, or copied into the gallery with ``copy_crops``.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if callable(camera) and not images_mode:
        raise ValueError("a camera callable is only supported in images mode")
    t0 = time.perf_counter()
    uri = canonical_uri(uri)
    stream = is_stream_uri(uri)
    t_start = _seconds(start_time)
    fingerprint = source_fingerprint(uri)  # SourceError when missing
    photos = not images_mode and not sequence and not stream and Path(uri).is_dir()
    clock = None
    if photos:
        if not list_photos(uri):  # a photo source is the pictures directly in its folder
            cams = camera_folders(uri)
            if cams != [Path(uri)]:
                names = ", ".join(c.name for c in cams)
                raise SourceError(f"{uri} holds camera folders ({names}): ingest each one (reidkit ingest does)")
            raise SourceError(f"{uri}: no pictures ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        fingerprint = photo_fingerprint(uri)
        clock = PhotoClock(uri, sidecar, time_format)
        src_cam, src_fps = camera if isinstance(camera, str) else camera_from_uri(uri), None
        src = None
    elif images_mode:
        if stream or not Path(uri).is_dir():
            raise SourceError(f"{uri}: images mode needs a folder of person crops")
        src_cam, src_fps = camera if isinstance(camera, str) else camera_from_uri(uri), fps or 25.0
        src: VideoSource | ImageFolderSource | None = None
    else:
        cam_name = camera if isinstance(camera, str) else None
        src = _open_tracking_source(uri, cam_name, t_start, fps, stride, sidecar)
        src_fps = src.fps if isinstance(src, VideoSource) else None  # opens a video: SourceError if it cannot
        src_cam = camera if isinstance(camera, str) else camera_from_uri(uri)

    mode = "photos" if photos else "crops" if images_mode else "sequence" if Path(uri).is_dir() else "video"
    old = gallery.source_status(uri)
    replaced = False
    if old is not None:
        changed = old.fingerprint is not None and old.fingerprint != fingerprint
        if old.status == "done" and not changed and not stream and not replace:
            log.info("%s: unchanged and already ingested; skipped", uri)
            return IngestReport(uri, old.camera, old.id, "skipped", seconds=time.perf_counter() - t0, mode=mode)
        if photos and changed and not replace:
            changed = False  # a photo folder that grew: add the new pictures (the ledger skips the rest)
        if replace or changed:
            if not replace:
                raise GalleryError(
                    f"source {uri} changed since it was ingested (fingerprint {old.fingerprint} -> {fingerprint}): "
                    "pass replace=True (--replace) to remove it and ingest it again"
                )
            gallery.remove_source(old.id)
            replaced, old = True, None
    _check_dim(gallery, embedder)
    rec = gallery.add_source(uri, src_cam, src_fps, None if photos and old is not None else fingerprint)
    snapshots = _Snapshots(gallery)
    resumed_from = None
    if rec.progress is not None and not stream and not photos:
        resumed_from = int(rec.progress)
    report = IngestReport(uri, rec.camera, rec.id, "done", resumed_from=resumed_from, replaced=replaced, mode=mode)
    try:
        if photos:
            assert clock is not None
            det = detector if detector is not None and not isinstance(detector, str) else None
            if det is None:
                det = build_detector(detector or default_detector(), **(detector_opts or {}))
            ingest_photos(
                gallery, rec.id, uri, embedder, det, report, camera=rec.camera, clock=clock,
                batch_size=batch_size, max_photos=max_frames, progress=progress,
            )  # fmt: skip
        elif images_mode:
            items = folder_items(uri, camera, camera_pattern, time_pattern, src_fps, t_start or 0.0)
            _ingest_items(gallery, rec.id, uri, items, embedder, report, copy_crops, batch_size, progress)
        else:
            assert src is not None
            _ingest_tracking(
                gallery, rec.id, uri, src, embedder, report, snapshots,
                camera=camera if isinstance(camera, str) else None,
                detector=detector, detector_opts=detector_opts or {}, tracker_opts=tracker_opts or {},
                cropper_opts={"max_crops": crops_per_track, "min_gap_s": min_gap_s},
                stride=stride, max_frames=max_frames, stream=stream,
                batch_size=batch_size, commit_interval=commit_interval, progress=progress,
            )  # fmt: skip
    except Exception:
        with contextlib.suppress(Exception):
            gallery.set_source_status(rec.id, "failed")
        raise
    report.seconds = time.perf_counter() - t0
    if report.status == "done":
        gallery.set_source_status(rec.id, "done", fingerprint=fingerprint)
    elif report.status == "truncated":
        gallery.set_source_status(rec.id, "failed")
    gallery.save()
    return report


def _ingest_tracking(
    gallery: Gallery,
    sid: int,
    uri: str,
    src: VideoSource | ImageFolderSource,
    embedder: FeatureExtractor,
    report: IngestReport,
    snapshots: _Snapshots,
    *,
    camera: str | None,
    detector: str | Detector | None,
    detector_opts: dict[str, Any],
    tracker_opts: dict[str, Any],
    cropper_opts: dict[str, Any],
    stride: int,
    max_frames: int | None,
    stream: bool,
    batch_size: int,
    commit_interval: float,
    progress: bool,
) -> None:
    run = _Run(gallery, uri, sid, embedder, snapshots, camera, tracker_opts, cropper_opts, batch_size, commit_interval)
    run.report = report
    run.next_base = _max_track_id(gallery, sid)
    start = 0
    if report.resumed_from is not None:
        start = report.resumed_from + stride
        blob = snapshots.get(sid, report.resumed_from)
        if blob is not None:
            try:
                run.state = _CameraState.loads(blob)
                run.next_base = max(run.next_base, run.state.max_id)
            except Exception as exc:  # unreadable: resume with a fresh tracker (tracks open at the cut split)
                log.warning("%s: ignoring an unreadable ingest snapshot (%s)", uri, exc)
        log.info("%s: resuming after frame %d%s", uri, report.resumed_from, "" if run.state else " (fresh tracker)")
    elif stream:
        snapshots.delete(sid)
    det = detector if detector is not None and not isinstance(detector, str) else None
    if det is None:
        det = build_detector(detector or default_detector(), **detector_opts)

    total = None if stream else _source_total(src)
    if total is not None:
        total = max(0, -(-(total - start) // stride))
        if max_frames is not None:
            total = min(total, max_frames)
    bar = _Bar(progress, Path(uri).name if not stream else uri, total, "frames")
    position: int | None = report.resumed_from
    frames = _iter_positions(src, start)
    try:
        for pos, frame in frames:
            report.detections += run.process(frame, det)
            report.frames += 1
            position = pos
            bar.update(report.frames, f"tracks {report.tracks} crops {report.crops}")
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
        bar.update(report.frames, f"tracks {report.tracks} crops {report.crops}", advance=0)
    finally:
        bar.close()
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


# --- images mode -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CropItem:
    """One ready-made person crop to add as a sighting."""

    path: str
    camera: str
    timestamp: float
    frame: int


def _natural_key(s: str) -> list[int | str]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def folder_items(
    root: str | os.PathLike[str],
    camera: str | Callable[[Path], str] | None = None,
    camera_pattern: str | None = MARKET_CAMERA,
    time_pattern: str | None = MARKET_FRAME,
    fps: float = 25.0,
    start_time: float = 0.0,
) -> list[CropItem]:
    """Every image below ``root`` (natural name order) as a :class:`CropItem` (see :func:`ingest`)."""
    root = Path(root)
    paths = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: _natural_key(p.relative_to(root).as_posix()),
    )
    paths = [p for p in paths if not any(part.startswith(".") for part in p.relative_to(root).parts)]
    cam_re = re.compile(camera_pattern) if camera_pattern else None
    time_re = re.compile(time_pattern) if time_pattern else None
    order: dict[str, int] = {}
    items = []
    for p in paths:
        if callable(camera):
            cam = str(camera(p))
        elif camera is not None:
            cam = camera
        elif cam_re is not None and (m := cam_re.search(p.name)):
            cam = m.group(1)
        else:
            cam = p.parent.name if p.parent != root else camera_from_uri(root)
        n = order[cam] = order.get(cam, -1) + 1
        m = time_re.search(p.name) if time_re is not None else None
        frame = int(m.group(1)) if m else n
        items.append(CropItem(str(p.absolute()), cam, start_time + frame / fps, frame))
    return items


def _ingest_items(
    gallery: Gallery,
    sid: int,
    uri: str,
    items: Sequence[CropItem],
    embedder: FeatureExtractor,
    report: IngestReport,
    copy_crops: bool,
    batch_size: int,
    progress: bool,
) -> None:
    start = 0 if report.resumed_from is None else report.resumed_from + 1
    bar = _Bar(progress, Path(uri).name, max(0, len(items) - start), "images")
    root = Path(uri)
    try:
        for b in range(start, len(items), batch_size):
            chunk = items[b : b + batch_size]
            # paths, not decoded arrays: the same decoding as `reidkit eval`, so the features are identical
            feats = embedder.embed([it.path for it in chunk])
            crops = [_copy_crop(gallery, sid, root, it.path) if copy_crops else it.path for it in chunk]
            sightings = [
                Sighting(uri, it.timestamp, camera=it.camera, frame=it.frame, crop=crop)
                for it, crop in zip(chunk, crops, strict=True)
            ]
            gallery.add(feats, sightings, progress=b + len(chunk) - 1)
            report.frames += len(chunk)
            report.crops += len(chunk)
            bar.update(report.frames, f"{report.crops} sightings", advance=len(chunk))
    finally:
        bar.close()


def _copy_crop(gallery: Gallery, sid: int, root: Path, path: str) -> str:
    from reidkit.io import atomic_path

    try:
        rel_name = Path(path).relative_to(root.absolute())
    except ValueError:
        rel_name = Path(Path(path).name)
    rel = Path(CROPS, str(sid), rel_name)
    with atomic_path(gallery.root / rel) as tmp:
        shutil.copyfile(path, tmp)
    return rel.as_posix()


def ingest_reid_split(
    gallery: Gallery,
    samples: Sequence[Any],
    embedder: FeatureExtractor,
    *,
    source: str | None = None,
    fps: float = 25.0,
    batch_size: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """Add a re-id dataset split (:class:`~reidkit.datasets.base.Sample` list) as crops; returns the
    gallery ids in sample order (so ``ids[i]`` is sample ``i``, whose ``pid`` the caller knows).

    Cameras are ``c<camid + 1>`` (Market-1501's numbering); times come from ``extra["timestamp"]``,
    else the Market frame field / ``fps``, else the sample order. ``source`` (default: the split's
    folder) is registered with a fingerprint of the sample paths; re-running returns the stored ids.
    """
    if not samples:
        raise ValueError("no samples to add")
    paths = [str(Path(s.path).absolute()) for s in samples]
    if len(set(paths)) != len(paths):
        raise ValueError("the split lists an image twice; gallery ids would be ambiguous")
    folder = os.path.commonpath([str(Path(p).parent) for p in paths])
    uri = source or f"reid:{folder}"
    fingerprint = "samples:" + hashlib.sha1("\n".join(paths).encode()).hexdigest()
    time_re = re.compile(MARKET_FRAME)
    items = []
    for i, (s, p) in enumerate(zip(samples, paths, strict=True)):
        m = time_re.search(Path(p).name)
        frame = int(s.extra.get("frame", int(m.group(1)) if m else i))
        ts = float(s.extra["timestamp"]) if "timestamp" in s.extra else frame / fps
        items.append(CropItem(p, f"c{int(s.camid) + 1}", ts, frame))
    old = gallery.source_status(uri)
    if old is not None and old.fingerprint != fingerprint:
        gallery.remove_source(old.id)
        old = None
    if old is None or old.status != "done":
        _check_dim(gallery, embedder)
        rec = gallery.add_source(uri, Path(folder).name or "split", fps, fingerprint)
        resumed = None if rec.progress is None else int(rec.progress)
        report = IngestReport(uri, rec.camera, rec.id, "done", resumed_from=resumed)
        _ingest_items(gallery, rec.id, uri, items, embedder, report, False, batch_size, progress)
        gallery.set_source_status(rec.id, "done")
        gallery.save()
    by_path = {r.crop: r.id for r in gallery.records(uri)}
    return np.array([by_path[p] for p in paths], dtype=np.int64)
