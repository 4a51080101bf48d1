"""The application API: what the CLI (:mod:`reidkit.cli`) and the HTTP service (:mod:`reidkit.service`)
both call. A command or a route parses its input, calls one function here and words the answer.

* :func:`load_model`: the one model loader (an embedder for pictures, or only the model's identity
  for its calibrated match rule).
* :func:`plan_ingest` / :func:`run_ingest`: ``reidkit ingest``'s sources checked and expanded, then
  ingested into one gallery.
* :class:`SearchRequest` and :func:`search`: a person search, checked once (``reidkit search`` and
  ``POST /search`` both build one), then run.
* :func:`gallery_overview`, :func:`track_detail`, :func:`sighting_detail`, :func:`sighting_crop`,
  :func:`sighting_frame`: what a gallery holds, by id (``GET /gallery``, ``/tracks``, ``/sightings``, ...),
  as a client may see it: sources by their public form (a file's name, a stream's URL without
  credentials: :func:`reidkit.search.storage.records.public_source`), no server path.
* Errors: :class:`ApiError` (bad input: the message says why), with :class:`RequestError` (options that
  do not hold together), :class:`NotFound` (no such id) and :class:`EmptyGallery` (nothing to search).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from reidkit.search.query.search import SearchResult
    from reidkit.search.storage.gallery import Gallery
    from reidkit.search.storage.records import Record

Backend = Literal["torch", "onnx", "openvino", "openvino-int8"]
BACKENDS: tuple[Backend, ...] = ("torch", "onnx", "openvino", "openvino-int8")  # INT8: the model's shipped QDQ file


class ApiError(ValueError):
    """A request that cannot be served as asked; the message says why (and names the file)."""


# --- models ------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A re-id model for search and ingest: its ``embedder`` (None when only its identity was needed)
    and ``info`` (:class:`reidkit.models.zoo.ModelInfo`; None: no shipped model, default match rule)."""

    embedder: Any
    info: Any


def load_model(
    model: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    *,
    backend: str = "torch",
    embedder: bool = True,
    batch_size: int = 32,
    threads: int | None = None,
) -> LoadedModel:
    """The model named by ``model`` / ``weights`` (default: the shipped one) as an embedder on ``backend``
    (``embedder=False``: only its identity, which picks its calibrated match rule). ApiError otherwise."""
    from reidkit.extract import make_embedder
    from reidkit.imaging import ImageError
    from reidkit.models.weights import WeightsMismatchError
    from reidkit.models.zoo import load_model as zoo_load

    if backend not in BACKENDS:
        raise ApiError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    try:
        if embedder:
            emb, info = make_embedder(model, weights, backend, batch_size=batch_size, threads=threads)  # type: ignore[arg-type]
            return LoadedModel(emb, info)
        if model is None and weights is None:
            try:
                return LoadedModel(None, zoo_load()[1])
            except FileNotFoundError:
                return LoadedModel(None, None)  # no shipped model: the default threshold applies
        return LoadedModel(None, zoo_load(model, weights)[1])
    except (FileNotFoundError, ValueError, WeightsMismatchError, ImageError) as exc:
        raise ApiError(str(exc)) from None


# --- ingest ------------------------------------------------------------------------------------------


@dataclass
class IngestPlan:
    """What ``reidkit ingest`` will do: ``jobs`` (source, sidecar of its camera folder, camera name or None)
    ingested one after another, ``live`` cameras (:class:`~reidkit.search.ingest.cameras.Camera`)
    ingested all at once in real time beside them, the ``detector`` (None for crop folders) and the
    per-source ``options`` passed to :func:`reidkit.search.ingest.pipeline.ingest`."""

    jobs: list[tuple[str, Path | None, str | None]]
    detector: Any
    detector_name: str | None
    options: dict[str, Any] = field(default_factory=dict)
    live: list[Any] = field(default_factory=list)
    detector_opts: dict[str, Any] = field(default_factory=dict)


@dataclass
class IngestSummary:
    """What an ingest of several sources did: one report per source that ran, the errors of those that
    could not (each naming its source), and the gallery's totals afterwards."""

    reports: list[Any]
    errors: list[str]
    sightings: int
    tracks: int
    sources: int
    restarts: list[dict[str, Any]] = field(default_factory=list)  # --ray: jobs whose worker died, taken over


def plan_ingest(
    sources: Sequence[str],
    *,
    cameras: str | os.PathLike[str] | None = None,
    images: bool = False,
    sequence: bool = False,
    detector: str | None = None,
    detector_model: str | os.PathLike[str] | None = None,
    start_time: str | None = None,
    time_pattern: str | None = None,
    **options: Any,
) -> IngestPlan:
    """Check ``reidkit ingest``'s sources, its ``cameras`` file and options; expand folders of camera
    folders (one source each, with the sidecar found for it); streams become live cameras. Builds the
    detector once. ApiError names what is wrong."""
    from reidkit.search.ingest.cameras import Camera, CameraError, load_cameras
    from reidkit.search.ingest.detect import DETECTORS, build_detector
    from reidkit.search.ingest.photos import TimePattern
    from reidkit.search.ingest.pipeline import default_detector
    from reidkit.search.ingest.sources import (
        SourceError,
        camera_from_uri,
        expand_sources,
        is_stream_uri,
        parse_timestamp,
    )

    if images and sequence:
        raise ApiError("--images (folders of person crops) and --sequence (folders of video frames) exclude each other")
    if not sources and cameras is None:
        raise ApiError("nothing to ingest: give sources or --cameras FILE")
    if time_pattern is not None:
        try:
            TimePattern(time_pattern)
        except ValueError as exc:
            raise ApiError(f"--time-pattern: {exc}") from None
    live: list[Any] = []
    named: list[tuple[str, str | None]] = [(s, options.get("camera")) for s in sources]
    try:
        for cam in load_cameras(cameras) if cameras is not None else []:
            if is_stream_uri(cam.uri):
                live.append(cam)
            else:
                named.append((cam.uri, cam.name))
        for s, cam_name in list(named):
            if is_stream_uri(s) and not images:
                live.append(Camera(name=cam_name or camera_from_uri(s), uri=s))
                named.remove((s, cam_name))
        jobs = [(src, side, name) for s, name in named for src, side in expand_sources([s], crops=images)]
    except (SourceError, CameraError, ValueError) as exc:
        raise ApiError(str(exc)) from None
    if len({c.name for c in live}) < len(live):
        raise ApiError("two live cameras share a name: name them (camera names must be unique)")
    if start_time is not None:
        try:
            options["start_time"] = parse_timestamp(start_time)
        except ValueError as exc:
            raise ApiError(f"--start-time: {exc}") from None
    det, name, opts = None, None, {}
    if not images:
        name = detector or default_detector()
        if name not in DETECTORS:
            raise ApiError(f"unknown detector {name!r}; choose from {', '.join(sorted(DETECTORS))}")
        opts = {} if detector_model is None else {"weights" if name == "yolo" else "model_path": detector_model}
        try:
            det = build_detector(name, **opts)
        except (FileNotFoundError, ImportError, TypeError, ValueError) as exc:
            raise ApiError(f"detector {name}: {exc}") from None
    options.pop("camera", None)
    options.update(images_mode=images, sequence=sequence, time_format=time_pattern)
    return IngestPlan(jobs, det, name, options, live, opts)


def run_ingest(
    gallery: str | os.PathLike[str],
    plan: IngestPlan,
    model: LoadedModel,
    progress: Any = None,
    *,
    stop: threading.Event | None = None,
    duration: float | None = None,
    index: str | None = None,
) -> IngestSummary:
    """Ingest ``plan`` into the gallery at ``gallery`` (a folder or a Milvus URI; created when new, with the
    vector ``index`` kind asked for, see :class:`~reidkit.search.storage.IndexConfig`): its
    live cameras all at once in real time (until ``stop`` is set or ``duration`` seconds pass), its other
    sources one after another beside them; a source that fails is reported and the others go on. ``progress``: a
    :data:`reidkit.search.ingest.report.ProgressFn`. ApiError when the gallery cannot be opened."""
    from reidkit.imaging import ImageError
    from reidkit.search.ingest.detect import build_detector
    from reidkit.search.ingest.live import LiveIngest, LiveOptions
    from reidkit.search.ingest.pipeline import ingest
    from reidkit.search.ingest.sources import SourceError
    from reidkit.search.storage import GalleryError, open_gallery

    stop = stop or threading.Event()
    try:
        g = open_gallery(gallery, model=getattr(model.info, "name", None), index=index)
    except (GalleryError, ValueError) as exc:  # ValueError: an unknown index kind
        raise ApiError(str(exc)) from None
    reports: list[Any] = []
    errors: list[str] = []
    thread = None
    try:
        if plan.live:
            # a detector of its own: OpenCV's networks are not safe to share between threads
            det = build_detector(plan.detector_name or "hog", **plan.detector_opts) if plan.jobs else plan.detector
            opts = LiveOptions(batch_size=plan.options.get("batch_size", 64),
                               crops_per_track=plan.options.get("crops_per_track", 4))  # fmt: skip
            engine = LiveIngest(g, plan.live, model.embedder, det, opts, progress)
            thread = threading.Thread(target=lambda: reports.extend(engine.run(stop, duration)), name="live-ingest")
            thread.start()
        for source, sidecar, camera in plan.jobs:
            if stop.is_set():
                break
            try:
                rep = ingest(g, source, model.embedder, detector=plan.detector, sidecar=sidecar, progress=progress,
                             camera=camera, stop=stop, **plan.options)  # fmt: skip
            except (SourceError, GalleryError, ImageError, ValueError) as exc:
                msg = str(exc)
                errors.append(msg if msg.startswith(source) else f"{source}: {msg}")
                continue
            reports.append(rep)
            if rep.message and rep.status == "truncated":
                errors.append(rep.message)
        if thread is not None:
            while thread.is_alive():
                thread.join(0.2)
            errors += [r.message for r in reports if r.mode == "live" and r.status == "failed" and r.message]
        return IngestSummary(reports, errors, len(g), len(g.tracks()), len(g.sources()))
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        g.close()


def run_ingest_ray(
    gallery: str,
    plan: IngestPlan,
    model: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    *,
    address: str | None = None,
    workers: int | None = None,
    backend: str = "torch",
    threads: int | None = None,
    stop: threading.Event | None = None,
    duration: float | None = None,
    on_event: Any = None,
) -> IngestSummary:
    """Ingest ``plan`` on a Ray cluster (``address``: ``HOST:PORT``, ``auto``, or ``local``) into the Milvus
    gallery ``gallery``: ``workers`` actors, each with the model (``model`` / ``weights`` on ``backend``) loaded
    once, take the sources and camera groups one at a time; a job whose worker dies is restarted on another
    and resumes (:mod:`reidkit.search.ingest.distributed`). ApiError: not a Milvus gallery, no Ray, no cluster."""
    from reidkit.search.ingest.distributed import RayUnavailable, WorkerSpec, ingest_on_ray
    from reidkit.search.storage import GalleryError, is_milvus, open_gallery

    if not is_milvus(gallery) or not str(gallery).startswith("milvus://"):
        raise ApiError(
            f"--ray needs a gallery every node can write to: a Milvus server (milvus://HOST:PORT/NAME), not {gallery}"
        )
    try:
        with open_gallery(gallery, model=getattr(load_model(model, weights, embedder=False).info, "name", None)):
            pass  # made (or checked: width, model) once here, before any worker starts
    except GalleryError as exc:
        raise ApiError(str(exc)) from None
    o = plan.options
    spec = WorkerSpec(
        gallery, model, None if weights is None else str(weights), backend, o.get("batch_size", 64), threads,
        plan.detector_name, plan.detector_opts, o, o.get("batch_size", 64), o.get("crops_per_track", 4),
    )  # fmt: skip
    try:
        out = ingest_on_ray(spec, plan.jobs, plan.live, address=address, workers=workers, stop=stop,
                            duration=duration, on_event=on_event)  # fmt: skip
    except RayUnavailable as exc:
        raise ApiError(str(exc)) from None
    with open_gallery(gallery, create=False, read_only=True) as g:
        return IngestSummary(out.reports, out.errors, len(g), len(g.tracks()), len(g.sources()), out.restarts)


# --- search ------------------------------------------------------------------------------------------


class RequestError(ApiError):
    """A request whose options do not hold together. ``fields`` names the request fields it is about, for
    a front end to word as its own options (``--top`` on the command line, the form field ``top``)."""

    def __init__(self, message: str, *fields: str) -> None:
        super().__init__(message)
        self.fields = fields


class NotFound(ApiError):
    """An id (track, sighting) that the gallery does not hold, or a picture of it that cannot be read."""


class EmptyGallery(ApiError):
    """A search of a gallery that holds nothing yet."""


@dataclass(frozen=True)
class SearchRequest:
    """One person search, as ``reidkit search`` and ``POST /search`` take it; checked when made
    (:class:`RequestError`), so a request that exists can be run.

    The person is exactly one of: ``pictures`` (paths, PIL images or RGB arrays; ``labels`` name them
    in the result, default: their paths), a gallery ``track`` (its track number, :attr:`Track.id`, the
    one number every table, card and route shows), a ``sighting`` (id: its track, or for a detection
    without one, its stored feature) or several ``sightings`` (e.g. the hits an operator confirmed:
    each one's track feature, or its own, fused as ``fuse`` says; one alone is a ``sighting``).
    ``top``: candidates taken from the gallery (k); ``cameras`` and ``since`` / ``until`` (seconds or
    ISO-8601, naive = UTC) filter them; ``rerank``, ``threshold`` / ``z_threshold`` (default: the
    model's calibrated ones), ``adaptive``, ``fuse``, ``review`` and ``review_floor`` are
    :func:`reidkit.search.query.search.search_person`'s. ``time_range`` is ``(since, until)`` in
    seconds (None: no time filter).
    """

    pictures: Sequence[Any] = ()
    labels: Sequence[str] | None = None
    track: int | None = None
    sighting: int | None = None
    sightings: Sequence[int] = ()
    top: int = 200
    cameras: Sequence[str] | None = None
    since: str | float | None = None
    until: str | float | None = None
    rerank: bool = True
    review: int = 8
    review_floor: float | None = None
    threshold: float | None = None
    z_threshold: float | None = None
    adaptive: bool = True
    fuse: Literal["mean", "max"] = "mean"
    time_range: tuple[float | None, float | None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        import math

        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("pictures", tuple(self.pictures))
        put("labels", None if self.labels is None else tuple(self.labels))
        put("sightings", tuple(dict.fromkeys(int(i) for i in self.sightings)))  # in order, once each
        if len(self.sightings) == 1 and self.sighting is None:
            put("sighting", self.sightings[0])  # one sighting is searched as `sighting` is
            put("sightings", ())
        if self.cameras is not None:  # no camera named (an empty form field): every camera
            put("cameras", tuple(str(c) for c in self.cameras if c) or None)
        given = sum([bool(self.pictures), self.track is not None, self.sighting is not None, bool(self.sightings)])
        if given != 1:
            raise RequestError(
                "give the person to search for: pictures, a track id or sighting id(s) "
                f"(exactly one of them; got {given})",
                "query",
            )
        if len(self.sightings) > MAX_SIGHTINGS:
            raise RequestError(f"at most {MAX_SIGHTINGS} sightings per search, got {len(self.sightings)}", "sightings")
        if self.labels is not None and len(self.labels) != len(self.pictures):
            raise RequestError(f"{len(self.labels)} labels for {len(self.pictures)} pictures", "labels")
        for p in self.pictures:
            if isinstance(p, str | os.PathLike) and not Path(p).is_file():
                raise RequestError(f"{p}: no such image file")
        if self.top < 1:
            raise RequestError(f"top must be at least 1, got {self.top}", "top")
        if self.review < 0:
            raise RequestError(f"review must be at least 0, got {self.review}", "review")
        if self.review_floor is not None and not -1.0 <= self.review_floor <= 1.0:
            msg = f"review_floor is a cosine similarity in [-1, 1], got {self.review_floor}"
            raise RequestError(msg, "review_floor")
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise RequestError(f"threshold is a cosine similarity in [-1, 1], got {self.threshold}", "threshold")
        if self.z_threshold is not None and not math.isfinite(self.z_threshold):
            raise RequestError(f"z_threshold must be a finite number, got {self.z_threshold}", "z_threshold")
        if self.fuse not in ("mean", "max"):
            raise RequestError(f"fuse must be mean or max, got {self.fuse!r}", "fuse")
        if self.since is not None or self.until is not None:
            lo = None if self.since is None else _seconds(self.since, "since")
            hi = None if self.until is None else _seconds(self.until, "until")
            if lo is not None and hi is not None and hi < lo:
                raise RequestError(f"until ({self.until}) is before since ({self.since})", "until", "since")
            put("time_range", (lo, hi))


def _seconds(value: str | float, what: str) -> float:
    """A time given as seconds or as an ISO-8601 date-time (naive = UTC), in seconds."""
    import math

    from reidkit.search.storage.records import GalleryError, to_seconds

    try:
        t = float(value)
    except (TypeError, ValueError):
        try:
            t = to_seconds(value)
        except GalleryError:
            raise RequestError(f"{what}: {value!r} is neither seconds nor an ISO-8601 date-time", what) from None
    if not math.isfinite(t):
        raise RequestError(f"{what}: {value!r} is not a finite time", what)
    return t


def search(gallery: Gallery, request: SearchRequest, model: LoadedModel) -> SearchResult:
    """Run ``request`` on ``gallery`` with ``model`` (its embedder for pictures; its calibrated match
    rule). :class:`EmptyGallery`, :class:`NotFound` (the track or sighting), ApiError otherwise."""
    import dataclasses

    from reidkit.imaging import ImageError
    from reidkit.search.query.search import search_person
    from reidkit.search.storage.records import GalleryError

    if len(gallery) == 0:
        raise EmptyGallery(f"gallery {gallery.root} is empty: nothing to search yet (add to it with reidkit ingest)")
    if request.pictures and model.embedder is None:
        raise ApiError("query pictures need a model that embeds them (load_model(..., embedder=True))")
    query, label = _person(gallery, request)
    r = request
    try:
        result = search_person(
            gallery,
            model.embedder if r.pictures else None,
            k=r.top,
            model_info=model.info,
            **{name: getattr(r, name) for name in _SEARCH_KEYWORDS},
            **query,
        )
    except GalleryError as exc:
        other_model = "dimensions" in str(exc)
        hint = " (was the gallery built with another model? pass its --weights/--model)" if other_model else ""
        raise ApiError(f"{exc}{hint}") from None
    except (ImageError, ValueError) as exc:
        raise ApiError(str(exc)) from None
    except KeyError as exc:  # a row removed while the search ran
        raise NotFound(str(exc).strip("'\"")) from None
    labels = r.labels or ((label,) if label else None)
    if labels:
        result.query = dataclasses.replace(result.query, labels=tuple(labels))
    return result


# The SearchRequest fields that search_person takes as keywords of the same name (``top`` is its ``k``).
_SEARCH_KEYWORDS = ("rerank", "threshold", "z_threshold", "adaptive", "cameras", "time_range", "fuse", "review",
                    "review_floor")  # fmt: skip
MAX_SIGHTINGS = 200  # sightings one search may start from


def _person(gallery: Gallery, request: SearchRequest) -> tuple[dict[str, Any], str | None]:
    """search_person's query keywords for the person of ``request``, and a label when it has none."""
    if request.pictures:
        return {"queries": list(request.pictures)}, None
    if request.track is not None:
        if gallery.track(request.track) is None:
            raise NotFound(f"gallery {gallery.root} has no track {request.track}")
        return {"track_id": request.track}, None
    if request.sightings:
        return {"features": _sighting_features(gallery, request.sightings)}, "sightings " + ", ".join(
            str(i) for i in request.sightings
        )
    rec = _record(gallery, int(request.sighting))  # type: ignore[arg-type]
    key = (rec.source_id, rec.track_id)
    track = None if rec.track_id is None else gallery.tracks_by_key([key]).get(key)  # type: ignore[list-item]
    if track is not None:
        return {"track_id": track.id}, None
    return {"features": gallery.features([rec.id])}, f"sighting {rec.id}"


def _sighting_features(gallery: Gallery, ids: Sequence[int]) -> Any:
    """One feature per sighting: its track's (the mean of its crops), else its own; :class:`NotFound`."""
    import numpy as np

    records = [_record(gallery, i) for i in ids]
    keys = {(r.source_id, r.track_id) for r in records if r.track_id is not None}
    tracks = gallery.tracks_by_key(keys)  # type: ignore[arg-type]
    rows: dict[tuple[str, int], Any] = {}  # two sightings of one track count once
    for r in records:
        t = None if r.track_id is None else tracks.get((r.source_id, r.track_id))
        if t is not None:
            rows.setdefault(("track", t.id), gallery.track_features([t.id])[0])
        else:
            rows.setdefault(("sighting", r.id), gallery.features([r.id])[0])
    return np.stack(list(rows.values()))


# --- gallery -----------------------------------------------------------------------------------------
JPEG_QUALITY = 85


def open_gallery(uri: str | os.PathLike[str]) -> Gallery:
    """The gallery at ``uri`` (a folder, ``milvus://HOST:PORT/NAME`` or a Milvus Lite ``.db`` folder:
    :func:`reidkit.search.storage.open_gallery`), read-only (close it, or use it in a ``with``); ApiError
    if there is none."""
    from reidkit.search.storage import GalleryError, is_milvus
    from reidkit.search.storage import open_gallery as open_uri

    if not is_milvus(uri) and not (Path(uri) / "gallery.db").is_file():
        raise ApiError(f"{uri} is not a reidkit gallery (no gallery.db); build one with reidkit ingest")
    try:
        return open_uri(uri, create=False, read_only=True)  # type: ignore[return-value]
    except GalleryError as exc:
        raise ApiError(str(exc)) from None


def gallery_overview(gallery: Gallery, recent: int = 24, model: str | None = None) -> dict[str, Any]:
    """Totals, the time span, counts per camera and per source, and the ``recent`` sightings added last
    (newest first, as :func:`sighting_detail`), as JSON-ready data; ``model``: the name to report. The
    gallery by its folder's name, each source by its id, camera and public form (``uri``: no credential,
    no server folder)."""
    from dataclasses import asdict

    from reidkit.search.query.report import TIME_BASES, format_time, is_dated
    from reidkit.search.storage.records import public_source

    o = gallery.overview(recent)
    lo, hi = o.time_span
    bases = gallery.time_bases()
    clock = {c.camera: _clock(c.first_time, c.last_time) for c in o.cameras}

    def times(source_id: int, camera: str) -> str:
        """How a source's times were made, in words: the photo bases, else a video's offsets or dates."""
        basis = bases.get(source_id)
        if basis is not None:  # "exif", or a mix: "exif 12, mtime 1"
            parts = [b.partition(" ") for b in basis.split(", ")]
            return ", ".join(TIME_BASES.get(name, name) + (f" ({n})" if n else "") for name, _, n in parts)
        return {"offset": "offset (no date)", "date": "date", "mixed": "dates and offsets"}[clock[camera]]

    clocks = []
    for name, dated in (("date", True), ("offset", False)):
        cams = [c for c in o.cameras if is_dated(c.first_time) == dated or is_dated(c.last_time) == dated]
        if cams:
            a = min(c.first_time if is_dated(c.first_time) == dated else c.last_time for c in cams)
            b = max(c.last_time if is_dated(c.last_time) == dated else c.first_time for c in cams)
            clocks.append({"clock": name, "start": a, "end": b, "start_text": format_time(a),
                           "end_text": format_time(b), "cameras": [c.camera for c in cams]})  # fmt: skip
    copied = [  # photo cameras timed by file modification times that all fall within a minute: copied, not taken
        c.camera
        for c in o.cameras
        if c.sightings > 1 and c.last_time - c.first_time <= 60.0
        and any(bases.get(s.source.id) == "mtime" for s in o.sources if s.source.camera == c.camera)
    ]  # fmt: skip
    warnings = [
        f"{cam}: every picture is timed by its file's modification time, all within a minute: probably when the "
        "folder was copied, not when the pictures were taken"
        for cam in copied
    ]
    return {
        "gallery": gallery.root.name,
        "model": model,
        "warnings": warnings,
        "totals": {"sightings": o.sightings, "tracks": o.tracks, "sources": len(o.sources), "cameras": len(o.cameras)},
        "searchable": o.searchable,
        "time_span": {
            "start": lo,
            "end": hi,
            "start_text": None if lo is None else format_time(lo),
            "end_text": None if hi is None else format_time(hi),
        },
        "clocks": clocks,
        "cameras": [
            {
                **asdict(c),
                "first_text": format_time(c.first_time),
                "last_text": format_time(c.last_time),
                "clock": clock[c.camera],
            }
            for c in o.cameras
        ],
        "sources": [
            {
                "id": s.source.id,
                "uri": public_source(s.source.uri),
                "camera": s.source.camera,
                "status": s.source.status,
                "progress": s.source.progress,
                "sightings": s.sightings,
                "tracks": s.tracks,
                "times": times(s.source.id, s.source.camera) if s.source.camera in clock else None,
            }
            for s in o.sources
        ],
        "recent": _sightings(gallery, o.recent),
    }


def _clock(first: float, last: float) -> str:
    """``date`` (Unix times), ``offset`` (seconds into a video: no date) or ``mixed``."""
    from reidkit.search.query.report import is_dated

    return "date" if is_dated(first) else "offset" if not is_dated(last) else "mixed"


def camera_sightings(
    gallery: Gallery,
    camera: str,
    *,
    since: str | float | None = None,
    until: str | float | None = None,
    offset: int = 0,
    limit: int = 60,
    per_track: bool = True,
) -> dict[str, Any]:
    """A camera's sightings in time order, for browsing: ``limit`` of them from ``offset`` (``since`` /
    ``until``: seconds or ISO-8601, naive = UTC). ``per_track``: one per track (its best crop: highest
    quality, then earliest) with the track's crop count, and every sighting without a track. The answer
    says the ``total``, the camera's ``clock`` (``date``, ``offset``: seconds into a video, or ``mixed``)
    and the sightings as :func:`sighting_detail` (``n_crops`` added). :class:`NotFound` for an unknown camera."""
    if camera not in gallery.cameras():
        raise NotFound(f"no camera {camera!r} in the gallery")
    if limit < 1 or offset < 0:
        raise RequestError("limit must be at least 1 and offset at least 0", "limit", "offset")
    lo = None if since is None else _seconds(since, "since")
    hi = None if until is None else _seconds(until, "until")
    records = [r for src in gallery.sources() if src.camera == camera for r in gallery.records(src.id)]
    records = [r for r in records if (lo is None or r.timestamp >= lo) and (hi is None or r.timestamp <= hi)]
    crops: dict[Any, int] = {}
    if per_track:
        best: dict[Any, Record] = {}
        for r in records:
            key = ("sighting", r.id) if r.track_id is None else (r.source_id, r.track_id)
            crops[key] = crops.get(key, 0) + 1
            q = -1.0 if r.quality is None else r.quality
            b = best.get(key)
            if b is None or (q, -r.timestamp) > (-1.0 if b.quality is None else b.quality, -b.timestamp):
                best[key] = r
        records = list(best.values())
    records.sort(key=lambda r: (r.timestamp, r.id))
    page = records[offset : offset + limit]
    items = _sightings(gallery, page)
    for item, r in zip(items, page, strict=True):
        key = ("sighting", r.id) if r.track_id is None else (r.source_id, r.track_id)
        item["n_crops"] = crops.get(key, 1)
    times = [r.timestamp for r in records]
    return {
        "camera": camera,
        "clock": _clock(min(times), max(times)) if times else None,
        "total": len(records),
        "offset": offset,
        "limit": limit,
        "per_track": per_track,
        "sightings": items,
    }


MAX_CLUSTER_ITEMS = 20_000  # tracks (or sightings) the page's albums cluster at most: O(N^2) work
CLUSTER_SAMPLE = 12  # sightings shown per album
# Cosine albums: eps as this share of the model's match distance (1 - threshold); DBSCAN chains neighbours of
# neighbours, so the album rule is stricter than the pair rule (Market crops, shipped model: 0.95 purity at 0.75).
ALBUM_EPS_SHARE = 0.75


def gallery_clusters(
    gallery: Gallery,
    *,
    level: Literal["tracks", "sightings"] | None = None,
    rerank: bool | None = None,
    eps: float | None = None,
    min_samples: int = 2,
    sample: int = CLUSTER_SAMPLE,
    model: LoadedModel | None = None,
) -> dict[str, Any]:
    """The gallery grouped into albums (one per identity found; :func:`reidkit.search.query.cluster.cluster_gallery`,
    DBSCAN), largest first, as JSON-ready data: each album's size, cameras, crops, time span and ``sample``
    sightings (one per track, spread over its time, as :func:`sighting_detail`); the items left alone.
    ``rerank`` None: k-reciprocal distances when there are enough items for them (``10 x k1``), else
    cosine (on a small gallery every k-reciprocal neighbourhood spans several people, and albums mix
    them). ``eps`` None: the tuned re-ranked one, or for cosine :data:`ALBUM_EPS_SHARE` of the match
    distance of ``model`` (1 - its calibrated threshold). ``level`` None: tracks when every sighting has
    one (videos, photos), else sightings (folders of crops have no tracks). ApiError above
    :data:`MAX_CLUSTER_ITEMS` items or for bad options."""
    from reidkit.search.query.calibrate import thresholds_for
    from reidkit.search.query.cluster import DEFAULT_EPS, cluster_gallery
    from reidkit.search.query.report import format_time

    tracks = gallery.tracks()
    if level is None:
        level = "tracks" if tracks and sum(t.n_crops for t in tracks) >= len(gallery) else "sightings"
    n = len(tracks) if level == "tracks" else len(gallery)
    if n > MAX_CLUSTER_ITEMS:
        raise ApiError(f"{n:,} {level} is more than the page clusters ({MAX_CLUSTER_ITEMS:,}): use reidkit cluster")
    k1 = 20
    rerank = n >= 10 * k1 if rerank is None else bool(rerank)
    if eps is None:
        match = 1.0 - thresholds_for(None if model is None else model.info).threshold
        eps = DEFAULT_EPS[True] if rerank else round(ALBUM_EPS_SHARE * match, 4)
    eps = float(eps)
    if not 0.0 < eps < (1.0 if rerank else 2.0):
        raise RequestError(f"eps must be in (0, {1 if rerank else 2}) with rerank={rerank}, got {eps}", "eps")
    if min_samples < 1:
        raise RequestError(f"min_samples must be at least 1, got {min_samples}", "min_samples")
    try:
        result = cluster_gallery(gallery, level=level, rerank=rerank, eps=eps, min_samples=min_samples, k1=k1)
    except ValueError as exc:
        raise ApiError(str(exc)) from None
    albums = []
    for c in result.clusters:
        records = sorted(gallery.get(c.records), key=lambda r: (r.timestamp, r.id))
        firsts: dict[Any, Record] = {}
        for r in records:  # one per track, its best crop
            key = ("sighting", r.id) if r.track_id is None else (r.source_id, r.track_id)
            b = firsts.get(key)
            if b is None or (r.quality or 0.0) > (b.quality or 0.0):
                firsts[key] = r
        picks = sorted(firsts.values(), key=lambda r: (r.timestamp, r.id))
        if len(picks) > sample:
            step = (len(picks) - 1) / (sample - 1) if sample > 1 else 0
            picks = [picks[round(i * step)] for i in range(sample)]
        lo, hi = records[0].timestamp, records[-1].timestamp
        albums.append({
            "id": c.id, "size": c.size, "crops": len(c.records), "cameras": c.cameras,
            "first_time": lo, "last_time": hi, "first_text": format_time(lo), "last_text": format_time(hi),
            "sightings": _sightings(gallery, picks),
        })  # fmt: skip
    return {
        "level": result.level,
        "n_items": result.n_items,
        "n_noise": len(result.noise),
        "rerank": rerank,
        "eps": eps,
        "clusters": albums,
    }


def search_report(result: SearchResult, frames: bool = True) -> str:
    """The self-contained HTML report of a search result, as ``reidkit search --html`` writes it
    (:func:`reidkit.search.query.report.render_html`), worded for a client (:meth:`SearchResult.public`:
    no server path, no credential); its pictures are read from the gallery's files here."""
    from reidkit.search.query.report import render_html

    return render_html(result, frames=frames, public=True)


def track_detail(gallery: Gallery, track: int) -> dict[str, Any]:
    """A track (row id ``track``) with its sightings, as JSON-ready data (its source's public form);
    :class:`NotFound`."""
    from dataclasses import asdict

    from reidkit.search.storage.records import public_source

    t = gallery.track(track)
    if t is None:
        raise NotFound(f"no track {track} in the gallery")
    records = gallery.records(t.source_id, t.track_id)
    return {**asdict(t), "source": public_source(t.source), "sightings": _sightings(gallery, records)}


def sighting_detail(gallery: Gallery, sighting: int) -> dict[str, Any]:
    """A stored detection as JSON-ready data: its record (its source's public form, its crop's path within
    the gallery folder or its file name), its track's row id (``track``) and its time as reidkit prints it
    (``time_text``); :class:`NotFound`."""
    return _sightings(gallery, [_record(gallery, sighting)])[0]


def sighting_crop(gallery: Gallery, sighting: int) -> bytes:
    """The crop of a sighting as JPEG: its crop file, or without one its box cut from the frame; :class:`NotFound`."""
    import cv2
    import numpy as np

    from reidkit.search.storage.media import cut_box

    rec = _record(gallery, sighting)
    path = None if not rec.crop else Path(rec.crop) if Path(rec.crop).is_absolute() else gallery.root / rec.crop
    if path is not None and path.is_file():
        data = path.read_bytes()
        if data[:3] == b"\xff\xd8\xff":
            return data
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is not None:
            return _jpeg(img)
    frame = _frame(gallery, rec)
    cut = None if frame is None else cut_box(frame, rec.box)
    if cut is None:
        raise NotFound(f"sighting {sighting} has no crop file and its frame cannot be read")
    return _jpeg(np.ascontiguousarray(cut))


def sighting_frame(gallery: Gallery, sighting: int) -> bytes:
    """The frame (or photo) a sighting was seen in, its box drawn as in the HTML report, as JPEG;
    :class:`NotFound` also when it cannot be read (no frame number, a missing video, a crop-only source)."""
    from reidkit.search.storage.media import draw_box
    from reidkit.search.storage.records import public_source

    rec = _record(gallery, sighting)
    img = _frame(gallery, rec)
    if img is None:
        raise NotFound(f"the frame of sighting {sighting} cannot be read (source {public_source(rec.source)})")
    return _jpeg(draw_box(img, rec.box) if rec.box is not None else img)


def has_frame(gallery_root: str | os.PathLike[str], record: Record) -> bool:
    """Whether a frame can exist for the record (a page offers to open it): a frame number in a video
    file, or in a photo folder whose ledger names the picture. A folder of crops has none."""
    from reidkit.search.storage.media import lookup_photo

    if record.frame is None or record.frame < 0 or "://" in record.source:
        return False
    src = Path(record.source)
    if src.is_file():
        return True
    return src.is_dir() and lookup_photo(gallery_root, record.source, record.frame) is not None


def _record(gallery: Gallery, sighting: int) -> Record:
    rec = gallery.record(sighting)
    if rec is None:
        raise NotFound(f"no sighting {sighting} in the gallery")
    return rec


def _sightings(gallery: Gallery, records: Sequence[Record]) -> list[dict[str, Any]]:
    from reidkit.search.query.report import format_time
    from reidkit.search.storage.records import public_path, public_source

    tracks = gallery.tracks_by_key({(r.source_id, r.track_id) for r in records if r.track_id is not None})
    out = []
    for r in records:
        t = None if r.track_id is None else tracks.get((r.source_id, r.track_id))
        out.append(
            {
                "id": r.id,
                "source_id": r.source_id,
                "source": public_source(r.source),
                "camera": r.camera,
                "timestamp": r.timestamp,
                "time_text": format_time(r.timestamp),
                "frame": r.frame,
                "box": None if r.box is None else list(r.box),
                "track_id": r.track_id,
                "track": None if t is None else t.id,
                "crop": public_path(r.crop),
                "quality": r.quality,
            }
        )
    return out


def _frame(gallery: Gallery, rec: Record) -> Any:
    from reidkit.search.storage.media import FrameReader

    reader = FrameReader(str(gallery.root))
    try:
        return reader.read(rec.source, rec.frame)
    finally:
        reader.close()


def _jpeg(image: Any) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover
        raise ApiError("could not encode the picture as JPEG")
    return buf.tobytes()
