"""The gallery's records: what ingest adds (:class:`Sighting`) and what storage gives back (:class:`Record`,
:class:`Hit`, :class:`Track`, :class:`TrackHit`, :class:`Source`, :class:`GalleryOverview`), whatever the
backend."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime


class GalleryError(ValueError):
    """A gallery cannot be opened or used as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class Sighting:
    """One person crop to add: where and when it was seen.

    ``source`` is a source uri (registered with :meth:`Gallery.add_source`, or registered on the fly
    when ``camera`` is given); ``camera`` defaults to the source's. ``timestamp`` is seconds (e.g.
    Unix time or seconds into the video) or an ISO-8601 string (naive means UTC). ``box`` is
    ``(x1, y1, x2, y2)`` in frame pixels; ``track_id`` is the tracker's id, unique within the source;
    ``crop`` is the crop file's path relative to the gallery folder (see :meth:`Gallery.save_crop`).
    """

    source: str
    timestamp: float | str | datetime
    camera: str | None = None
    frame: int | None = None
    box: tuple[int, int, int, int] | None = None
    track_id: int | None = None
    crop: str | None = None
    quality: float | None = None


@dataclass(frozen=True)
class Record:
    """A stored detection."""

    id: int
    source_id: int
    source: str
    camera: str
    timestamp: float
    frame: int | None
    box: tuple[int, int, int, int] | None
    track_id: int | None
    crop: str | None
    quality: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row | tuple, **extra: float) -> Record:
        box = None if row[6] is None else (int(row[6]), int(row[7]), int(row[8]), int(row[9]))
        return cls(row[0], row[1], row[2], row[3], row[4], row[5], box, row[10], row[11], row[12], **extra)


@dataclass(frozen=True)
class Hit(Record):
    """A search result: a stored detection and its cosine similarity to the query."""

    score: float


@dataclass(frozen=True)
class Track:
    """A stored track: a tracker id within a source, with the span and number of its crops."""

    id: int
    source_id: int
    source: str
    track_id: int
    camera: str
    first_time: float
    last_time: float
    n_crops: int

    @classmethod
    def from_row(cls, row: sqlite3.Row | tuple, **extra: float) -> Track:
        return cls(*row, **extra)


@dataclass(frozen=True)
class TrackHit(Track):
    """A track-level search result."""

    score: float


@dataclass(frozen=True)
class Source:
    """An ingested source (video file, stream or image folder) and how far its ingest got."""

    id: int
    uri: str
    camera: str
    fps: float | None
    fingerprint: str | None
    status: str
    progress: float | None
    created: float
    updated: float


def to_seconds(value: float | int | str | datetime) -> float:
    """Seconds from a number, a ``datetime`` or an ISO-8601 string (naive values are taken as UTC)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise GalleryError(f"timestamp {value!r} is neither seconds nor an ISO-8601 date-time") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    try:
        return float(value)
    except (TypeError, ValueError):
        raise GalleryError(f"timestamp {value!r} is neither seconds nor an ISO-8601 date-time") from None


@dataclass(frozen=True)
class Photo:
    """A photo-folder picture in the gallery's ledger (written with its sightings, in one transaction):
    its ``frame`` number in the source (the sightings' ``frame``), file ``name``, content ``digest``,
    ``size`` and ``mtime_ns``, its time and where that came from, and how many people it held."""

    source_id: int
    frame: int
    name: str
    digest: str
    size: int
    mtime_ns: int
    timestamp: float
    time_from: str
    detections: int


@dataclass
class PhotoLedger:
    """What a gallery already holds of a photo source: the content digests and ``name -> (size, mtime_ns)``
    of its pictures, and the next free frame number and track id."""

    digests: set[str]
    stats: dict[str, tuple[int, int]]
    next_frame: int
    next_track: int


@dataclass(frozen=True)
class CameraCount:
    """A camera's detections and tracks, and the times of its first and last detection."""

    camera: str
    sightings: int
    tracks: int
    first_time: float
    last_time: float


@dataclass(frozen=True)
class SourceCount:
    """A source with its numbers of detections and tracks."""

    source: Source
    sightings: int
    tracks: int


@dataclass(frozen=True)
class GalleryOverview:
    """What ``Gallery.overview`` gives: per camera and per source, the number of tracks, the detections in
    the search index now (``searchable``) and the ``recent`` ones added last."""

    cameras: list[CameraCount]
    sources: list[SourceCount]
    tracks: int
    searchable: int
    recent: list[Record]

    @property
    def sightings(self) -> int:
        return sum(c.sightings for c in self.cameras)

    @property
    def time_span(self) -> tuple[float | None, float | None]:
        """The first and last detection times (None, None for an empty gallery)."""
        return min((c.first_time for c in self.cameras), default=None), max(
            (c.last_time for c in self.cameras), default=None
        )


@dataclass(frozen=True)
class SourceEvent:
    """Something that happened to a (live) source: ``online``, ``offline`` (``detail`` says why),
    ``stopped`` or ``error``, at ``time`` (Unix seconds)."""

    source_id: int
    time: float
    event: str
    detail: str = ""
