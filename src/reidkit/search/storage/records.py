"""The gallery's records: what ingest adds (:class:`Sighting`) and what storage gives back (:class:`Record`,
:class:`Hit`, :class:`Track`, :class:`TrackHit`, :class:`Source`, :class:`GalleryOverview`), whatever the
backend."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from urllib.parse import unquote


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


# -- what a client may be told of a source --------------------------------------------------------------
# A parameter name that says it holds a credential: user, password, key, token, secret, signature, session...
SECRET_NAME = re.compile(
    r"(?i)(user|usr|login|pass|pwd|secret|token|key|auth|sig|credential|session|cookie|jwt|bearer)"
)
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()\[\]{},]+")
_ABSOLUTE = re.compile(r"(?<![\w.~/:-])(?:/[^\s'\"<>:;,()\[\]{}]+)+")


def _secret_pair(pair: str) -> bool:
    name = unquote(pair.split("=", 1)[0])
    return bool(SECRET_NAME.search(name))


def redact_uri(uri: str) -> str:
    """A source URI without its credentials, to show or hand out (the gallery keeps the raw one, which ingest
    needs to reconnect): no user or password (``rtsp://user:pass@host`` -> ``rtsp://host``), no query
    parameter whose name says it holds a secret (``apikey``, ``token``, ``password``, ``sig``, ...; the others
    stay, ``channel=1``), the value of such a ``name=value`` in the path masked as ``***`` (cameras that
    take ``/user=admin&password=x/``), no fragment. A local path comes back as it is."""
    if "://" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    rest = rest.split("#", 1)[0]
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    netloc = netloc.rsplit("@", 1)[-1]  # user[:password]@ dropped
    path = re.sub(
        r"((?:^|[/&;?])([^/&;?=]*)=)([^/&;?]*)",
        lambda m: m.group(1) + "***" if SECRET_NAME.search(unquote(m.group(2))) else m.group(0),
        path,
    )
    kept = [p for p in re.split(r"[&;]", query) if p and not _secret_pair(p)]
    return f"{scheme}://{netloc}{slash}{path}" + (f"?{'&'.join(kept)}" if kept else "")


def is_url(uri: str) -> bool:
    """A network source (``rtsp://``, ``http://`` ...), not a local file or folder (``file://`` is local)."""
    return "://" in uri and not uri.startswith("file://")


def public_source(uri: str) -> str:
    """What a client of the search service is told of a source: a stream's URL without credentials
    (:func:`redact_uri`), a local file's or folder's name without the server's folders (``lobby.avi``)."""
    if is_url(uri):
        return redact_uri(uri)
    return PurePosixPath(uri.removeprefix("file://").rstrip("/")).name or uri


def public_path(path: str | None) -> str | None:
    """A file path as a client may see it: a path relative to the gallery folder as it is, any other (an
    absolute path, one that climbs out with ``..``) as its file name."""
    if not path:
        return path
    p = PurePosixPath(path)
    return path if not p.is_absolute() and ".." not in p.parts else p.name


def public_text(text: str, known: dict[str, str] | None = None) -> str:
    """A message with no server path and no credential in it: every ``known`` string (a gallery folder, a
    source URI) replaced by its public form, then every URL redacted (:func:`redact_uri`) and every other
    absolute path shortened to its last part."""
    for raw, shown in sorted((known or {}).items(), key=lambda kv: -len(kv[0])):
        if raw:
            text = text.replace(raw, shown)
    text = _URL.sub(lambda m: redact_uri(m.group(0)), text)
    return _ABSOLUTE.sub(lambda m: PurePosixPath(m.group(0)).name, text)
