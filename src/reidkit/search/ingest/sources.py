"""Frame sources for ingest: video files, stream URLs and per-camera image folders.

Every source yields :class:`Frame` objects (BGR uint8 image, camera id, timestamp in seconds,
frame index, source URI). Video time is ``start_time + frame_index / fps`` with the fps read from
the container (``fps=`` overrides it, ``fallback_fps`` is used when the container reports none).
``stride`` keeps every n-th frame and ``start_frame`` resumes part-way through; frame indices
always count frames of the original source, so they stay comparable across stride and resume.

Image folders (frame sequences; folders of photos are read by ``photos.py``) are laid out
``root/<camera>/*.jpg`` (or a single folder of images: one camera named after the folder). Times
come from a sidecar ``root/frames.csv`` / ``root/frames.json`` (or any ``sidecar=`` path) with
``path,camera,timestamp`` rows (relative paths are relative to the sidecar), else from file mtimes,
else (``time_from="order"``) from the file-name order at ``fps`` images per second.

:func:`source_fingerprint` lets re-ingest skip a source that has not changed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SIDECAR_NAMES = ("frames.csv", "frames.json", "timestamps.csv", "timestamps.json")
TimeFrom = Literal["auto", "sidecar", "mtime", "order"]


class SourceError(RuntimeError):
    """A source cannot be opened or read (the message names it)."""


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One decoded frame. ``timestamp`` is in seconds (epoch seconds when the start time is absolute)."""

    image_bgr: np.ndarray
    camera: str
    timestamp: float
    frame_index: int
    source_uri: str


def is_stream_uri(uri: str | os.PathLike[str] | int) -> bool:
    """True for network streams (``rtsp://``, ``http://`` ...) and camera device indices."""
    if isinstance(uri, int):
        return True
    s = str(uri)
    return "://" in s and not s.startswith("file://")


def camera_from_uri(uri: str | os.PathLike[str] | int) -> str:
    """A camera id derived from a source: the file stem, the folder name, or the stream's last path part."""
    if isinstance(uri, int):
        return f"device{uri}"
    s = str(uri)
    if is_stream_uri(s):
        rest = s.split("://", 1)[1].split("?", 1)[0].rstrip("/")
        host, _, path = rest.partition("/")
        host = host.rsplit("@", 1)[-1]  # drop credentials
        name = path.rsplit("/", 1)[-1] if path else host
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "stream"
    p = Path(s.removeprefix("file://"))
    return p.name if p.is_dir() else p.stem


def _as_seconds(t: float | datetime | None) -> float:
    if t is None:
        return 0.0
    if isinstance(t, datetime):
        return t.timestamp()
    return float(t)


def parse_timestamp(value: str | float) -> float:
    """Seconds from a number or an ISO-8601 string (naive times are taken as local time)."""
    if isinstance(value, int | float):
        return float(value)
    s = value.strip()
    try:
        return float(s)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"unparseable timestamp {value!r} (want seconds or ISO 8601)") from None


class _Positions:
    """``positions(start)`` for both readers: ``(frames left to read, or None; iterator of (position, frame))``."""

    stride: int

    def _count(self) -> int | None:
        raise NotImplementedError

    def _iter_from(self, start: int) -> Iterator[tuple[int, Frame]]:
        raise NotImplementedError

    def positions(self, start: int = 0) -> tuple[int | None, Iterator[tuple[int, Frame]]]:
        """From position ``start`` on (a frame index for videos; for folders the position in the
        camera-by-camera frame order): how many frames are left (None: unknown) and the frames."""
        n = self._count()
        left = None if n is None else max(0, -(-(n - start) // self.stride))
        return left, self._iter_from(start)


class VideoSource(_Positions):
    """Frames of a video file, a stream URL or a camera device index, via ``cv2.VideoCapture``.

    ``wall_clock=True`` stamps frames with the time they were read (for live streams) instead of
    ``start_time + frame_index / fps``. A stream ends at its first failed read (reconnecting, e.g.
    with ``start_frame`` = frames seen so far, is up to the caller).
    """

    def __init__(
        self,
        uri: str | os.PathLike[str] | int,
        camera: str | None = None,
        start_time: float | datetime | None = None,
        fps: float | None = None,
        fallback_fps: float = 25.0,
        stride: int = 1,
        start_frame: int = 0,
        max_frames: int | None = None,
        wall_clock: bool = False,
    ) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if start_frame < 0:
            raise ValueError(f"start_frame must be >= 0, got {start_frame}")
        if isinstance(uri, str) and uri.startswith("file://"):
            uri = uri.removeprefix("file://")
        self.uri = uri
        self.uri_str = str(uri)
        self.camera = camera or camera_from_uri(uri)
        self.start_time = _as_seconds(start_time)
        self.stride = stride
        self.start_frame = start_frame
        self.max_frames = max_frames
        self.wall_clock = wall_clock
        self._fps_override = fps
        self._fallback_fps = fallback_fps
        self._fps: float | None = None
        self._frame_count: int | None = None
        self.last_index: int | None = None  # index of the last frame grabbed by the latest iteration

    def _open(self) -> cv2.VideoCapture:
        if not is_stream_uri(self.uri) and not Path(self.uri_str).is_file():
            raise SourceError(f"{self.uri_str}: no such video file")
        cap = cv2.VideoCapture(self.uri if isinstance(self.uri, int) else self.uri_str)
        if not cap.isOpened():
            cap.release()
            kind = "stream" if is_stream_uri(self.uri) else "video file"
            raise SourceError(f"{self.uri_str}: cannot open {kind} (unsupported container/codec or unreachable)")
        container_fps = cap.get(cv2.CAP_PROP_FPS)
        if self._fps_override:
            self._fps = float(self._fps_override)
        elif container_fps and math.isfinite(container_fps) and 0 < container_fps <= 1000:
            self._fps = float(container_fps)
        else:
            log.warning(
                "%s: container reports no usable fps (%s); using %s", self.uri_str, container_fps, self._fallback_fps
            )
            self._fps = float(self._fallback_fps)
        n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self._frame_count = int(n) if n and n > 0 and math.isfinite(n) else None
        return cap

    @property
    def fps(self) -> float:
        """Frames per second used for timestamps (opens the source once to read it)."""
        if self._fps is None:
            self._open().release()
        assert self._fps is not None
        return self._fps

    @property
    def frame_count(self) -> int | None:
        """Frames in the container, when it says (streams: None)."""
        if self._fps is None:
            self._open().release()
        return self._frame_count

    def _seek(self, cap: cv2.VideoCapture) -> None:
        """Position ``cap`` on ``start_frame``: a container seek when it lands exactly, else decode forward."""
        if self.start_frame == 0:
            return
        if not is_stream_uri(self.uri) and cap.set(cv2.CAP_PROP_POS_FRAMES, self.start_frame):
            if round(cap.get(cv2.CAP_PROP_POS_FRAMES)) == self.start_frame:
                return
            cap.release()
            cap.open(self.uri_str)  # inexact seek: start again and skip frame by frame
        for _ in range(self.start_frame):
            if not cap.grab():
                return

    def __iter__(self) -> Iterator[Frame]:
        cap = self._open()
        try:
            self._seek(cap)
            fps = self.fps
            index = self.start_frame
            emitted = 0
            self.last_index = index - 1 if index else None
            while self.max_frames is None or emitted < self.max_frames:
                if not cap.grab():
                    if index == 0:
                        raise SourceError(f"{self.uri_str}: opened, but no frame could be read")
                    break
                self.last_index = index
                if (index - self.start_frame) % self.stride == 0:
                    ok, image = cap.retrieve()
                    if not ok or image is None:
                        if emitted == 0 and index == self.start_frame:
                            raise SourceError(f"{self.uri_str}: cannot decode frame {index}")
                        log.warning("%s: cannot decode frame %d; skipped", self.uri_str, index)
                    else:
                        ts = time.time() if self.wall_clock else self.start_time + index / fps
                        yield Frame(image, self.camera, ts, index, self.uri_str)
                        emitted += 1
                index += 1
        finally:
            cap.release()


    def _count(self) -> int | None:
        return self.frame_count

    def _iter_from(self, start: int) -> Iterator[tuple[int, Frame]]:
        self.start_frame = start
        for f in self:
            yield f.frame_index, f


def natural_key(s: str) -> list[int | str]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def read_sidecar(path: Path, root: Path) -> dict[Path, tuple[str | None, float]]:
    """``{resolved image path: (camera or None, timestamp)}`` from a CSV or JSON sidecar."""
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        rows = data.get("frames", data) if isinstance(data, dict) else data
        if isinstance(rows, dict):  # {"path": timestamp}
            rows = [{"path": k, "timestamp": v} for k, v in rows.items()]
    else:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    out: dict[Path, tuple[str | None, float]] = {}
    for i, row in enumerate(rows):
        try:
            p = Path(str(row["path"]).strip())
            ts = parse_timestamp(row["timestamp"])
        except (KeyError, ValueError, TypeError) as exc:
            raise SourceError(f"{path}: row {i + 1}: want path,camera,timestamp ({exc})") from None
        cam = str(row.get("camera") or "").strip() or None
        out[(p if p.is_absolute() else root / p).resolve()] = (cam, ts)
    return out


class ImageFolderSource(_Positions):
    """Frames from image folders: ``root/<camera>/*.jpg`` (or a single folder of images).

    Frames are yielded camera by camera (sorted by camera id), each camera in time order;
    ``frame_index`` is the position in that camera's time-ordered sequence.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        cameras: list[str] | None = None,
        sidecar: str | os.PathLike[str] | None = None,
        time_from: TimeFrom = "auto",
        fps: float = 1.0,
        start_time: float | datetime | None = None,
        stride: int = 1,
        start_frame: int = 0,
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: no such image folder")
        if stride < 1 or start_frame < 0:
            raise ValueError(f"need stride >= 1 and start_frame >= 0, got {stride}, {start_frame}")
        self.stride, self.start_frame = stride, start_frame
        self.fps, self.start_time = fps, _as_seconds(start_time)
        self.extensions = tuple(e.lower() for e in extensions)
        if sidecar is None:
            sidecar = next((self.root / n for n in SIDECAR_NAMES if (self.root / n).is_file()), None)
        elif not Path(sidecar).is_file():
            raise SourceError(f"{sidecar}: no such sidecar file")
        if time_from == "sidecar" and sidecar is None:
            raise SourceError(f"{self.root}: time_from='sidecar' but no sidecar ({', '.join(SIDECAR_NAMES)})")
        self.time_from: TimeFrom = time_from
        self.sidecar = Path(sidecar) if sidecar is not None else None
        self._times = read_sidecar(self.sidecar, self.sidecar.parent) if self.sidecar and time_from != "order" else {}
        self._layout = self._scan(cameras)

    def _images(self, folder: Path) -> list[Path]:
        return [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in self.extensions]

    def _scan(self, cameras: list[str] | None) -> dict[str, list[Path]]:
        subdirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        layout = {d.name: self._images(d) for d in subdirs}
        layout = {k: v for k, v in layout.items() if v}
        if not layout:  # a single camera folder
            layout = {self.root.name: self._images(self.root)}
        if cameras is not None:
            missing = sorted(set(cameras) - set(layout))
            if missing:
                raise SourceError(f"{self.root}: no images for camera(s) {', '.join(missing)}")
            layout = {c: layout[c] for c in cameras}
        return layout

    @property
    def cameras(self) -> list[str]:
        return sorted(self._layout)

    def timeline(self, camera: str) -> list[tuple[Path, str, float]]:
        """``(path, camera, timestamp)`` for one camera folder, in time order."""
        paths = sorted(self._layout[camera], key=lambda p: natural_key(p.name))
        rows: list[tuple[Path, str, float]] = []
        for i, p in enumerate(paths):
            entry = self._times.get(p.resolve())
            if self.time_from == "order":
                ts = self.start_time + i / self.fps
            elif entry is not None:
                ts = entry[1]
            elif self.time_from == "sidecar":
                raise SourceError(f"{p}: not listed in sidecar {self.sidecar}")
            else:
                ts = p.stat().st_mtime
            rows.append((p, entry[0] if entry and entry[0] else camera, ts))
        order = sorted(range(len(rows)), key=lambda i: (rows[i][2], i))  # stable: name order breaks ties
        return [rows[i] for i in order]

    def iter_camera(self, camera: str) -> Iterator[Frame]:
        for index, (path, cam, ts) in enumerate(self.timeline(camera)):
            if index < self.start_frame or (index - self.start_frame) % self.stride:
                continue
            image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                log.warning("%s: not a readable image; skipped", path)
                continue
            yield Frame(image, cam, ts, index, str(path))

    def __iter__(self) -> Iterator[Frame]:
        for camera in self.cameras:
            yield from self.iter_camera(camera)


    def _count(self) -> int | None:
        return sum(len(self.timeline(c)) for c in self.cameras)

    def _iter_from(self, start: int) -> Iterator[tuple[int, Frame]]:
        offset = 0
        for cam in self.cameras:
            n = len(self.timeline(cam))
            if offset + n > start:
                self.start_frame = max(0, start - offset)
                for f in self.iter_camera(cam):
                    yield offset + f.frame_index, f
            offset += n


def open_source(uri: str | os.PathLike[str] | int, **opts: object) -> VideoSource | ImageFolderSource:
    """An :class:`ImageFolderSource` for a directory, else a :class:`VideoSource` (file, URL or device)."""
    if not isinstance(uri, int) and not is_stream_uri(uri) and Path(str(uri)).is_dir():
        return ImageFolderSource(uri, **opts)  # type: ignore[arg-type]
    return VideoSource(uri, **opts)  # type: ignore[arg-type]


def _file_digest(path: Path, head_bytes: int) -> str:
    st = path.stat()
    h = hashlib.sha1(f"{st.st_size}:{st.st_mtime_ns}:".encode())
    with path.open("rb") as fh:
        h.update(fh.read(head_bytes))
    return h.hexdigest()


def source_fingerprint(uri: str | os.PathLike[str] | int, head_bytes: int = 1 << 20) -> str:
    """A string that changes when the source changes.

    Files: size + mtime + SHA-1 of the first ``head_bytes``. Folders: SHA-1 of the sorted relative
    names and sizes of all files below. Streams have no stable content: the URI itself is returned,
    so callers should not treat an equal fingerprint as "unchanged" for streams.
    """
    if is_stream_uri(uri):
        return f"stream:{uri}"
    path = Path(str(uri).removeprefix("file://"))
    if path.is_file():
        return f"file:{_file_digest(path, head_bytes)}"
    if path.is_dir():
        h = hashlib.sha1()
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(f"{p.relative_to(path).as_posix()}\0{p.stat().st_size}\n".encode())
        return f"dir:{h.hexdigest()}"
    raise SourceError(f"{path}: no such file or folder")


# --- photo folders (read by photos.py) ------------------------------------------------------------------


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def list_photos(folder: str | Path) -> list[Path]:
    """The pictures directly in ``folder`` (not deeper, no hidden files), in natural name order."""
    folder = Path(folder)
    return sorted((p for p in folder.iterdir() if _is_image(p)), key=lambda p: natural_key(p.name))


def camera_folders(root: str | Path) -> list[Path]:
    """The camera folders of ``root``: its subfolders that hold pictures (sorted), plus ``root`` itself
    when pictures lie directly in it; just ``[root]`` when no subfolder holds pictures."""
    root = Path(root)
    subs = [d for d in sorted(root.iterdir(), key=lambda p: natural_key(p.name))
            if d.is_dir() and not d.name.startswith(".") and any(_is_image(p) for p in d.iterdir())]  # fmt: skip
    if not subs:
        return [root]
    return ([root] if any(_is_image(p) for p in root.iterdir()) else []) + subs


def photo_fingerprint(folder: str | Path) -> str:
    """Changes when a picture of ``folder`` is added, removed, renamed or rewritten (names, sizes, mtimes)."""
    h = hashlib.sha1()
    for p in list_photos(folder):
        st = p.stat()
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return f"photos:{h.hexdigest()}"


def find_sidecar(folder: str | Path) -> Path | None:
    """A sidecar in ``folder``, else in the folder above it (the root of a set of camera folders)."""
    folder = Path(folder)
    for d in (folder, folder.parent):
        for n in SIDECAR_NAMES:
            if (d / n).is_file():
                return d / n
    return None


# --- decoding ----------------------------------------------------------------------------------------


# --- what a source is ------------------------------------------------------------------------------------

Kind = Literal["video", "stream", "sequence", "photos", "crops"]


def canonical_uri(uri: str | os.PathLike[str]) -> str:
    """Streams as given; local paths absolute (so re-runs from another folder find the same source)."""
    s = str(uri)
    if is_stream_uri(s):
        return s
    return str(Path(s.removeprefix("file://")).expanduser().absolute())


@dataclass
class SourceInfo:
    """A source as ingest sees it: its canonical ``uri``, what ``kind`` of source it is, its ``camera``,
    ``fps`` (None for photos) and content ``fingerprint``; ``frames`` is the opened frame reader of a
    video, stream or frame sequence (None for photos and crop folders)."""

    uri: str
    kind: Kind
    camera: str
    fps: float | None
    fingerprint: str
    frames: VideoSource | ImageFolderSource | None = None


def describe_source(
    uri: str | os.PathLike[str],
    *,
    camera: str | None = None,
    crops: bool = False,
    sequence: bool = False,
    fps: float | None = None,
    start_time: float | None = None,
    stride: int = 1,
    sidecar: str | os.PathLike[str] | None = None,
) -> SourceInfo:
    """Everything ingest needs to know of a source before it starts (SourceError when it cannot be read).

    A folder is a folder of person crops with ``crops``, a frame sequence with ``sequence``, else a
    folder of photos; anything else is a video file or a stream (opened here: its fps is read).
    """
    uri = canonical_uri(uri)
    stream = is_stream_uri(uri)
    fingerprint = source_fingerprint(uri)  # SourceError when missing
    folder = not stream and Path(uri).is_dir()
    name = camera or camera_from_uri(uri)
    if crops:
        if not folder:
            raise SourceError(f"{uri}: images mode needs a folder of person crops")
        return SourceInfo(uri, "crops", name, fps or 25.0, fingerprint)
    if folder and not sequence:
        if not list_photos(uri):  # a photo source is the pictures directly in its folder
            cams = camera_folders(uri)
            if cams != [Path(uri)]:
                names = ", ".join(c.name for c in cams)
                raise SourceError(f"{uri} holds camera folders ({names}): ingest each one (reidkit ingest does)")
            raise SourceError(f"{uri}: no pictures ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        return SourceInfo(uri, "photos", name, None, photo_fingerprint(uri))
    if folder:
        reader = ImageFolderSource(uri, stride=stride, start_time=start_time, fps=fps or 1.0, sidecar=sidecar)
        return SourceInfo(uri, "sequence", name, None, fingerprint, reader)
    wall = stream and start_time is None
    video = VideoSource(uri, camera=camera, start_time=start_time, fps=fps, stride=stride, wall_clock=wall)
    return SourceInfo(uri, "stream" if stream else "video", name, video.fps, fingerprint, video)


def expand_sources(sources: list[str] | tuple[str, ...], crops: bool = False) -> list[tuple[str, Path | None]]:
    """``reidkit ingest``'s sources as ``(source, sidecar)`` jobs: a folder of camera folders becomes one
    job per camera folder (with the sidecar found for it); SourceError names a source that is not there."""
    jobs: list[tuple[str, Path | None]] = []
    for s in sources:
        p = Path(s.removeprefix("file://"))
        stream = is_stream_uri(s)
        if crops and not p.is_dir():
            raise SourceError(f"{s}: with --images each source must be a folder of person crops")
        if not stream and not p.exists():
            raise SourceError(f"{s}: no such file or folder")
        if p.is_dir() and not crops and not stream:
            jobs += [(str(d), find_sidecar(d)) for d in camera_folders(p)]
        else:
            jobs.append((s, None))
    return jobs
