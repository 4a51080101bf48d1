"""Ingest: cameras in, searchable gallery out (detect -> track -> best crops -> embed -> store).

:func:`ingest` takes one source (video file, stream URL or image folder, see ``sources.py``), works
out what it is (:func:`~reidkit.search.ingest.sources.describe_source`), registers it and hands it to
its mode: ``tracking.py`` (videos, streams, frame sequences), ``photos.py`` or ``person_crops.py``.
It
registers it in a :class:`~reidkit.search.storage.Gallery` with its content fingerprint and writes one
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
2. the sightings, their features, the track updates, ``progress = P`` and a snapshot of the live
   tracker and crop-selection state after frame P (replacing the source's older one) are committed
   in **one** transaction (:meth:`Gallery.add` with ``snapshot=``; a restricted unpickler reads it
   back, see ``tracking.py``).

A killed ingest therefore leaves ``progress = P`` together with exactly the rows of the tracks that
had finished by frame P and a snapshot of every track still open at P; re-running restores that
snapshot and continues at frame ``P + stride``. The result is the same set of tracks, crops and
sightings as an uninterrupted run (for a deterministic detector), with no duplicate
``(source, track_id, frame)``. A kill before step 2 commits leaves the previous ``(progress,
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
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from reidkit.embed import FeatureExtractor
from reidkit.search.ingest.detect import Detector, build_detector, find_ssd_model
from reidkit.search.ingest.person_crops import MARKET_CAMERA, MARKET_FRAME, check_dim, folder_items, ingest_crops
from reidkit.search.ingest.photos import PhotoClock, ingest_photos
from reidkit.search.ingest.report import IngestReport, ProgressFn
from reidkit.search.ingest.sources import describe_source, parse_timestamp
from reidkit.search.ingest.tracking import ingest_tracking
from reidkit.search.storage import Gallery

log = logging.getLogger(__name__)


def default_detector() -> str:
    """``ssd-tiled`` when SSD's model files are installed, else ``hog``. On frames under 1000 pixels
    (most video) ``ssd-tiled`` costs what ``ssd`` does; larger pictures get tiles (issue 22: on full-HD
    pictures recall 0.59 -> 0.92, at about 10x the detection time, ``bench/detect_recall.py``)."""
    try:
        find_ssd_model()
    except FileNotFoundError:
        return "hog"
    return "ssd-tiled"


def _seconds(t: float | str | datetime | None) -> float | None:
    if t is None:
        return None
    if isinstance(t, datetime):
        return t.timestamp()
    return parse_timestamp(t)


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
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
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

    ``stop`` (set from another thread, e.g. on SIGTERM): end this run after the current frame or picture,
    as ``max_frames`` does (status ``partial``; a re-run continues).
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if callable(camera) and not images_mode:
        raise ValueError("a camera callable is only supported in images mode")
    t0 = time.perf_counter()
    t_start = _seconds(start_time)
    name = camera if isinstance(camera, str) else None
    info = describe_source(uri, camera=name, crops=images_mode, sequence=sequence, fps=fps, start_time=t_start,
                           stride=stride, sidecar=sidecar)  # fmt: skip
    clock = PhotoClock(info.uri, sidecar, time_format) if info.kind == "photos" else None
    check_dim(gallery, embedder)
    rec, action = gallery.register(info.uri, info.camera, info.fps, info.fingerprint, replace=replace,
                                   grows=info.kind == "photos", live=info.kind == "stream")  # fmt: skip
    if action == "skip":
        log.info("%s: unchanged and already ingested; skipped", info.uri)
        return IngestReport(info.uri, rec.camera, rec.id, "skipped", seconds=time.perf_counter() - t0, mode=info.kind)
    replaced = action == "replaced"
    resumed_from = None
    if rec.progress is not None and info.kind not in ("stream", "photos"):
        resumed_from = int(rec.progress)
    report = IngestReport(info.uri, rec.camera, rec.id, "done", resumed_from=resumed_from, replaced=replaced,
                          mode=info.kind)  # fmt: skip
    try:
        if info.kind == "crops":
            items = folder_items(info.uri, camera, camera_pattern, time_pattern, info.fps or 25.0, t_start or 0.0)
            ingest_crops(gallery, rec.id, info.uri, items, embedder, report, copy_crops, batch_size, progress)
        else:
            det = detector if detector is not None and not isinstance(detector, str) else None
            if det is None:
                det = build_detector(detector or default_detector(), **(detector_opts or {}))
            if clock is not None:
                ingest_photos(
                    gallery, rec.id, info.uri, embedder, det, report, camera=rec.camera, clock=clock,
                    batch_size=batch_size, max_photos=max_frames, progress=progress, stop=stop,
                )  # fmt: skip
            else:
                assert info.frames is not None
                ingest_tracking(
                    gallery, rec.id, info.uri, info.frames, embedder, report, camera=name, detector=det,
                    tracker_opts=tracker_opts or {},
                    cropper_opts={"max_crops": crops_per_track, "min_gap_s": min_gap_s},
                    stride=stride, max_frames=max_frames, stream=info.kind == "stream",
                    batch_size=batch_size, commit_interval=commit_interval, progress=progress, stop=stop,
                )  # fmt: skip
    except Exception:
        with contextlib.suppress(Exception):
            gallery.set_source_status(rec.id, "failed")
        raise
    report.seconds = time.perf_counter() - t0
    if report.status == "done":
        gallery.set_source_status(rec.id, "done", fingerprint=info.fingerprint)
    elif report.status == "truncated":
        gallery.set_source_status(rec.id, "failed")
    gallery.save()
    return report
