"""The search service: ``reidkit search`` over HTTP, and a web page for it (``reidkit serve``).

:func:`create_app` builds a FastAPI app over one gallery folder:

* ``POST /search`` (multipart: ``image`` pictures, or a ``track`` number, a ``sighting`` id or several
  ``sightings``, and the options of ``reidkit search``) answers the JSON of ``reidkit search --json``,
  as a client may see it (:meth:`~reidkit.search.query.search.SearchResult.public`: no server path, no
  credential); ``POST /search/html`` the same search as the HTML fragment the page shows (one
  rendering with ``reidkit search --html``: :func:`reidkit.search.query.report.render_results`);
  ``POST /search/report`` the whole self-contained report ``reidkit search --html`` writes.
* ``GET /gallery`` (overview), ``/tracks/{id}``, ``/sightings/{id}``, ``/sightings?camera=`` (a camera's
  sightings in time order), ``/clusters`` (albums), ``/crops/{id}`` and ``/frames/{id}`` (JPEGs, by id
  only: no client-given path reaches the file system), ``/health``, the page at ``/`` and the schema
  at ``/openapi.json``.

Every route parses its input, makes one call into :mod:`reidkit.search.api` (the CLI's calls too)
and words the answer; :func:`answering` turns the API's errors into HTTP statuses. The model loads
once, when the app is made. Searches run in a pool of ``workers`` threads (the CPU work releases the
GIL; a :class:`~reidkit.search.storage.Gallery` is thread-safe) against a read-only gallery that
follows ``reidkit ingest`` writing from another process (:class:`LiveGallery`).

Safety (:mod:`reidkit.service.security`, :mod:`reidkit.service.server`):

* **Nothing private goes out.** Sources are named by their public form (a file's name; a stream's URL
  without user, password or secret parameters), crops by their path in the gallery folder, the gallery
  by its folder's name; error messages lose every server path and credential (:func:`answering`).
* **Pictures.** Only the documented formats are decoded (``FORMATS``: Pillow tries no other decoder);
  a query picture may have at most ``max_pixels`` pixels and one search decode at most
  ``max_request_pixels`` in all, both checked from the headers before any pixel is decoded; a JPEG
  larger than the model needs is decoded at 1/2, 1/4 or 1/8 scale (draft mode). A search that decodes
  more than ``HEAVY_PIXELS`` waits for the one decode thread, which runs at the lowest CPU priority:
  large pictures get the CPU that searches leave, never every CPU.
* **Queues.** At most ``max_queue`` searches wait for a search thread (``HEAVY_QUEUE`` for the decode
  thread); one more is answered 429 with Retry-After at once, not kept waiting without end. A search
  refused for its pictures is answered after ``refusal_delay`` (1 s, no CPU spent): a client that sends
  nothing else gets through one request a second per connection.
* **Requests.** Bodies over ``max_upload`` bytes get 413 (from Content-Length before anything is read,
  else as soon as the count passes it), bodies that do not arrive in time 408 (``read_timeout``); the
  Host header must name this service (``hosts``: DNS rebinding); a browser's POST from another site
  gets 403; with a ``token`` every endpoint but ``/health`` and the page needs ``Authorization: Bearer
  <token>``; no CORS headers unless ``cors`` origins are given; every answer says nosniff, no referrer
  and same-origin resources, the page has a strict CSP. The gallery is only ever read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import Field

from reidkit.search import api
from reidkit.search.api import ApiError, EmptyGallery, LoadedModel, NotFound, SearchRequest
from reidkit.search.query.search import SearchResult
from reidkit.search.storage.gallery import Gallery
from reidkit.search.storage.live import LiveGallery, NoGallery, ServerGallery, follow_gallery
from reidkit.search.storage.open import is_milvus
from reidkit.search.storage.records import GalleryError, Hit, public_text, redact_uri
from reidkit.service.models import (
    BrowseModel,
    ClustersModel,
    ErrorModel,
    GalleryModel,
    HealthModel,
    SearchResultModel,
    SightingModel,
    TrackDetailModel,
)
from reidkit.service.security import (
    LOOPBACK_HOSTS,
    MB,
    BearerAuth,
    BodyLimit,
    HostCheck,
    SameOrigin,
    SecurityHeaders,
)

# The Host names an app answers to unless told: the loopback names, and the one test clients send (Starlette's
# TestClient, schemathesis), which no DNS gives a browser. `reidkit serve` passes its own (allowed_hosts).
DEFAULT_HOSTS = (*LOOPBACK_HOSTS, "testserver")
MAX_UPLOAD = 10 * MB
MAX_PIXELS = 16_000_000  # per query picture, from its header (a 4,900 x 3,265 photo; phones take 12 MP)
MAX_REQUEST_PIXELS = 24_000_000  # decoded per search, its pictures together (a JPEG at its draft-mode size)
HEAVY_PIXELS = 2_000_000  # a search that decodes more waits for the one decode thread
MAX_QUEUE = 64  # searches waiting for a search thread; one more is answered 429
HEAVY_QUEUE = 4  # searches waiting for the decode thread; one more is answered 429
REFUSAL_DELAY = 1.0  # seconds before a search refused for its pictures is answered: slows a client that floods
READ_TIMEOUT = 20.0  # seconds for a request body, plus one per MIN_RATE bytes of it (408)
MIN_RATE = 10_000
MAX_IMAGES = 16  # query pictures per search
MAX_TOP = 2000  # candidates (k) per search: re-ranking is O(k^2)
MAX_REVIEW = 100
MAX_BROWSE = 500  # sightings per page of a camera's
MAX_ID = 2**63 - 1  # SQLite's largest integer
RECENT = 24
STATIC = ("index.html", "app.js", "app.css")
FORMATS = "JPEG, PNG, WebP, GIF, BMP, TIFF"
PICTURE_CACHE = {"cache-control": "private, max-age=3600"}
T = TypeVar("T")


# -- errors ----------------------------------------------------------------------------------------
def _err(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    words = {
        400: "Bad request: not a picture in a format read here, too many pixels, no query, conflicting options, "
        "a malformed time; or a Host header this service does not answer to.",
        401: "Missing or wrong bearer token (only when the service was started with one).",
        403: "A browser's request from another site (its Origin is neither this service's nor a CORS origin).",
        404: "No such id in the gallery (or, for frames, the frame cannot be read).",
        408: "The request body did not arrive in time.",
        409: "The gallery is empty: nothing to search yet.",
        413: "Request body larger than the upload limit.",
        429: "Too many searches waiting: try again after the Retry-After header's seconds.",
        503: "No gallery at the folder yet (build one with reidkit ingest).",
    }
    # The JSON error body spelled out (not `model=`): FastAPI would file a model under the route's media
    # type, which is text/html or image/jpeg for the page fragment and the pictures.
    body = {"application/json": {"schema": ErrorModel.model_json_schema()}}
    return {c: {"description": words[c], "content": body} for c in codes}


class BadPicture(ValueError):
    """An upload that is not a picture the service will decode (the message says which and why)."""


@contextlib.contextmanager
def answering(known: dict[str, str] | None = None) -> Iterator[None]:
    """The API's errors as HTTP answers: 404 no such id, 409 nothing to search yet, 503 no gallery yet,
    400 any other bad input. The detail is the API's message without server paths or credentials
    (:func:`~reidkit.search.storage.records.public_text`; ``known``: paths and the names to say instead)."""
    try:
        yield
    except NoGallery as exc:
        raise _err(503, public_text(str(exc), known)) from None
    except NotFound as exc:
        raise _err(404, public_text(str(exc), known)) from None
    except EmptyGallery as exc:
        raise _err(409, public_text(str(exc), known)) from None
    except (ApiError, BadPicture) as exc:
        raise _err(400, public_text(str(exc), known)) from None


class Busy(HTTPException):
    """429: a queue is full; ``Retry-After`` says when a new try has a chance."""

    def __init__(self, what: str, waiting: int, retry_after: int) -> None:
        detail = f"the service is busy ({waiting} {what} in line): try again in {retry_after} s"
        super().__init__(429, detail, headers={"retry-after": str(retry_after)})


# -- pictures --------------------------------------------------------------------------------------
class Upload(NamedTuple):
    """A query picture as uploaded: its file name (no folders) and bytes."""

    name: str
    data: bytes


class Probed(NamedTuple):
    """A query picture opened and checked from its header, not decoded; ``pixels``: what it decodes to."""

    name: str
    image: Any
    pixels: int


def _bad(exc: Any, name: str, max_pixels: int) -> BadPicture:
    """A :class:`reidkit.imaging.PhotoError` as the service words it."""
    w, h = exc.size or (0, 0)
    return BadPicture(
        {
            "empty": f"{name}: empty file, not a picture",
            "format": f"{name}: not a decodable picture (not an image format the service reads: {FORMATS})",
            "too_large": f"{name}: {w} x {h} pixels is more than the limit of {max_pixels:,} pixels per picture "
            "(refused before decoding)",
            "bomb": f"{name}: refused as a decompression bomb ({exc.detail})",
            "truncated": f"{name}: truncated or corrupt picture ({exc.detail})",
        }.get(exc.kind, f"{name}: unreadable picture ({exc.detail or exc})")
    )


def probe_pictures(
    uploads: Sequence[Upload],
    max_pixels: int = MAX_PIXELS,
    max_total: int = MAX_REQUEST_PIXELS,
    size: tuple[int, int] | None = None,
) -> list[Probed]:
    """The uploads opened and checked from their headers, no pixel decoded (a millisecond), or
    :class:`BadPicture`: :func:`reidkit.imaging.probe_picture`'s checks (a documented format, at most
    ``max_pixels``), then at most ``max_total`` pixels to decode in all. ``size`` ``(width, height)``:
    a JPEG is set to decode at the smallest of 1/2, 1/4, 1/8 scale that covers it (draft mode)."""
    from reidkit.imaging import PhotoError, probe_picture

    out = []
    for u in uploads:
        try:
            img = probe_picture(u.data, u.name, max_pixels, draft=size)
        except PhotoError as exc:
            raise _bad(exc, u.name, max_pixels) from None
        out.append(Probed(u.name, img, img.size[0] * img.size[1]))
    total = sum(p.pixels for p in out)
    if total > max_total:
        raise BadPicture(
            f"{len(out)} pictures of {total:,} pixels to decode in all: more than the {max_total:,} one search "
            "may decode (send fewer or smaller pictures; refused before decoding)"
        )
    return out


def decode_probed(picture: Probed, size: tuple[int, int] | None = None) -> Any:
    """A probed picture decoded as an RGB PIL image (BadPicture when its pixels are bad). ``size``
    ``(width, height)``: resized right away, exactly as the Embedder's PIL path would (bilinear), so a
    large photo is not kept in memory at full size."""
    from PIL import Image

    from reidkit.imaging import PhotoError, load_picture

    try:
        img = load_picture(picture.image, picture.name)
    except PhotoError as exc:
        raise _bad(exc, picture.name, 0) from None
    rgb = img.convert("RGB")
    if size is not None and rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    return rgb


def decode_picture(data: bytes, name: str, max_pixels: int = MAX_PIXELS, size: tuple[int, int] | None = None) -> Any:
    """An uploaded file as an RGB PIL image, or :class:`BadPicture` (:func:`probe_pictures`, then
    :func:`decode_probed`)."""
    (picture,) = probe_pictures([Upload(name, data)], max_pixels, max_pixels, size)
    return decode_probed(picture, size)


# -- queues --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Lane:
    """A thread pool with a bounded line in front of it: at most ``threads + queue`` jobs inside (running
    or waiting); one more is refused at once (:class:`Busy`, 429 with Retry-After from the mean job time).
    Counted on the event loop, so no lock; a job leaves the line when its thread is done with it."""

    name: str
    pool: ThreadPoolExecutor
    threads: int
    queue: int
    inside: int = 0
    refused: int = 0
    done: int = 0
    mean_s: float = 0.25

    def check(self) -> None:
        """:class:`Busy` if a job would not get into the line now."""
        if self.inside >= self.threads + self.queue:
            self.refused += 1
            wait = max(1, math.ceil(self.inside * self.mean_s / self.threads))
            raise Busy(self.name, self.inside - self.threads, wait)

    async def run(self, fn: Callable[[], T]) -> T:
        self.check()
        loop = asyncio.get_running_loop()

        def timed() -> T:
            t0 = time.perf_counter()
            try:
                return fn()
            finally:
                self.mean_s = 0.9 * self.mean_s + 0.1 * (time.perf_counter() - t0)

        future = self.pool.submit(timed)
        self.inside += 1
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._left))
        return await asyncio.wrap_future(future)

    def _left(self) -> None:
        self.inside -= 1
        self.done += 1


# -- what the routes share -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Limits:
    """What one search may cost: pixels per query picture (``max_pixels``, from the header), decoded in all
    (``max_request_pixels``), and decoded before it goes to the decode thread (``heavy_pixels``); how long
    a search refused for its pictures waits for its answer (``refusal_delay``)."""

    max_pixels: int = MAX_PIXELS
    max_request_pixels: int = MAX_REQUEST_PIXELS
    heavy_pixels: int = HEAVY_PIXELS
    refusal_delay: float = REFUSAL_DELAY


@dataclasses.dataclass
class Service:
    """The state of one app: the gallery that follows the writer, the query model, the search and decode
    lanes, the page's files and the search counters (``stats``: running now, most at once, done)."""

    live: LiveGallery | ServerGallery
    model: LoadedModel
    searches: Lane
    decodes: Lane
    limits: Limits
    query_size: tuple[int, int] | None  # decode uploads straight to the model's input size (PIL resize)
    static: dict[str, bytes]
    auth: bool
    known: dict[str, str]  # server paths and the names clients are told instead
    stats: dict[str, int] = dataclasses.field(default_factory=lambda: {"active": 0, "max_active": 0, "searches": 0})
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    albums: dict[tuple[Any, ...], dict[str, Any]] = dataclasses.field(default_factory=dict)  # the last clustering

    @property
    def model_name(self) -> str | None:
        return getattr(self.model.info, "name", None)

    @property
    def pool(self) -> ThreadPoolExecutor:
        return self.searches.pool

    async def in_pool(self, fn: Callable[[], T]) -> T:
        """``fn`` in a search thread, unqueued (work that must not be refused: the page's fragments)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)

    def answering(self) -> contextlib.AbstractContextManager[None]:
        root = self.live.root  # a Milvus gallery's media folder is known once it is open: name it too
        return answering({**self.known, str(root): root.name} if root.name else self.known)

    def leased(self, fn: Callable[[Gallery], T]) -> T:
        """``fn`` of the gallery as it is now, its errors answered (:func:`answering`)."""
        with self.answering(), self.live.lease() as g:
            return fn(g)

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        with self.lock:
            self.stats["active"] += 1
            self.stats["max_active"] = max(self.stats["max_active"], self.stats["active"])
        try:
            yield
        finally:
            with self.lock:
                self.stats["active"] -= 1
                self.stats["searches"] += 1


def _service(request: Request) -> Service:
    return request.app.state.service


Svc = Annotated[Service, Depends(_service)]
Id = Annotated[int, PathParam(ge=0, le=MAX_ID, description="The id (row id in the gallery).")]
router = APIRouter()


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _with_urls(sightings: Sequence[dict[str, Any]], base: str) -> list[dict[str, Any]]:
    """The API's sightings with the service's URLs of their crop and frame."""
    return [
        {
            **s,
            "crop_url": f"{base}/crops/{s['id']}",
            "frame_url": None if s["frame"] is None else f"{base}/frames/{s['id']}",
        }
        for s in sightings
    ]


# -- search ------------------------------------------------------------------------------------------
async def search_request(
    image: Annotated[
        list[UploadFile] | None,
        File(description=f"Picture(s) of the person (repeat the field for several, at most {MAX_IMAGES})."),
    ] = None,
    track: Annotated[
        int | None, Form(ge=1, le=MAX_ID, description="Search for a gallery track (its row id, as in /tracks/{id}).")
    ] = None,
    sighting: Annotated[
        int | None,
        Form(
            ge=1,
            le=MAX_ID,
            description="Search from a sighting: its track, or (a detection without a track) its stored feature.",
        ),
    ] = None,
    sightings: Annotated[
        list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None,
        Form(
            description=f"Search from several sightings (repeat the field, at most {api.MAX_SIGHTINGS}; e.g. the hits "
            "confirmed on the page): their tracks' features, or their own, fused as `fuse` says."
        ),
    ] = None,
    top: Annotated[int, Form(ge=1, le=MAX_TOP, description="Candidates taken from the gallery (k).")] = 200,
    camera: Annotated[list[str] | None, Form(description="Only these cameras (repeat the field).")] = None,
    since: Annotated[str | None, Form(description="Only from this time (seconds or ISO-8601).")] = None,
    until: Annotated[str | None, Form(description="Only until this time (seconds or ISO-8601).")] = None,
    rerank: Annotated[bool, Form(description="k-reciprocal re-ranking of the candidates.")] = True,
    review: Annotated[int, Form(ge=0, le=MAX_REVIEW, description="Closest non-matches kept for review (0: none).")] = 8,
    review_floor: Annotated[
        float | None,
        Form(
            ge=-1.0,
            le=1.0,
            allow_inf_nan=False,
            description="Least cosine similarity of a non-match kept for review (default: 0.2 below the threshold).",
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        Form(ge=-1.0, le=1.0, allow_inf_nan=False, description="Cosine match threshold (default: calibrated)."),
    ] = None,
    z_threshold: Annotated[
        float | None, Form(allow_inf_nan=False, description="Standardised-similarity threshold (default: calibrated).")
    ] = None,
    adaptive: Annotated[bool, Form(description="Also require standing out from the gallery (the z test).")] = True,
    fuse: Annotated[Literal["mean", "max"], Form(description="Several pictures: mean feature or best match.")] = "mean",
) -> SearchRequest:
    """The search form as a checked :class:`SearchRequest`; its pictures as :class:`Upload` s."""
    files = list(image or [])
    if len(files) > MAX_IMAGES:
        raise _err(400, f"at most {MAX_IMAGES} query pictures per search, got {len(files)}")
    names = [Path(f.filename or f"picture {i + 1}").name for i, f in enumerate(files)]
    with answering():
        request = SearchRequest(
            files, names or None, track=track, sighting=sighting, sightings=sightings or (), top=top, cameras=camera,
            since=since or None, until=until or None, rerank=rerank, review=review, review_floor=review_floor,
            threshold=threshold, z_threshold=z_threshold, adaptive=adaptive, fuse=fuse,
        )  # fmt: skip
    uploads = [Upload(name, await f.read()) for name, f in zip(names, files, strict=True)]
    return dataclasses.replace(request, pictures=uploads)


SearchForm = Annotated[SearchRequest, Depends(search_request)]


async def _search(svc: Service, request: SearchRequest, finish: Callable[[SearchResult], T]) -> T:
    """Run the search and ``finish`` its result in a search thread. The pictures are checked from their
    headers here (400 at once, before any queue), then decoded in the search thread, or first in the
    decode thread when they decode to more than ``heavy_pixels``; a full line answers 429."""
    lim = svc.limits
    try:
        with svc.answering():
            probed = probe_pictures(request.pictures, lim.max_pixels, lim.max_request_pixels, svc.query_size)
    except HTTPException:
        await asyncio.sleep(lim.refusal_delay)  # no CPU: a client that sends nothing but bad pictures waits
        raise

    def decode() -> list[Any]:
        with svc.answering():
            return [decode_probed(p, svc.query_size) for p in probed]

    pictures: list[Any] | None = None
    if sum(p.pixels for p in probed) > lim.heavy_pixels:
        svc.searches.check()  # no decoding for a search that would then find no place in the line
        pictures = await svc.decodes.run(decode)

    def work() -> T:
        with svc.counting(), svc.answering():
            decoded = decode() if pictures is None else pictures
            with svc.live.lease() as g:
                result = api.search(g, dataclasses.replace(request, pictures=decoded), svc.model)
            try:
                return finish(result)  # the report shows the query pictures
            finally:
                result.query_images = []  # not kept: the pictures are the client's

    return await svc.searches.run(work)


SEARCH_ERRORS = _responses(400, 403, 404, 408, 409, 413, 429, 503)


@router.post(
    "/search",
    response_model=SearchResultModel,
    responses=SEARCH_ERRORS,
    summary="Find a person: the JSON of `reidkit search --json`",
)
async def search(svc: Svc, request: SearchForm) -> Response:
    """Search the gallery for the person in the uploaded picture(s), or for a gallery track or sighting.

    Appearances come grouped by camera in time order, with the match rule and the closest
    non-matches (`near_misses`) for review. Query pictures are named by their upload file names, sources
    by their public form (a file's name; a stream's URL without credentials), the gallery by its folder's
    name: no server path."""
    return JSONResponse(await _search(svc, request, lambda r: r.public().to_dict()))


@router.post(
    "/search/html",
    response_class=HTMLResponse,
    responses={**SEARCH_ERRORS, 200: {"content": {"text/html": {}}, "description": "An HTML fragment."}},
    summary="The same search, as the HTML fragment the page shows",
)
async def search_html(svc: Svc, http: Request, request: SearchForm) -> HTMLResponse:
    """The results rendered by the same code as `reidkit search --html` (per-camera summary, timeline,
    appearances by camera, review), with pictures as URLs of /crops/{id} and frames of /frames/{id}."""
    from reidkit.search.query.report import render_results, result_meta

    base = _base(http)

    def render(raw: SearchResult) -> str:
        framed = {h.id for h in _every_hit(raw) if api.has_frame(raw.gallery, h)}  # read with the server's paths
        result = raw.public()

        def url(hit: Hit, kind: str) -> str | None:
            if kind == "crop":
                return f"{base}/crops/{hit.id}"
            return f"{base}/frames/{hit.id}" if hit.id in framed else None

        q = result.query
        attrs = {
            "appearances": len(result.appearances),
            "matches": len(result.hits),
            "near": len(result.near_misses),
            "cameras": len(result.by_camera()),
            "query-kind": q.kind,
            "query-track": "" if q.track is None else q.track.id,
            "review-floor": "" if result.review_floor is None else f"{result.review_floor:.3f}",
        }
        data = "".join(f' data-{k}="{html.escape(str(v))}"' for k, v in attrs.items())
        meta = "".join(f'<p class="meta">{m}</p>' for m in result_meta(result))
        body = render_results(result, url, interactive=True)
        return f'<div class="results"{data}><div class="result-meta">{meta}</div>{body}</div>'

    return HTMLResponse(await _search(svc, request, render))


@router.post(
    "/search/report",
    response_class=HTMLResponse,
    responses={
        **SEARCH_ERRORS,
        200: {"content": {"text/html": {}}, "description": "A self-contained HTML page (an attachment)."},
    },
    summary="The same search as the HTML report `reidkit search --html` writes (a download)",
)
async def search_report(
    svc: Svc,
    request: SearchForm,
    frames: Annotated[bool, Query(description="Embed the full frames of the best appearances.")] = True,
) -> HTMLResponse:
    """One self-contained page, every picture embedded (:func:`reidkit.search.query.report.render_html`, as
    `reidkit search --html`), worded for a client: sources by their public form, the gallery by its folder's
    name, query pictures by their upload names."""
    page = await _search(svc, request, lambda r: api.search_report(r, frames=bool(frames)))
    name = time.strftime("reidkit-search-%Y%m%d-%H%M%S.html", time.gmtime())
    return HTMLResponse(page, headers={"content-disposition": f'attachment; filename="{name}"'})


def _every_hit(result: SearchResult) -> list[Hit]:
    return [*result.hits, *(a.best for a in [*result.appearances, *result.near_misses])]


# -- gallery -----------------------------------------------------------------------------------------
JPEG = {200: {"content": {"image/jpeg": {}}, "description": "A JPEG picture."}}


def _read(path: str, summary: str, model: Any = None, *errors: int) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """A GET route that reads the gallery: its answer (the JSON of ``model``, else a JPEG) and its errors
    (``errors`` and 503, no gallery yet) documented."""
    responses = _responses(*errors, 503)
    if model is None:
        return router.get(path, response_class=Response, responses={**JPEG, **responses}, summary=summary)
    return router.get(path, response_model=model, responses=responses, summary=summary)


@_read("/gallery", "Gallery overview", GalleryModel)
def gallery_overview(
    svc: Svc,
    http: Request,
    recent: Annotated[int, Query(ge=0, le=200, description="How many of the last sightings to list.")] = RECENT,
) -> Any:
    """Cameras, sources with their counts, totals, the time span and the sightings added last."""
    overview = svc.leased(lambda g: api.gallery_overview(g, int(recent), svc.model_name))
    return {**overview, "recent": _with_urls(overview["recent"], _base(http))}


@_read("/tracks/{track_id}", "A track and its sightings", TrackDetailModel, 404)
def track_detail(svc: Svc, http: Request, track_id: Id) -> Any:
    track = svc.leased(lambda g: api.track_detail(g, track_id))
    return {**track, "sightings": _with_urls(track["sightings"], _base(http))}


@_read("/sightings/{sighting_id}", "One sighting (stored detection)", SightingModel, 404)
def sighting_detail(svc: Svc, http: Request, sighting_id: Id) -> Any:
    return _with_urls([svc.leased(lambda g: api.sighting_detail(g, sighting_id))], _base(http))[0]


@_read("/sightings", "A camera's sightings in time order (browse)", BrowseModel, 400, 404)
def camera_sightings(
    svc: Svc,
    http: Request,
    camera: Annotated[str, Query(max_length=200, description="The camera's name.")],
    since: Annotated[str | None, Query(max_length=64, description="From this time (seconds or ISO-8601).")] = None,
    until: Annotated[str | None, Query(max_length=64, description="Until this time (seconds or ISO-8601).")] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Skip this many (paging).")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_BROWSE, description="At most this many.")] = 60,
    per_track: Annotated[bool, Query(description="One sighting per track (its best crop), or every one.")] = True,
) -> Any:
    """The camera's sightings from `since` to `until` in time order, `limit` from `offset`: one per track
    (its best crop, with the track's crop count) unless `per_track` is false."""
    def browse(g: Gallery) -> dict[str, Any]:
        return api.camera_sightings(
            g, camera, since=since or None, until=until or None, offset=offset, limit=limit, per_track=per_track
        )

    got = svc.leased(browse)
    return {**got, "sightings": _with_urls(got["sightings"], _base(http))}


@_read("/clusters", "The gallery grouped into albums, one per identity found", ClustersModel, 400, 429)
async def clusters(
    svc: Svc,
    http: Request,
    level: Annotated[
        Literal["tracks", "sightings"] | None,
        Query(description="Cluster tracks or sightings (default: tracks when every sighting has one)."),
    ] = None,
    rerank: Annotated[
        bool | None, Query(description="k-reciprocal distances (default: when there are enough items).")
    ] = None,
    eps: Annotated[
        float | None, Query(gt=0.0, lt=2.0, allow_inf_nan=False, description="Neighbourhood radius (default: tuned).")
    ] = None,
    min_samples: Annotated[int, Query(ge=1, le=50, description="DBSCAN: neighbours of a core item.")] = 2,
) -> Any:
    """Albums (`reidkit cluster`'s DBSCAN over the tracks' mean features), largest first, each with its
    cameras, time span and a sample of sightings; worked out in a search thread (429 when the line is
    full) and kept until the gallery grows."""

    def work() -> dict[str, Any]:
        with svc.answering(), svc.live.lease() as g:
            key = (len(g), level, rerank, eps, min_samples)
            with svc.lock:
                cached = svc.albums.get(key)
            if cached is None:
                cached = api.gallery_clusters(
                    g, level=level, rerank=rerank, eps=eps, min_samples=min_samples, model=svc.model
                )
                with svc.lock:
                    svc.albums.clear()  # one gallery state at a time
                    svc.albums[key] = cached
            return cached

    got = await svc.searches.run(work)
    base = _base(http)
    return {**got, "clusters": [{**c, "sightings": _with_urls(c["sightings"], base)} for c in got["clusters"]]}


@_read("/crops/{sighting_id}", "The crop of a sighting (JPEG)", None, 404)
def crop(svc: Svc, sighting_id: Id) -> Response:
    """The stored crop file, or, without one, the box cut from the frame."""
    data = svc.leased(lambda g: api.sighting_crop(g, sighting_id))
    return Response(data, media_type="image/jpeg", headers=PICTURE_CACHE)


@_read("/frames/{sighting_id}", "The full frame of a sighting with its box drawn (JPEG)", None, 404)
def frame(svc: Svc, sighting_id: Id) -> Response:
    """The frame the person was seen in, the box drawn as in the HTML report; 404 when it cannot be
    read (no frame number, a missing or unreadable video, a crop-only source)."""
    data = svc.leased(lambda g: api.sighting_frame(g, sighting_id))
    return Response(data, media_type="image/jpeg", headers=PICTURE_CACHE)


@router.get("/health", response_model=HealthModel, summary="Liveness (no token needed)")
def health(svc: Svc) -> Any:
    return {"status": "ok", "gallery": svc.live.ready, "auth": svc.auth}


# -- the page ------------------------------------------------------------------------------------------
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}


@router.get("/", include_in_schema=False)
def page(svc: Svc) -> Response:
    return Response(svc.static["index.html"], media_type=TYPES[".html"], headers={"cache-control": "no-cache"})


@router.get("/static/{name}", include_in_schema=False)
def static_file(svc: Svc, name: str) -> Response:
    if name not in svc.static:  # a fixed set of names: nothing the client sends becomes a path
        raise _err(404, f"no static file {name!r}")
    return Response(svc.static[name], media_type=TYPES[Path(name).suffix], headers={"cache-control": "no-cache"})


# -- the app -------------------------------------------------------------------------------------------
def create_app(
    gallery_dir: str | os.PathLike[str],
    *,
    embedder: Any = None,
    model_info: Any = None,
    model: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    backend: str = "torch",
    token: str | None = None,
    max_upload: int = MAX_UPLOAD,
    max_pixels: int = MAX_PIXELS,
    max_request_pixels: int = MAX_REQUEST_PIXELS,
    cors: Sequence[str] | None = None,
    hosts: Sequence[str] | None = None,
    workers: int | None = None,
    max_queue: int = MAX_QUEUE,
    read_timeout: float | None = READ_TIMEOUT,
    refusal_delay: float = REFUSAL_DELAY,
    refresh_s: float = 1.0,
) -> FastAPI:
    """The search service over the gallery at ``gallery_dir`` (see the module docstring).

    The query model: ``embedder`` and ``model_info`` as given, else loaded here once from ``model`` /
    ``weights`` (default: the shipped model), on ``backend`` (torch, as ``reidkit search``, or onnx;
    :func:`reidkit.search.api.load_model`, ApiError when it cannot be).
    ``workers``: search threads (default: the CPU count); torch and FAISS keep their default thread
    counts, as in ``reidkit search``, so the answers are bit-identical to the command's (FAISS's thread
    count changes its float rounding). ``refresh_s``: how often to look for rows written by another process.
    The gallery folder need not hold a gallery yet (503 until it does).

    Limits (see the module docstring): ``max_upload`` bytes per request, ``max_pixels`` per query picture,
    ``max_request_pixels`` decoded per search, ``max_queue`` searches waiting, a body in ``read_timeout``
    seconds plus one per 10 kB (None: no limit); a search refused for its pictures is answered after
    ``refusal_delay`` seconds (a client that floods bad pictures sends one a second per connection).
    ``hosts``: the Host names it answers to (default: ``DEFAULT_HOSTS``, the loopback names;
    ``*.example.org`` a domain's, ``*`` any; :func:`reidkit.service.security.allowed_hosts` gives
    ``reidkit serve``'s). ``cors``: browser origins whose pages may call it.
    """
    from reidkit.search.query.report import RESULTS_CSS

    loaded = (
        LoadedModel(embedder, model_info) if embedder is not None else api.load_model(model, weights, backend=backend)
    )
    if model_info is not None:
        loaded = dataclasses.replace(loaded, info=model_info)
    static = {n: (resources.files("reidkit.service") / "static" / n).read_bytes() for n in STATIC}
    static["results.css"] = RESULTS_CSS.encode()
    threads = workers or os.cpu_count() or 1
    searches = Lane("searches", ThreadPoolExecutor(threads, thread_name_prefix="reidkit-search"), threads, max_queue)
    decoder = ThreadPoolExecutor(1, thread_name_prefix="reidkit-decode", initializer=_low_priority)
    decodes = Lane("large-picture searches", decoder, 1, HEAVY_QUEUE)
    live = _follow(gallery_dir, loaded.embedder, refresh_s)
    folder = live.root if is_milvus(gallery_dir) else Path(gallery_dir)  # Milvus: its media folder, if open
    known = {str(folder): folder.name, str(folder.resolve()): folder.resolve().name} if folder.name else {}
    if is_milvus(gallery_dir):
        known[str(gallery_dir)] = redact_uri(str(gallery_dir))
    limits = Limits(int(max_pixels), int(max_request_pixels), refusal_delay=float(refusal_delay))
    query_size = _query_size(loaded.embedder)
    svc = Service(live, loaded, searches, decodes, limits, query_size, static, auth=bool(token), known=known)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        for lane in (searches, decodes):
            lane.pool.shutdown(wait=True, cancel_futures=True)
        live.close()

    app = FastAPI(
        title="reidkit search service",
        version="1",
        summary="Find every appearance of a person in a reidkit gallery.",
        description=(
            "The JSON of `POST /search` is what `reidkit search --json` writes, with sources by their public "
            "form and no server path. Crops and frames are served by sighting id. "
            + ("Every endpoint but /health needs `Authorization: Bearer <token>`." if token else "")
        ),
        docs_url=None,  # Swagger UI loads from a CDN; the service works offline
        redoc_url=None,
        lifespan=lifespan,
        form_limits={"max_files": MAX_IMAGES, "max_fields": api.MAX_SIGHTINGS + 50},
    )
    app.include_router(router)
    app.state.service = svc
    app.state.live, app.state.stats = live, svc.stats
    app.state.embedder, app.state.model_info = loaded.embedder, loaded.info
    # Middleware, innermost first: body size and time, token, same-origin POSTs, Host names, the security
    # headers (on every answer, refusals too), then CORS (outermost, so it answers pre-flight requests,
    # which carry no token).
    app.add_middleware(BodyLimit, limit=int(max_upload), timeout=read_timeout, min_rate=MIN_RATE)
    if token:
        _document_token(app)
        open_paths = {"/", "/health", *(f"/static/{n}" for n in static)}
        app.add_middleware(BearerAuth, token=token, open_paths=open_paths)
    app.add_middleware(SameOrigin, origins=list(cors or ()))
    app.add_middleware(HostCheck, hosts=list(DEFAULT_HOSTS if hosts is None else hosts), open_paths={"/health"})
    app.add_middleware(SecurityHeaders)
    if cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def _low_priority() -> None:
    """Run this thread at the lowest CPU priority (nice 19, Linux: per thread): a large picture is decoded
    with the CPU that searches leave, so a stream of them cannot slow everyone else's searches."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _follow(gallery_dir: str | os.PathLike[str], embedder: Any, refresh_s: float) -> LiveGallery | ServerGallery:
    """The read-only view of the gallery (a folder, or Milvus); GalleryError if its features are not the model's."""
    dim = int(embedder.embed([np.zeros((256, 128, 3), np.uint8)]).shape[1])  # warm-up, and the feature size
    live = follow_gallery(gallery_dir, refresh_s=refresh_s)
    if live.ready:
        with live.lease() as g:
            if g.dim is not None and g.dim != dim:
                live.close()
                raise GalleryError(
                    f"gallery {gallery_dir} holds {g.dim}-d features but the model gives {dim}-d: "
                    "serve it with the --weights/--model that built it"
                )
    return live


def _query_size(embedder: Any) -> tuple[int, int] | None:
    """``(width, height)`` to decode uploads to when the Embedder resizes with PIL, else None."""
    pre = getattr(embedder, "preprocess", None)
    if pre is not None and getattr(pre, "method", None) == "pil":
        return int(pre.size[1]), int(pre.size[0])
    return None


def _document_token(app: FastAPI) -> None:
    """Put the bearer scheme, and the 401 answer, on every operation of the schema but /health."""
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = plain_openapi()
            schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            for path, ops in schema["paths"].items():
                for op in ops.values():
                    if path != "/health":
                        op["security"] = [{"bearer": []}]
                        op["responses"].update({str(k): v for k, v in _responses(401).items()})
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
