"""Live cameras: every stream at once, in real time, for as long as the operator runs it.

Stages (after Frigate NVR and DeepStream, on a small CPU):

1. **read**: one :class:`~reidkit.search.ingest.readers.StreamReader` thread per camera decodes its
   stream and keeps only the newest frame; frames we cannot process are dropped and counted, never
   queued, so lag cannot grow. A camera that drops or refuses its connection is retried with backoff
   while the others go on; the gallery logs when it went offline and came back.
2. **gate**: a frame is detected only when something may be there: the camera has tracks alive, or
   the frame differs from the last detected one (cheap motion check on an 80x60 grey thumbnail), or
   ``idle_s`` passed (a still scene costs one detection every ``idle_s``).
3. **detect**: the due frames of all cameras in one detector call (:func:`detect_batch`). The
   detection rate of each camera adapts to the load by itself: the loop takes the newest frame of each
   camera, so the slower the loop, the more frames are dropped in between, and the tracker carries
   the boxes across (its Kalman filter predicts over the frame-index gap).
4. **track**: a tracker and a crop selection per camera; only the crops a track keeps are embedded.
5. **write**: one writer thread embeds the finished tracks' crops of all cameras in one batch and
   stores them (:meth:`Gallery.add`) every ``commit_interval`` seconds, so ``reidkit serve`` on the
   same gallery shows them within seconds and a kill -9 loses at most that much.

Stopping (``stop`` set, e.g. by SIGINT/SIGTERM, or ``duration`` over): the readers stop, every open
track is closed and its crops stored, and each camera is marked ``stopped`` (``failed`` when it never
delivered a frame). Re-running appends: a live stream has no end to resume from.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from reidkit.embed import FeatureExtractor
from reidkit.search.ingest.crops import TrackCropper, TrackCrops
from reidkit.search.ingest.detect import Detection, Detector, detect_batch
from reidkit.search.ingest.readers import LiveFrame, ReaderOptions, StreamReader
from reidkit.search.ingest.report import IngestReport, Progress, ProgressFn
from reidkit.search.ingest.track import Tracker
from reidkit.search.storage import Gallery, Sighting
from reidkit.search.storage.records import redact_uri

log = logging.getLogger(__name__)

THUMB = (80, 60)  # motion check resolution
MOTION_PIXEL = 18  # grey levels a thumbnail pixel must change by to count as moving
LAG_WINDOW = 50  # detections per camera over which the first and the latest lag are averaged
MOTION_SHARE = 0.002  # share of moving thumbnail pixels that makes a frame worth detecting


@dataclass
class CameraRun:
    """One live camera's state in a run: its reader, tracker, crop selection and counters."""

    name: str
    uri: str
    source_id: int
    reader: StreamReader
    tracker: Tracker
    cropper: TrackCropper
    id_base: int
    report: IngestReport
    thumb: np.ndarray | None = None
    last_detect: float = 0.0
    gated: int = 0
    first_lags: list[float] = field(default_factory=list)  # the first LAG_WINDOW lags of the run
    last_lags: deque[float] = field(default_factory=lambda: deque(maxlen=LAG_WINDOW))
    lag_sum: float = 0.0
    max_lag: float = 0.0

    def due(self, frame: LiveFrame, idle_s: float) -> bool:
        """Whether ``frame`` is worth a detection (see the module docstring, stage 2)."""
        small = cv2.resize(cv2.cvtColor(frame.image_bgr, cv2.COLOR_BGR2GRAY), THUMB, interpolation=cv2.INTER_AREA)
        moving = self.thumb is None or np.mean(cv2.absdiff(small, self.thumb) > MOTION_PIXEL) >= MOTION_SHARE
        if moving or self.tracker.tracks or frame.timestamp - self.last_detect >= idle_s:
            self.thumb = small
            return True
        self.gated += 1
        return False

    def step(self, frame: LiveFrame, detections: list[Detection], now: float) -> list[tuple[int, TrackCrops]]:
        """Track ``detections`` of ``frame``; returns the tracks that ended, with their global track ids."""
        self.last_detect = frame.timestamp
        lag = now - frame.timestamp
        if len(self.first_lags) < LAG_WINDOW:
            self.first_lags.append(lag)
        self.last_lags.append(lag)
        self.lag_sum += lag
        self.max_lag = max(self.max_lag, lag)
        self.report.frames += 1
        self.report.detections += len(detections)
        for tb in self.tracker.update(detections, frame.index):
            self.cropper.add(tb.track_id, frame.image_bgr, tb.box, tb.score, frame.timestamp, frame.index)
        self.tracker.finished()
        return self._ended(self.cropper.pop_finished(self.tracker.active_ids))

    def close(self) -> list[tuple[int, TrackCrops]]:
        self.tracker.flush()
        return self._ended(self.cropper.flush())

    def _ended(self, done: list[TrackCrops]) -> list[tuple[int, TrackCrops]]:
        return [(self.id_base + tc.track_id, tc) for tc in done if tc.crops]

    def live_stats(self) -> dict[str, Any]:
        s, n = self.reader.stats, self.report.frames
        return {
            "read": s.read, "dropped": s.dropped, "capped": s.capped, "gated": self.gated,
            "detected": self.report.frames, "crops": self.report.crops, "tracks": self.report.tracks,
            "mean_lag_s": round(self.lag_sum / n, 3) if n else None, "max_lag_s": round(self.max_lag, 3),
            "first_lag_s": round(float(np.mean(self.first_lags)), 3) if n else None,  # mean of the first LAG_WINDOW
            "last_lag_s": round(float(np.mean(self.last_lags)), 3) if n else None,  # mean of the last LAG_WINDOW
            "offline_s": round(s.offline_s, 1), "reconnects": s.reconnects, "read_errors": s.errors,
        }  # fmt: skip


class _Writer(threading.Thread):
    """The one gallery writer: embeds the ended tracks' crops of every camera in one batch and stores them."""

    def __init__(self, gallery: Gallery, embedder: FeatureExtractor, batch_size: int, interval: float) -> None:
        super().__init__(name="gallery-writer", daemon=True)
        self.gallery, self.embedder, self.batch_size, self.interval = gallery, embedder, batch_size, interval
        self.inbox: queue.Queue[tuple[CameraRun, int, TrackCrops] | None] = queue.Queue()
        self.error: BaseException | None = None
        self.max_backlog = 0

    def run(self) -> None:
        pending: list[tuple[CameraRun, int, TrackCrops]] = []
        last = time.monotonic()
        done = False
        while not done:
            try:
                item = self.inbox.get(timeout=0.2)
                if item is None:
                    done = True
                else:
                    pending.append(item)
            except queue.Empty:
                pass
            self.max_backlog = max(self.max_backlog, self.inbox.qsize())
            n = sum(len(tc.crops) for _, _, tc in pending)
            if pending and (done or n >= self.batch_size or time.monotonic() - last >= self.interval):
                try:
                    self._store(pending)
                except BaseException as exc:  # keep the run going; the caller reports it
                    log.exception("gallery writer: could not store %d tracks", len(pending))
                    self.error = exc
                pending, last = [], time.monotonic()

    def _store(self, pending: Sequence[tuple[CameraRun, int, TrackCrops]]) -> None:
        items = [(cam, gid, c) for cam, gid, tc in pending for c in tc.crops]
        feats = self.embedder.embed([c.image_bgr for _, _, c in items], bgr=True)
        sightings = []
        for cam, gid, c in items:
            crop = self.gallery.save_crop(c.image_bgr, cam.source_id, f"{gid:06d}_{c.frame_index:07d}")
            sightings.append(Sighting(cam.uri, c.timestamp, camera=cam.name, frame=c.frame_index, box=c.box,
                                      track_id=gid, crop=crop, quality=c.quality))  # fmt: skip
        self.gallery.add(feats, sightings)
        for cam, _, tc in pending:
            cam.report.tracks += 1
            cam.report.crops += len(tc.crops)


@dataclass(frozen=True)
class LiveOptions:
    """How a live run behaves: ``tracker`` options, crops kept per track and their spacing, ``idle_s``
    between detections of a still scene, crops per embedding batch, seconds between commits, and the
    readers' timeouts and backoff."""

    tracker: dict[str, Any] = field(default_factory=dict)
    crops_per_track: int = 4
    min_gap_s: float = 0.5
    idle_s: float = 2.0
    batch_size: int = 64
    commit_interval: float = 2.0
    reader: ReaderOptions = field(default_factory=ReaderOptions)


class LiveIngest:
    """Ingest ``cameras`` (``(name, uri, fps, transport)`` each) into ``gallery`` until stopped; see the
    module docstring. :meth:`run` returns one :class:`IngestReport` per camera (``live`` holds its
    per-stage figures)."""

    def __init__(
        self,
        gallery: Gallery,
        cameras: Sequence[Any],
        embedder: FeatureExtractor,
        detector: Detector,
        options: LiveOptions | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        o = self.options = options or LiveOptions()
        self.gallery, self.embedder, self.detector, self.progress = gallery, embedder, detector, progress
        self.writer = _Writer(gallery, embedder, o.batch_size, o.commit_interval)
        self.events: queue.Queue[tuple[int, str, str, float]] = queue.Queue()
        self.cams = [self._camera(c) for c in cameras]

    def _camera(self, c: Any) -> CameraRun:
        """Register camera ``c`` (name, uri, fps, transport) and set up its stages."""
        o, g = self.options, self.gallery
        rec, _ = g.register(c.uri, c.name, c.fps, f"stream:{c.uri}", live=True)
        g.set_source_status(rec.id, "ingesting")

        def on_event(kind: str, detail: str, sid: int = rec.id) -> None:
            self.events.put((sid, kind, detail, time.time()))

        transport = getattr(c, "transport", "udp")
        reader = StreamReader(c.name, c.uri, fps=c.fps, transport=transport, options=o.reader, on_event=on_event)
        cropper = TrackCropper(max_crops=o.crops_per_track, min_gap_s=o.min_gap_s, camera=c.name)
        report = IngestReport(c.uri, c.name, rec.id, "ingesting", mode="live")
        return CameraRun(c.name, c.uri, rec.id, reader, Tracker(**o.tracker), cropper, g.max_track_id(rec.id), report)

    def _log_events(self) -> None:
        while True:
            try:
                sid, kind, detail, at = self.events.get_nowait()
            except queue.Empty:
                return
            self.gallery.log_event(sid, kind, detail, at)

    def _tell(self, final: bool = False) -> None:
        if self.progress is None:
            return
        for cam in self.cams:
            s = cam.live_stats()
            state = "" if cam.reader.stats.connected else " offline"
            lag = "-" if s["mean_lag_s"] is None else f"{s['mean_lag_s']:.2f}s"
            info = (f"det {s['detected']:,} drop {s['dropped']:,} gated {s['gated']:,} tracks {s['tracks']:,} "
                    f"crops {s['crops']:,} lag {lag}{state}")  # fmt: skip
            self.progress(Progress(cam.name, s["read"], None, "frames", info, final))

    def run(self, stop: threading.Event, duration: float | None = None) -> list[IngestReport]:
        """Ingest until ``stop`` is set or ``duration`` seconds passed; then close everything cleanly."""
        t0 = time.time()
        deadline = None if duration is None else time.monotonic() + duration
        self.writer.start()
        for cam in self.cams:
            cam.reader.start()
        last_tell = 0.0
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                self._log_events()
                batch = [(cam, f) for cam in self.cams if (f := cam.reader.take()) is not None]
                batch = [(cam, f) for cam, f in batch if cam.due(f, self.options.idle_s)]
                if batch:
                    found = detect_batch(self.detector, [f.image_bgr for _, f in batch])
                    now = time.time()
                    for (cam, f), dets in zip(batch, found, strict=True):
                        for gid, tc in cam.step(f, dets, now):
                            self.writer.inbox.put((cam, gid, tc))
                else:
                    stop.wait(0.005)
                if time.monotonic() - last_tell >= 0.5:
                    self._tell()
                    last_tell = time.monotonic()
        finally:
            self._finish(t0)
        return [cam.report for cam in self.cams]

    def _finish(self, t0: float) -> None:
        for cam in self.cams:
            cam.reader.stop()
        for cam in self.cams:
            for gid, tc in cam.close():
                self.writer.inbox.put((cam, gid, tc))
        self.writer.inbox.put(None)
        self.writer.join()
        for cam in self.cams:
            cam.reader.join(timeout=2.0)
        self._log_events()
        now = time.time()
        for cam in self.cams:
            rep = cam.report
            rep.seconds = now - t0
            rep.live = cam.live_stats()
            if cam.reader.stats.ever_connected:
                rep.status = "stopped"
                self.gallery.set_source_status(cam.source_id, "stopped")
                self.gallery.log_event(cam.source_id, "stopped", f"{rep.frames:,} frames detected", now)
            else:
                rep.status = "failed"
                why = cam.reader.stats.last_error or "cannot connect"
                tries = cam.reader.stats.reconnects
                rep.message = f"{redact_uri(cam.uri)}: could not be read ({why}; retried {tries} times)"
                self.gallery.set_source_status(cam.source_id, "failed")
        if self.writer.error is not None:
            for cam in self.cams:
                cam.report.message = cam.report.message or f"storing sightings failed: {self.writer.error}"
        self.gallery.save()
        self._tell(final=True)
