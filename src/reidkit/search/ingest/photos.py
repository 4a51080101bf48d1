"""Photo folders: full-scene still pictures in which every person detected is a sighting.

A folder of full-scene pictures (a photo album, a snapshot camera that saves a picture every few
seconds or on motion) is not a video: two pictures may be a second or a day apart, and a tracker
that must see a person in several consecutive frames before it trusts them never confirms most
people in it. So a folder is read as **photos** by default: every picture is detected on its own and
every person found (after the detector's score, size and aspect filters) becomes a sighting with its
own crop, box, frame and a one-crop track, so search by track, clustering and the reports treat it
like any other. A real frame sequence (a video exported as pictures, frames a fraction of a second
apart) is tracked instead: ``ingest(..., sequence=True)`` / ``reidkit ingest --sequence``. The choice
is explicit rather than guessed from time gaps: a snapshot camera that saves bursts one second apart
is still better served by photos (a burst is too short for a tracker to confirm anyone in).

Cameras: :func:`camera_folders` reads a folder whose subfolders hold pictures as a set of cameras,
one subfolder per camera, each its own source (pictures directly in the top folder are one more
camera, named after it). A photo source is the pictures directly in its folder (not deeper).

Times, for each picture, from the first of:

1. a sidecar (``frames.csv`` / ``frames.json`` / ``timestamps.*`` in the folder or the folder above
   it, rows ``path,camera,timestamp``; see ``sources.py``);
2. EXIF ``DateTimeOriginal`` (else ``DateTimeDigitized``), with ``SubSecTimeOriginal`` and
   ``OffsetTimeOriginal`` when present; without an offset the time is local time, as cameras write it;
3. the file name, with ``time_format`` (``--time-pattern``): a :func:`time.strptime` format found
   anywhere in the name, e.g. ``IMG_%Y%m%d_%H%M%S`` for ``IMG_20240105_101502.jpg`` (local time);
4. the file's modification time. When every picture of a run timed this way was modified within
   ``SAME_MTIME_S`` of the others, that is the time they were copied, not taken: the report warns
   (:attr:`IngestReport.warnings`).

Each picture's basis is kept in the gallery's ``photos`` ledger, so the ingest report and the search
results say which one each source used (:meth:`Gallery.time_bases`).

Re-runs: the ledger holds every ingested picture's content digest (SHA-1), written in the same
transaction as its sightings. A re-run on the same folder (after a kill, or once pictures were
added) ingests only pictures whose content is not in the ledger, so nothing is added twice (a copy
of an ingested picture under another name is recognised and skipped too); a file whose name, size
and modification time match the ledger is not even read again. Pictures deleted from the folder keep
their sightings. An unreadable or corrupt picture is skipped with a warning that names it, counted
in the report, and retried by the next run; nothing of it reaches the gallery.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from reidkit.embed import FeatureExtractor
from reidkit.imaging import PhotoError, decode_photo
from reidkit.search.ingest.crops import CropQuality, clip_box
from reidkit.search.ingest.detect import Detector
from reidkit.search.ingest.report import IngestReport, Progress, ProgressFn
from reidkit.search.ingest.sources import SourceError, find_sidecar, list_photos, read_sidecar
from reidkit.search.storage import Gallery, Sighting
from reidkit.search.storage.records import Photo

log = logging.getLogger(__name__)

CROP_PAD = 0.05  # as the tracking path's crops
SAME_MTIME_S = 60.0  # pictures timed by their mtime, all modified within this: copied, not taken, at that time


# --- times -------------------------------------------------------------------------------------------

_DIRECTIVES = {
    "Y": r"\d{4}", "y": r"\d{2}", "m": r"\d{1,2}", "d": r"\d{1,2}", "H": r"\d{1,2}", "I": r"\d{1,2}",
    "M": r"\d{1,2}", "S": r"\d{1,2}", "f": r"\d{1,6}", "j": r"\d{1,3}", "p": r"(?:AM|PM|am|pm)",
    "b": r"[A-Za-z]{3}", "B": r"[A-Za-z]+", "z": r"[+-]\d{4}", "%": "%",
}  # fmt: skip


def _format_regex(fmt: str) -> re.Pattern[str]:
    """A regex matching what ``strptime(fmt)`` accepts (fixed-width fields where the format has them)."""
    out, i = [], 0
    while i < len(fmt):
        c = fmt[i]
        if c == "%":
            if i + 1 >= len(fmt) or fmt[i + 1] not in _DIRECTIVES:
                raise ValueError(f"time pattern {fmt!r}: unsupported directive {fmt[i : i + 2]!r}")
            d = fmt[i + 1]
            nxt = fmt[i + 2 : i + 3]
            # packed digits (%Y%m%d): two-digit fields must take exactly two digits
            rx = _DIRECTIVES[d]
            if rx == r"\d{1,2}" and (nxt == "%" or (i > 0 and fmt[i - 1].isalnum())):
                rx = r"\d{2}"
            out.append(rx)
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out))


@dataclass(frozen=True)
class TimePattern:
    """A :func:`time.strptime` format searched for in file names (``IMG_%Y%m%d_%H%M%S``)."""

    fmt: str

    def __post_init__(self) -> None:
        if "%" not in self.fmt:
            raise ValueError(f"time pattern {self.fmt!r} has no strftime directive (e.g. %Y%m%d_%H%M%S)")
        _format_regex(self.fmt)

    def parse(self, name: str) -> float | None:
        """Seconds (naive: local time) from the first part of ``name`` in this format, else None."""
        for m in _format_regex(self.fmt).finditer(name):
            try:
                return datetime.strptime(m.group(0), self.fmt).timestamp()
            except ValueError:
                continue
        return None


class PhotoClock:
    """Times of one folder's pictures: sidecar, else EXIF, else the name pattern, else the mtime."""

    def __init__(self, folder: str | Path, sidecar: str | Path | None = None, pattern: str | None = None) -> None:
        folder = Path(folder)
        side = Path(sidecar) if sidecar is not None else find_sidecar(folder)
        if sidecar is not None and not side.is_file():  # type: ignore[union-attr]
            raise SourceError(f"{sidecar}: no such sidecar file")
        self.sidecar = side
        self._times = read_sidecar(side, side.parent) if side is not None else {}
        self.pattern = TimePattern(pattern) if pattern else None

    def time_of(self, path: Path, exif_time: float | None) -> tuple[float, str]:
        """``(seconds, basis)``; basis one of ``sidecar``, ``exif``, ``pattern``, ``mtime``."""
        entry = self._times.get(path.resolve())
        if entry is not None:
            return entry[1], "sidecar"
        if exif_time is not None:
            return exif_time, "exif"
        if self.pattern is not None and (t := self.pattern.parse(path.name)) is not None:
            return t, "pattern"
        return path.stat().st_mtime, "mtime"


# --- ingest ------------------------------------------------------------------------------------------


def ingest_photos(
    gallery: Gallery,
    sid: int,
    folder: str | Path,
    embedder: FeatureExtractor,
    detector: Detector,
    report: IngestReport,
    *,
    camera: str,
    clock: PhotoClock,
    batch_size: int = 64,
    max_photos: int | None = None,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Detect the people in every picture of ``folder`` not yet in the ledger and add each as a sighting.

    Pictures are committed whole: their sightings, features, one-crop tracks and ledger rows in one
    transaction per batch of about ``batch_size`` crops. ``report`` gets the counts.
    """
    folder = Path(folder)
    ledger = gallery.photo_ledger(sid)
    paths = list_photos(folder)
    quality = CropQuality()
    uri = report.uri
    crops: list[np.ndarray] = []
    sightings: list[Sighting] = []
    photos_rows: list[Photo] = []

    def tell(final: bool = False) -> None:
        if progress is not None:
            done = report.frames + report.already + len(report.unreadable)
            progress(Progress(folder.name, done, len(paths), "photos", f"people {report.detections}", final))
    bases: dict[str, int] = {}
    seen: set[str] = set()
    mtimes: list[float] = []  # of the pictures timed by their modification time

    def flush() -> None:
        if not photos_rows:
            return
        feats = embedder.embed(crops, bgr=True) if crops else np.zeros((0, 1), np.float32)
        gallery.add(feats, list(sightings), progress=float(ledger.next_frame - 1), source=sid, photos=list(photos_rows))
        report.crops += len(sightings)
        report.tracks += len(sightings)
        crops.clear()
        sightings.clear()
        photos_rows.clear()

    processed = 0
    try:
        for path in paths:
            tell()
            if (max_photos is not None and processed >= max_photos) or (stop is not None and stop.is_set()):
                report.status = "partial"
                break
            try:
                st = path.stat()
                if ledger.stats.get(path.name) == (st.st_size, st.st_mtime_ns):
                    report.already += 1
                    continue
                data = path.read_bytes()
            except OSError as exc:
                _skip(report, path, f"cannot read ({exc.strerror or exc})")
                continue
            digest = hashlib.sha1(data).hexdigest()
            if digest in ledger.digests or digest in seen:
                report.already += 1
                continue
            try:
                photo = decode_photo(data, path)
            except PhotoError as exc:
                _skip(report, path, str(exc).split(": ", 1)[-1])
                continue
            ts, basis = clock.time_of(path, photo.exif_time)
            bases[basis] = bases.get(basis, 0) + 1
            if basis == "mtime":
                mtimes.append(ts)
            image = photo.image_bgr
            dets = detector.detect(image)
            frame = ledger.next_frame
            for k, d in enumerate(dets):
                box = clip_box(d.box, image.shape, CROP_PAD)
                crop_name = f"p{frame:07d}_{k:03d}"
                rel = gallery.save_crop(image, sid, crop_name, box=box)
                crops.append(image[box[1] : box[3], box[0] : box[2]])
                sightings.append(
                    Sighting(uri, ts, camera=camera, frame=frame, box=box, track_id=ledger.next_track, crop=rel,
                             quality=quality(image, d.box, d.score))
                )  # fmt: skip
                ledger.next_track += 1
            photos_rows.append(Photo(sid, frame, path.name, digest, st.st_size, st.st_mtime_ns, ts, basis, len(dets)))
            seen.add(digest)
            ledger.next_frame += 1
            processed += 1
            report.frames += 1
            report.detections += len(dets)
            if len(crops) >= batch_size or len(photos_rows) >= 4 * batch_size:
                flush()
        flush()
    finally:
        tell(final=True)
    report.time_from = ", ".join(f"{k} {n}" for k, n in sorted(bases.items(), key=lambda kv: -kv[1]))
    if len(bases) == 1:
        report.time_from = next(iter(bases))
    if warning := same_mtime_warning(folder.name, mtimes):
        report.warnings.append(warning)


def same_mtime_warning(name: str, mtimes: list[float]) -> str | None:
    """A warning when two or more pictures timed by their modification time were all modified within
    :data:`SAME_MTIME_S` of each other (a copied folder: every picture then reads the time of the copy)."""
    if len(mtimes) < 2 or max(mtimes) - min(mtimes) > SAME_MTIME_S:
        return None
    when = datetime.fromtimestamp(min(mtimes), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"{name}: the {len(mtimes)} pictures without EXIF times were all modified within "
        f"{max(mtimes) - min(mtimes):.0f} s of each other (around {when}): that is when they were copied, not taken, "
        "so their times cannot be trusted; give their times in a sidecar (frames.csv: path,camera,timestamp) "
        "or from their file names (--time-pattern, e.g. 'IMG_%Y%m%d_%H%M%S'), then re-ingest with --replace"
    )


def _skip(report: IngestReport, path: Path, why: str) -> None:
    log.warning("%s: %s; skipped", path, why)
    report.unreadable.append(path.name)
