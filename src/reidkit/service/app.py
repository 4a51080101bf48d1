"""The search service: ``reidkit search`` over HTTP, and a web page for it (``reidkit serve``).

:func:`create_app` builds a FastAPI app over one gallery folder:

* ``POST /search`` (multipart: ``image`` pictures, or a ``track`` / ``sighting`` id, and the options
  of ``reidkit search``) answers exactly the JSON of ``reidkit search --json``;
  ``POST /search/html`` the same search as the HTML fragment the page shows (one rendering with
  ``reidkit search --html``: :func:`reidkit.search.query.report.render_results`).
* ``GET /gallery`` (overview), ``/tracks/{id}``, ``/sightings/{id}``, ``/crops/{id}`` and
  ``/frames/{id}`` (JPEGs, by id only: no client-given path reaches the file system), ``/health``,
  the page at ``/`` and the schema at ``/openapi.json``.

The model loads once, when the app is made. Searches run in a pool of ``workers`` threads (the CPU
work releases the GIL; a :class:`~reidkit.search.Gallery` is thread-safe) against a read-only
gallery that follows ``reidkit ingest`` writing from another process (:class:`LiveGallery`).

Safety: request bodies over ``max_upload`` bytes get 413 (from the Content-Length header before
anything is read, else as soon as the count passes it); anything that is not a decodable image, or
has more than ``max_pixels`` pixels (decompression bombs), gets 400 before it is decoded; with a
``token`` every endpoint but ``/health`` and the page needs ``Authorization: Bearer <token>``;
no CORS headers unless ``cors`` origins are given; the gallery is only ever read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import logging
import math
import os
import secrets
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response

from reidkit.search.storage.gallery import Gallery
from reidkit.search.storage.live import LiveGallery, NoGallery
from reidkit.search.storage.records import GalleryError, Hit, Record, Track, to_seconds
from reidkit.search.storage.schema import RECORD_SQL, TRACK_SQL
from reidkit.service.models import (
    ErrorModel,
    GalleryModel,
    HealthModel,
    SearchResultModel,
    SightingModel,
    TrackDetailModel,
)

log = logging.getLogger(__name__)

MB = 1024 * 1024
MAX_UPLOAD = 10 * MB
MAX_PIXELS = 40_000_000  # per query picture (a 7,700 x 5,200 photo); more is refused before decoding
MAX_IMAGES = 16  # query pictures per search
MAX_TOP = 2000  # candidates (k) per search: re-ranking is O(k^2)
MAX_REVIEW = 100
MAX_ID = 2**63 - 1  # SQLite's largest integer
RECENT = 24
STATIC = ("index.html", "app.js", "app.css")
JPEG_QUALITY = 85
FORMATS = "JPEG, PNG, WebP, GIF, BMP, TIFF"


# -- errors ----------------------------------------------------------------------------------------
def _err(status: int, detail: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=detail, headers=headers)


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    words = {
        400: "Bad request: not a decodable picture, no query, conflicting options, a malformed time.",
        401: "Missing or wrong bearer token (only when the service was started with one).",
        404: "No such id in the gallery (or, for frames, the frame cannot be read).",
        409: "The gallery is empty: nothing to search yet.",
        413: "Request body larger than the upload limit.",
        503: "No gallery at the folder yet (build one with reidkit ingest).",
    }
    # The JSON error body spelled out (not `model=`): FastAPI would file a model under the route's media
    # type, which is text/html or image/jpeg for the page fragment and the pictures.
    body = {"application/json": {"schema": ErrorModel.model_json_schema()}}
    return {c: {"description": words[c], "content": body} for c in codes}


class _TooLarge(HTTPException):
    """Raised from the body reader when the upload limit is passed (FastAPI re-raises HTTPExceptions
    from body parsing, so the client gets this 413, not a generic 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the {_size(limit)} upload limit")


def _size(n: int) -> str:
    return f"{n / MB:g} MB" if n >= MB else f"{n:,} bytes"


async def _send_json(send: Callable[..., Awaitable[None]], status: int, body: dict, headers: Sequence = ()) -> None:
    import json

    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": data})


class BodyLimit:
    """ASGI middleware: 413 for request bodies over ``limit`` bytes, decided from Content-Length
    before reading, and by counting the bytes as they arrive (chunked uploads)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    await _send_json(send, 413, {"detail": _TooLarge(self.limit).detail}, [(b"connection", b"close")])
                    return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        await self.app(scope, counted, send)


class BearerAuth:
    """ASGI middleware: every path but ``open_paths`` needs ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str, open_paths: set[str]) -> None:
        self.app = app
        self.token = token.encode()
        self.open_paths = open_paths

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    given = b""
        if not given or not secrets.compare_digest(given.strip(), self.token):
            detail = "missing or wrong token: send the header Authorization: Bearer <token>"
            await _send_json(send, 401, {"detail": detail}, [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware: nosniff on everything; the page may load only its own scripts and styles."""

    CSP = (
        b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                if any(k == b"content-type" and v.startswith(b"text/html") for k, v in headers):
                    headers.append((b"content-security-policy", self.CSP))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


# -- pictures --------------------------------------------------------------------------------------
class BadPicture(ValueError):
    """An upload that is not a picture the service will decode (the message says which and why)."""


def decode_picture(data: bytes, name: str, max_pixels: int = MAX_PIXELS, size: tuple[int, int] | None = None) -> Any:
    """An uploaded file as an RGB PIL image, or :class:`BadPicture`.

    The checks are :func:`reidkit.search.ingest.photos.open_picture`'s (every untrusted picture gets the
    same ones); this only words the answer. ``size`` ``(width, height)``: resize right away, exactly
    as the Embedder's PIL path would (bilinear), so a large photo is not kept in memory at full size.
    """
    from PIL import Image

    from reidkit.imaging import PhotoError, open_picture

    try:
        img, _ = open_picture(data, name, max_pixels)
    except PhotoError as exc:
        w, h = exc.size or (0, 0)
        raise BadPicture(
            {
                "empty": f"{name}: empty file, not a picture",
                "format": f"{name}: not a decodable picture (not an image format the service reads: {FORMATS})",
                "too_large": f"{name}: {w} x {h} pixels is more than the limit of {max_pixels:,} pixels per picture "
                "(refused before decoding)",
                "bomb": f"{name}: refused as a decompression bomb ({exc.detail})",
                "truncated": f"{name}: truncated or corrupt picture ({exc.detail})",
            }.get(exc.kind, f"{name}: unreadable picture ({exc.detail or exc})")
        ) from None
    rgb = img.convert("RGB")
    if size is not None and rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    return rgb


def _jpeg(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover
        raise _err(500, "could not encode the picture")
    return buf.tobytes()


Id = Annotated[int, PathParam(ge=0, le=MAX_ID, description="The id (row id in the gallery).")]


# -- the search form ---------------------------------------------------------------------------------
@dataclasses.dataclass
class SearchForm:
    images: list[UploadFile]
    track: int | None
    sighting: int | None
    top: int
    cameras: list[str] | None
    since: str | None
    until: str | None
    rerank: bool
    review: int
    threshold: float | None
    z_threshold: float | None
    adaptive: bool
    fuse: Literal["mean", "max"]


def search_form(
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
    top: Annotated[int, Form(ge=1, le=MAX_TOP, description="Candidates taken from the gallery (k).")] = 200,
    camera: Annotated[list[str] | None, Form(description="Only these cameras (repeat the field).")] = None,
    since: Annotated[str | None, Form(description="Only from this time (seconds or ISO-8601).")] = None,
    until: Annotated[str | None, Form(description="Only until this time (seconds or ISO-8601).")] = None,
    rerank: Annotated[bool, Form(description="k-reciprocal re-ranking of the candidates.")] = True,
    review: Annotated[int, Form(ge=0, le=MAX_REVIEW, description="Closest non-matches kept for review (0: none).")] = 8,
    threshold: Annotated[
        float | None,
        Form(ge=-1.0, le=1.0, allow_inf_nan=False, description="Cosine match threshold (default: calibrated)."),
    ] = None,
    z_threshold: Annotated[
        float | None, Form(allow_inf_nan=False, description="Standardised-similarity threshold (default: calibrated).")
    ] = None,
    adaptive: Annotated[bool, Form(description="Also require standing out from the gallery (the z test).")] = True,
    fuse: Annotated[Literal["mean", "max"], Form(description="Several pictures: mean feature or best match.")] = "mean",
) -> SearchForm:
    return SearchForm(
        list(image or []),
        track,
        sighting,
        top,
        [c for c in camera or [] if c] or None,
        since or None,
        until or None,
        rerank,
        review,
        threshold,
        z_threshold,
        adaptive,
        fuse,
    )


def _time(value: str, what: str) -> float:
    try:
        t = float(value)
    except ValueError:
        try:
            t = to_seconds(value)
        except GalleryError:
            raise _err(400, f"{what}: {value!r} is neither seconds nor an ISO-8601 date-time") from None
    if not math.isfinite(t):
        raise _err(400, f"{what}: {value!r} is not a finite time")
    return t


def _time_range(form: SearchForm) -> tuple[float | None, float | None] | None:
    if form.since is None and form.until is None:
        return None
    lo = None if form.since is None else _time(form.since, "since")
    hi = None if form.until is None else _time(form.until, "until")
    if lo is not None and hi is not None and hi < lo:
        raise _err(400, f"until ({form.until}) is before since ({form.since})")
    return lo, hi


# -- records as JSON ---------------------------------------------------------------------------------
def _track_ids(g: Gallery, records: Sequence[Record]) -> dict[tuple[int, int], int]:
    """Track row ids of the records' (source, tracker id) pairs."""
    out: dict[tuple[int, int], int] = {}
    for key in {(r.source_id, r.track_id) for r in records if r.track_id is not None}:
        row = g.db.execute("SELECT id FROM tracks WHERE source_id = ? AND track_id = ?", key).fetchone()
        if row is not None:
            out[key] = int(row[0])  # type: ignore[index]
    return out


def _sighting(r: Record, track: int | None, base: str) -> dict[str, Any]:
    from reidkit.search.query.report import format_time

    return {
        "id": r.id,
        "source_id": r.source_id,
        "source": r.source,
        "camera": r.camera,
        "timestamp": r.timestamp,
        "time_text": format_time(r.timestamp),
        "frame": r.frame,
        "box": None if r.box is None else list(r.box),
        "track_id": r.track_id,
        "track": track,
        "crop": r.crop,
        "quality": r.quality,
        "crop_url": f"{base}/crops/{r.id}",
        "frame_url": None if r.frame is None else f"{base}/frames/{r.id}",
    }


def _sightings(g: Gallery, records: Sequence[Record], base: str) -> list[dict[str, Any]]:
    tracks = _track_ids(g, records)
    return [_sighting(r, None if r.track_id is None else tracks.get((r.source_id, r.track_id)), base) for r in records]


def _record(g: Gallery, sid: int) -> Record:
    try:
        return g.get([sid])[0]
    except KeyError:
        raise _err(404, f"no sighting {sid} in the gallery") from None


def _track(g: Gallery, tid: int) -> Track:
    row = g.db.execute(f"{TRACK_SQL} WHERE t.id = ?", (tid,)).fetchone()
    if row is None:
        raise _err(404, f"no track {tid} in the gallery")
    return Track.from_row(row)


def _crop_file(g: Gallery, crop: str | None) -> Path | None:
    if not crop:
        return None
    p = Path(crop)
    return p if p.is_absolute() else g.root / p


def _has_frame(gallery_root: str | Path, r: Record) -> bool:
    """Whether a frame can exist for the record (the page offers to open it): a frame number in a video
    file, or in a photo folder whose ledger names the picture. A folder of crops has none."""
    if r.frame is None or r.frame < 0 or "://" in r.source:
        return False
    src = Path(r.source)
    if src.is_file():
        return True
    if not src.is_dir():
        return False
    try:
        from reidkit.search.storage.media import lookup_photo
    except ImportError:  # pragma: no cover
        return False
    return lookup_photo(gallery_root, r.source, r.frame) is not None


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


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
    cors: Sequence[str] | None = None,
    workers: int | None = None,
    refresh_s: float = 1.0,
) -> FastAPI:
    """The search service over the gallery at ``gallery_dir`` (see the module docstring).

    The query model: ``embedder`` and ``model_info`` as given, else loaded here once from ``model`` /
    ``weights`` (default: the shipped model), on ``backend`` (torch, as ``reidkit search``, or onnx).
    ``workers``: search threads (default: the CPU count); torch and FAISS keep their default thread
    counts, as in ``reidkit search``, so the answers are bit-identical to the command's (FAISS's thread
    count changes its float rounding). ``refresh_s``: how often to look for rows written by another process.
    The gallery folder need not hold a gallery yet (503 until it does).
    """
    from reidkit.search.query.report import RESULTS_CSS

    if embedder is None:
        from reidkit.extract import make_embedder

        embedder, info = make_embedder(model, weights, backend)  # type: ignore[arg-type]
        model_info = model_info or info
    dim = int(embedder.embed([np.zeros((256, 128, 3), np.uint8)]).shape[1])  # warm-up, and the feature size
    live = LiveGallery(gallery_dir, refresh_s=refresh_s)
    if live.ready:
        with live.lease() as g:
            if g.dim is not None and g.dim != dim:
                live.close()
                raise GalleryError(
                    f"gallery {gallery_dir} holds {g.dim}-d features but the model gives {dim}-d: "
                    "serve it with the --weights/--model that built it"
                )
    pre = getattr(embedder, "preprocess", None)
    query_size = None  # decode uploads straight to the model's input size when the Embedder resizes with PIL
    if pre is not None and getattr(pre, "method", None) == "pil":
        query_size = (int(pre.size[1]), int(pre.size[0]))
    pool = ThreadPoolExecutor(workers or os.cpu_count() or 1, thread_name_prefix="reidkit-search")
    stats = {"active": 0, "max_active": 0, "searches": 0}
    stats_lock = threading.Lock()
    static = {n: (resources.files("reidkit.service") / "static" / n).read_bytes() for n in STATIC}
    static["results.css"] = RESULTS_CSS.encode()
    model_name = getattr(model_info, "name", None)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        pool.shutdown(wait=True, cancel_futures=True)
        live.close()

    app = FastAPI(
        title="reidkit search service",
        version="1",
        summary="Find every appearance of a person in a reidkit gallery.",
        description=(
            "The JSON of `POST /search` is exactly what `reidkit search --json` writes. Crops and frames are "
            "served by sighting id. "
            + ("Every endpoint but /health needs `Authorization: Bearer <token>`." if token else "")
        ),
        docs_url=None,  # Swagger UI loads from a CDN; the service works offline
        redoc_url=None,
        lifespan=lifespan,
        form_limits={"max_files": MAX_IMAGES, "max_fields": 200},
    )
    if token:  # document the bearer scheme in the schema
        plain_openapi = app.openapi

        def openapi() -> dict[str, Any]:
            if app.openapi_schema is None:
                schema = plain_openapi()
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer"}
                }
                for path, ops in schema["paths"].items():
                    for op in ops.values():
                        if path != "/health":
                            op["security"] = [{"bearer": []}]
            return app.openapi_schema  # type: ignore[return-value]

        app.openapi = openapi  # type: ignore[method-assign]
    app.state.live = live
    app.state.stats = stats
    app.state.embedder = embedder
    app.state.model_info = model_info
    common = (401, 503) if token else (503,)

    async def in_pool(fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    def leased(fn: Callable[[Gallery], Any]) -> Any:
        try:
            with live.lease() as g:
                return fn(g)
        except NoGallery as exc:
            raise _err(503, str(exc)) from None

    # -- search ------------------------------------------------------------------------------------
    async def run_search(form: SearchForm) -> Any:
        from reidkit.imaging import ImageError
        from reidkit.search.query.search import search_person

        given = [bool(form.images), form.track is not None, form.sighting is not None]
        if sum(given) != 1:
            raise _err(
                400,
                "give the person to search for: one or more `image` pictures, a `track` id or a `sighting` id "
                f"(exactly one of them; got {sum(given)})",
            )
        if len(form.images) > MAX_IMAGES:
            raise _err(400, f"at most {MAX_IMAGES} query pictures per search, got {len(form.images)}")
        time_range = _time_range(form)
        uploads = [(Path(f.filename or f"picture {i + 1}").name, await f.read()) for i, f in enumerate(form.images)]

        def work() -> Any:
            with stats_lock:
                stats["active"] += 1
                stats["max_active"] = max(stats["max_active"], stats["active"])
            try:
                pictures = [decode_picture(data, name, max_pixels, query_size) for name, data in uploads]
                with live.lease() as g:
                    if len(g) == 0:
                        raise _err(
                            409, f"gallery {g.root} is empty: nothing to search yet (add to it with reidkit ingest)"
                        )
                    query: dict[str, Any] = {}
                    label = None
                    if pictures:
                        query = {"queries": pictures}
                    elif form.track is not None:
                        query = {"track_id": form.track}
                    else:
                        rec = _record(g, int(form.sighting))  # type: ignore[arg-type]
                        track = (
                            None if rec.track_id is None else _track_ids(g, [rec]).get((rec.source_id, rec.track_id))
                        )
                        if track is not None:
                            query = {"track_id": track}
                        else:
                            query, label = {"features": g.features([rec.id])}, f"sighting {rec.id}"
                    result = search_person(
                        g,
                        embedder if pictures else None,
                        k=form.top,
                        rerank=form.rerank,
                        threshold=form.threshold,
                        z_threshold=form.z_threshold,
                        adaptive=form.adaptive,
                        model_info=model_info,
                        cameras=form.cameras,
                        time_range=time_range,
                        fuse=form.fuse,
                        review=form.review,
                        **query,
                    )
                labels = tuple(name for name, _ in uploads) if pictures else (label,) if label else None
                if labels:
                    result.query = dataclasses.replace(result.query, labels=labels)
                result.query_images = []  # not kept: the pictures are the client's
                return result
            except BadPicture as exc:
                raise _err(400, str(exc)) from None
            except NoGallery as exc:
                raise _err(503, str(exc)) from None
            except GalleryError as exc:
                raise _err(404 if "no track" in str(exc) else 400, str(exc)) from None
            except (ImageError, ValueError) as exc:
                raise _err(400, str(exc)) from None
            except KeyError as exc:  # a row removed while the search ran
                raise _err(404, str(exc).strip("'\"")) from None
            finally:
                with stats_lock:
                    stats["active"] -= 1
                    stats["searches"] += 1

        return await in_pool(work)

    search_responses = _responses(400, 404, 409, 413, *common)

    @app.post(
        "/search",
        response_model=SearchResultModel,
        responses=search_responses,
        summary="Find a person: the JSON of `reidkit search --json`",
    )
    async def search(form: Annotated[SearchForm, Depends(search_form)]) -> Response:
        """Search the gallery for the person in the uploaded picture(s), or for a gallery track or sighting.

        Appearances come grouped by camera in time order, with the match rule and the closest
        non-matches (`near_misses`) for review. Query pictures are named by their upload file names."""
        result = await run_search(form)
        return JSONResponse(result.to_dict())

    @app.post(
        "/search/html",
        response_class=HTMLResponse,
        responses={**search_responses, 200: {"content": {"text/html": {}}, "description": "An HTML fragment."}},
        summary="The same search, as the HTML fragment the page shows",
    )
    async def search_html(request: Request, form: Annotated[SearchForm, Depends(search_form)]) -> HTMLResponse:
        """The results rendered by the same code as `reidkit search --html` (per-camera summary, timeline,
        appearances by camera, review), with pictures as URLs of /crops/{id} and frames of /frames/{id}."""
        from reidkit.search.query.report import render_results, result_meta

        result = await run_search(form)
        base = _base(request)

        def url(hit: Hit, kind: str) -> str | None:
            if kind == "crop":
                return f"{base}/crops/{hit.id}"
            return f"{base}/frames/{hit.id}" if _has_frame(result.gallery, hit) else None

        def render() -> str:
            q = result.query
            attrs = {
                "appearances": len(result.appearances),
                "matches": len(result.hits),
                "near": len(result.near_misses),
                "cameras": len(result.by_camera()),
                "query-kind": q.kind,
                "query-track": "" if q.track is None else q.track.id,
            }
            data = "".join(f' data-{k}="{html.escape(str(v))}"' for k, v in attrs.items())
            meta = "".join(f'<p class="meta">{m}</p>' for m in result_meta(result))
            body = render_results(result, url, interactive=True)
            return f'<div class="results"{data}><div class="result-meta">{meta}</div>{body}</div>'

        return HTMLResponse(await in_pool(render))

    # -- gallery -----------------------------------------------------------------------------------
    @app.get("/gallery", response_model=GalleryModel, responses=_responses(*common), summary="Gallery overview")
    def gallery_overview(
        request: Request,
        recent: Annotated[int, Query(ge=0, le=200, description="How many of the last sightings to list.")] = RECENT,
    ) -> Any:
        """Cameras, sources with their counts, totals, the time span and the sightings added last."""
        from reidkit.search.query.report import format_time

        n_recent = int(recent)
        base = _base(request)

        def overview(g: Gallery) -> dict[str, Any]:
            db = g.db
            cams = db.execute(
                "SELECT camera, COUNT(*), MIN(timestamp), MAX(timestamp) FROM detections "
                "GROUP BY camera ORDER BY camera"
            ).fetchall()
            cam_tracks = dict(db.execute("SELECT camera, COUNT(*) FROM tracks GROUP BY camera").fetchall())
            src_n = dict(db.execute("SELECT source_id, COUNT(*) FROM detections GROUP BY source_id").fetchall())
            src_t = dict(db.execute("SELECT source_id, COUNT(*) FROM tracks GROUP BY source_id").fetchall())
            n_tracks = int(db.execute("SELECT COUNT(*) FROM tracks").fetchone()[0])
            sources = g.sources()
            rows = db.execute(f"{RECORD_SQL} ORDER BY d.id DESC LIMIT ?", (n_recent,)).fetchall()
            lo = min((c[2] for c in cams), default=None)
            hi = max((c[3] for c in cams), default=None)
            return {
                "gallery": g.root.name,
                "model": model_name,
                "totals": {
                    "sightings": sum(c[1] for c in cams),
                    "tracks": n_tracks,
                    "sources": len(sources),
                    "cameras": len(cams),
                },
                "searchable": len(g),
                "time_span": {
                    "start": lo,
                    "end": hi,
                    "start_text": None if lo is None else format_time(lo),
                    "end_text": None if hi is None else format_time(hi),
                },
                "cameras": [
                    {
                        "camera": c,
                        "sightings": n,
                        "tracks": int(cam_tracks.get(c, 0)),
                        "first_time": t0,
                        "last_time": t1,
                        "first_text": format_time(t0),
                        "last_text": format_time(t1),
                    }
                    for c, n, t0, t1 in cams
                ],
                "sources": [
                    {
                        "id": s.id,
                        "uri": s.uri,
                        "camera": s.camera,
                        "status": s.status,
                        "progress": s.progress,
                        "sightings": int(src_n.get(s.id, 0)),
                        "tracks": int(src_t.get(s.id, 0)),
                    }
                    for s in sources
                ],
                "recent": _sightings(g, [Record.from_row(r) for r in rows], base),
            }

        return leased(overview)

    @app.get(
        "/tracks/{track_id}",
        response_model=TrackDetailModel,
        responses=_responses(404, *common),
        summary="A track and its sightings",
    )
    def track_detail(request: Request, track_id: Id) -> Any:
        def get(g: Gallery) -> dict[str, Any]:
            t = _track(g, track_id)
            recs = g.records(t.source_id, t.track_id)
            return {**dataclasses.asdict(t), "sightings": _sightings(g, recs, _base(request))}

        return leased(get)

    @app.get(
        "/sightings/{sighting_id}",
        response_model=SightingModel,
        responses=_responses(404, *common),
        summary="One sighting (stored detection)",
    )
    def sighting_detail(request: Request, sighting_id: Id) -> Any:
        return leased(lambda g: _sightings(g, [_record(g, sighting_id)], _base(request))[0])

    jpeg = {200: {"content": {"image/jpeg": {}}, "description": "A JPEG picture."}}

    @app.get(
        "/crops/{sighting_id}",
        response_class=Response,
        responses={**jpeg, **_responses(404, *common)},
        summary="The crop of a sighting (JPEG)",
    )
    def crop(sighting_id: Id) -> Response:
        """The stored crop file, or, without one, the box cut from the frame."""
        import cv2

        from reidkit.search.storage.media import FrameReader, cut_box

        def get(g: Gallery) -> bytes:
            rec = _record(g, sighting_id)
            path = _crop_file(g, rec.crop)
            if path is not None and path.is_file():
                data = path.read_bytes()
                if data[:3] == b"\xff\xd8\xff":
                    return data
                img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                if img is not None:
                    return _jpeg(img)
            reader = FrameReader(str(g.root))
            try:
                frame = reader.read(rec.source, rec.frame)
            finally:
                reader.close()
            cut = None if frame is None else cut_box(frame, rec.box)
            if cut is None:
                raise _err(404, f"sighting {sighting_id} has no crop file and its frame cannot be read")
            return _jpeg(np.ascontiguousarray(cut))

        return Response(leased(get), media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})

    @app.get(
        "/frames/{sighting_id}",
        response_class=Response,
        responses={**jpeg, **_responses(404, *common)},
        summary="The full frame of a sighting with its box drawn (JPEG)",
    )
    def frame(sighting_id: Id) -> Response:
        """The frame the person was seen in, the box drawn as in the HTML report; 404 when it cannot be
        read (no frame number, a missing or unreadable video, a crop-only source)."""
        from reidkit.search.storage.media import FrameReader, draw_box

        def get(g: Gallery) -> bytes:
            rec = _record(g, sighting_id)
            reader = FrameReader(str(g.root))
            try:
                img = reader.read(rec.source, rec.frame)
            finally:
                reader.close()
            if img is None:
                raise _err(404, f"the frame of sighting {sighting_id} cannot be read (source {rec.source})")
            return _jpeg(draw_box(img, rec.box) if rec.box is not None else img)

        return Response(leased(get), media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})

    @app.get("/health", response_model=HealthModel, summary="Liveness (no token needed)")
    def health() -> Any:
        return {"status": "ok", "gallery": live.ready, "auth": bool(token)}

    # -- the page ----------------------------------------------------------------------------------
    types = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return Response(static["index.html"], media_type=types[".html"], headers={"cache-control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str) -> Response:
        if name not in static:  # a fixed set of names: nothing the client sends becomes a path
            raise _err(404, f"no static file {name!r}")
        return Response(static[name], media_type=types[Path(name).suffix], headers={"cache-control": "no-cache"})

    # Middleware, innermost first: body limit, then token, then security headers, then CORS (outermost,
    # so it answers pre-flight requests, which carry no token).
    app.add_middleware(BodyLimit, limit=int(max_upload))
    if token:
        open_paths = {"/", "/health", *(f"/static/{n}" for n in static)}
        app.add_middleware(BearerAuth, token=token, open_paths=open_paths)
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
