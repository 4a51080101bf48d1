"""What an ingest run tells its caller: :class:`Progress` while it runs (to a callback, so the library
draws nothing: the CLI turns it into a progress bar) and an :class:`IngestReport` when it ends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Progress:
    """One step of a running ingest: ``done`` of ``total`` (None: unknown, e.g. a live stream) ``unit``
    (frames, photos, images) of the source ``label``; ``info`` is a short status line."""

    label: str
    done: int
    total: int | None
    unit: str
    info: str = ""
    final: bool = False


ProgressFn = Callable[[Progress], None]


@dataclass
class IngestReport:
    """What one ingest of one source did.

    ``status``: ``done`` (the whole source is in the gallery), ``partial`` (stopped at
    ``max_frames``; a re-run continues), ``skipped`` (unchanged and already done) or ``truncated``
    (a video that ended well before the frame count its container announces: what could be read is
    in the gallery, the source is marked failed, and a re-run tries again).
    ``frames`` / ``detections`` / ``tracks`` / ``crops`` count this run's work only (photos: pictures
    ingested, people detected, and one track and crop per person). ``mode`` is ``video``, ``stream``,
    ``sequence``, ``photos`` or ``crops``; for photos ``already`` counts pictures already in the
    gallery, ``unreadable`` names the pictures skipped, and ``time_from`` says where the times came
    from (``exif``, ``sidecar``, ``pattern``, ``mtime`` or a mix such as ``exif 12, mtime 1``); for a
    video (:func:`explain_times`) ``video offset`` when its times are seconds into it (no start time
    given: not dates), else ``start + frame/fps``. ``warnings`` are things to tell the operator about
    the times (a folder whose pictures were all modified within a minute: the time they were copied).
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
    warnings: list[str] = field(default_factory=list)
    message: str | None = None
    live: dict[str, Any] | None = None  # a live camera's per-stage figures (read, dropped, gated, lag...)

    def row(self) -> dict[str, str]:
        """The report as a table row: source, camera, status (with what happened), where the times come
        from, and the counts."""
        status = self.status + (f" {self.mode}" if self.mode in ("photos", "sequence") else "")
        status += f" (resumed after {self.resumed_from})" if self.resumed_from is not None else ""
        status += " (replaced)" if self.replaced else ""
        status += f" ({self.already:,} already in)" if self.already else ""
        status += f" ({len(self.unreadable)} unreadable)" if self.unreadable else ""
        clock = {"photos": "-", "stream": "clock", "live": "clock"}
        times = self.time_from or clock.get(self.mode, "start + frame/fps")
        return {
            "source": self.uri if self.mode in ("stream", "live") else Path(self.uri).name,
            "camera": self.camera,
            "status": status,
            "times": times,
            "frames": f"{self.frames:,}",
            "dets": f"{self.detections:,}",
            "tracks": f"{self.tracks:,}",
            "crops": f"{self.crops:,}",
            "s": f"{self.seconds:.1f}",
            "frames/s": f"{self.fps:.1f}",
        }

    @property
    def fps(self) -> float:
        """Frames (images in images mode) processed per second."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


VIDEO_OFFSET = "video offset"  # a video's times without a start time: seconds into it, not dates


def explain_times(reports: list[IngestReport], start_time: float | None) -> list[str]:
    """Say how the times of ``reports`` were made, and what to warn about: a video file ingested without
    ``start_time`` gets ``time_from = "video offset"`` (its times are seconds into it, 0:00 = its first
    frame, so they are not dates and do not line up with other cameras) and a warning that suggests
    ``--start-time``; each report's own ``warnings`` follow. Returns the warnings, one line each."""
    out = []
    for r in reports:
        if r.mode == "video" and r.status != "skipped":
            if start_time is None:
                r.time_from = VIDEO_OFFSET
                out.append(
                    f"{Path(r.uri).name}: times are offsets into the video (0:00 = its first frame), not dates, so "
                    "they do not line up with other cameras; give the time of its first frame to date them: "
                    "reidkit ingest --replace --start-time 2026-11-24T08:00:00 (ISO 8601; naive = UTC) "
                    f"{Path(r.uri).name}"
                )
            else:
                r.time_from = "start + frame/fps"
        out += r.warnings
    return out
