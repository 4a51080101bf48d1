"""The search service: ``reidkit search`` over HTTP, and a web page for it (``reidkit serve``).

:func:`create_app` builds a FastAPI app over one gallery folder:

* ``POST /search`` (multipart: ``image`` pictures, or a ``track`` / ``sighting`` id, and the options
  of ``reidkit search``) answers exactly the JSON of ``reidkit search --json``;
  ``POST /search/html`` the same search as the HTML fragment the page shows (one rendering with
  ``reidkit search --html``: :func:`reidkit.search.query.report.render_results`).
* ``GET /gallery`` (overview), ``/tracks/{id}``, ``/sightings/{id}``, ``/crops/{id}`` and
  ``/frames/{id}`` (JPEGs, by id only: no client-given path reaches the file system), ``/health``,
  the page at ``/`` and the schema at ``/openapi.json``.

Every route parses its input, makes one call into :mod:`reidkit.search.api` (the CLI's calls too)
and words the answer; :func:`answering` turns the API's errors into HTTP statuses. The model loads
once, when the app is made. Searches run in a pool of ``workers`` threads (the CPU work releases the
GIL; a :class:`~reidkit.search.storage.Gallery` is thread-safe) against a read-only gallery that
follows ``reidkit ingest`` writing from another process (:class:`LiveGallery`).

Safety (:mod:`reidkit.service.security`): request bodies over ``max_upload`` bytes get 413 (from the
Content-Length header before anything is read, else as soon as the count passes it); anything that is
not a decodable image, or has more than ``max_pixels`` pixels (decompression bombs), gets 400 before it
is decoded; with a ``token`` every endpoint but ``/health`` and the page needs
``Authorization: Bearer <token>``; no CORS headers unless ``cors`` origins are given; the gallery is
only ever read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import os
import threading
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

from reidkit.search import api
from reidkit.search.api import ApiError, EmptyGallery, LoadedModel, NotFound, SearchRequest
from reidkit.search.query.search import SearchResult
from reidkit.search.storage.gallery import Gallery
from reidkit.search.storage.live import LiveGallery, NoGallery
from reidkit.search.storage.records import GalleryError, Hit
from reidkit.service.models import (
    ErrorModel,
    GalleryModel,
    HealthModel,
    SearchResultModel,
    SightingModel,
    TrackDetailModel,
)
from reidkit.service.security import MB, BearerAuth, BodyLimit, SecurityHeaders

MAX_UPLOAD = 10 * MB
MAX_PIXELS = 40_000_000  # per query picture (a 7,700 x 5,200 photo); more is refused before decoding
MAX_IMAGES = 16  # query pictures per search
MAX_TOP = 2000  # candidates (k) per search: re-ranking is O(k^2)
MAX_REVIEW = 100
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


class BadPicture(ValueError):
    """An upload that is not a picture the service will decode (the message says which and why)."""


@contextlib.contextmanager
def answering() -> Iterator[None]:
    """The API's errors as HTTP answers: 404 no such id, 409 nothing to search yet, 503 no gallery yet,
    400 any other bad input (the API's message as the detail)."""
    try:
        yield
    except NoGallery as exc:
        raise _err(503, str(exc)) from None
    except NotFound as exc:
        raise _err(404, str(exc)) from None
    except EmptyGallery as exc:
        raise _err(409, str(exc)) from None
    except (ApiError, BadPicture) as exc:
        raise _err(400, str(exc)) from None


# -- pictures --------------------------------------------------------------------------------------
def decode_picture(data: bytes, name: str, max_pixels: int = MAX_PIXELS, size: tuple[int, int] | None = None) -> Any:
    """An uploaded file as an RGB PIL image, or :class:`BadPicture`.

    The checks are :func:`reidkit.imaging.open_picture`'s (every untrusted picture gets the same ones);
    this only words the answer. ``size`` ``(width, height)``: resize right away, exactly as the
    Embedder's PIL path would (bilinear), so a large photo is not kept in memory at full size.
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


class Upload(NamedTuple):
    """A query picture as uploaded: its file name (no folders) and bytes, decoded in the search pool."""

    name: str
    data: bytes


# -- what the routes share -------------------------------------------------------------------------------
@dataclasses.dataclass
class Service:
    """The state of one app: the gallery that follows the writer, the query model, the search threads,
    the page's files and the search counters (``stats``: running now, most at once, done)."""

    live: LiveGallery
    model: LoadedModel
    pool: ThreadPoolExecutor
    max_pixels: int
    query_size: tuple[int, int] | None  # decode uploads straight to the model's input size (PIL resize)
    static: dict[str, bytes]
    auth: bool
    stats: dict[str, int] = dataclasses.field(default_factory=lambda: {"active": 0, "max_active": 0, "searches": 0})
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @property
    def model_name(self) -> str | None:
        return getattr(self.model.info, "name", None)

    async def in_pool(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)

    def leased(self, fn: Callable[[Gallery], T]) -> T:
        """``fn`` of the gallery as it is now, its errors answered (:func:`answering`)."""
        with answering(), self.live.lease() as g:
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
) -> SearchRequest:
    """The search form as a checked :class:`SearchRequest`; its pictures as :class:`Upload` s."""
    files = list(image or [])
    if len(files) > MAX_IMAGES:
        raise _err(400, f"at most {MAX_IMAGES} query pictures per search, got {len(files)}")
    names = [Path(f.filename or f"picture {i + 1}").name for i, f in enumerate(files)]
    with answering():
        request = SearchRequest(
            files, names or None, track=track, sighting=sighting, top=top, cameras=camera, since=since or None,
            until=until or None, rerank=rerank, review=review, threshold=threshold, z_threshold=z_threshold,
            adaptive=adaptive, fuse=fuse,
        )  # fmt: skip
    uploads = [Upload(name, await f.read()) for name, f in zip(names, files, strict=True)]
    return dataclasses.replace(request, pictures=uploads)


SearchForm = Annotated[SearchRequest, Depends(search_request)]


async def _search(svc: Service, request: SearchRequest) -> SearchResult:
    """Run the search in the pool: decode the uploads, then :func:`reidkit.search.api.search`."""

    def work() -> SearchResult:
        with svc.counting(), answering():
            pictures = [decode_picture(u.data, u.name, svc.max_pixels, svc.query_size) for u in request.pictures]
            with svc.live.lease() as g:
                result = api.search(g, dataclasses.replace(request, pictures=pictures), svc.model)
        result.query_images = []  # not kept: the pictures are the client's
        return result

    return await svc.in_pool(work)


SEARCH_ERRORS = _responses(400, 404, 409, 413, 503)


@router.post(
    "/search",
    response_model=SearchResultModel,
    responses=SEARCH_ERRORS,
    summary="Find a person: the JSON of `reidkit search --json`",
)
async def search(svc: Svc, request: SearchForm) -> Response:
    """Search the gallery for the person in the uploaded picture(s), or for a gallery track or sighting.

    Appearances come grouped by camera in time order, with the match rule and the closest
    non-matches (`near_misses`) for review. Query pictures are named by their upload file names."""
    return JSONResponse((await _search(svc, request)).to_dict())


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

    result = await _search(svc, request)
    base = _base(http)

    def url(hit: Hit, kind: str) -> str | None:
        if kind == "crop":
            return f"{base}/crops/{hit.id}"
        return f"{base}/frames/{hit.id}" if api.has_frame(result.gallery, hit) else None

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

    return HTMLResponse(await svc.in_pool(render))


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
    cors: Sequence[str] | None = None,
    workers: int | None = None,
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
    """
    from reidkit.search.query.report import RESULTS_CSS

    loaded = (
        LoadedModel(embedder, model_info) if embedder is not None else api.load_model(model, weights, backend=backend)
    )
    if model_info is not None:
        loaded = dataclasses.replace(loaded, info=model_info)
    static = {n: (resources.files("reidkit.service") / "static" / n).read_bytes() for n in STATIC}
    static["results.css"] = RESULTS_CSS.encode()
    pool = ThreadPoolExecutor(workers or os.cpu_count() or 1, thread_name_prefix="reidkit-search")
    live = _follow(gallery_dir, loaded.embedder, refresh_s)
    svc = Service(live, loaded, pool, max_pixels, _query_size(loaded.embedder), static, auth=bool(token))

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
    app.include_router(router)
    app.state.service = svc
    app.state.live, app.state.stats = live, svc.stats
    app.state.embedder, app.state.model_info = loaded.embedder, loaded.info
    # Middleware, innermost first: body limit, then token, then security headers, then CORS (outermost,
    # so it answers pre-flight requests, which carry no token).
    app.add_middleware(BodyLimit, limit=int(max_upload))
    if token:
        _document_token(app)
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


def _follow(gallery_dir: str | os.PathLike[str], embedder: Any, refresh_s: float) -> LiveGallery:
    """The read-only view of the gallery folder; GalleryError if the gallery's features are not the model's."""
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
