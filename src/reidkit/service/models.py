"""The service's response bodies as pydantic models, so the OpenAPI schema documents them.

:class:`SearchResultModel` is the JSON of :meth:`reidkit.search.query.search.SearchResult.to_dict` (what
``reidkit search --json`` writes), field for field; the service sends that dict as it is and the
tests check it against this model (``extra="forbid"``), so the schema cannot drift from the data. The
models of the records in it (hits, tracks, appearances, the query, sightings) are made from their
dataclasses' fields (:func:`_of`), so a field added there is a field of the schema.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from reidkit.search.query.search import Appearance, QueryInfo
from reidkit.search.storage.records import Hit, Record, Track

Box = Annotated[list[int], Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in frame pixels.")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorModel(_Model):
    detail: str = Field(description="What went wrong, and what to do about it.")


def _of(cls: type, name: str, doc: str, **fields: Any) -> type[_Model]:
    """A model with the fields of the dataclass ``cls`` (every one required, typed as annotated), some of
    them re-typed or described by ``fields`` (``name=(type, Field(...))``), and ``fields``' new ones."""
    hints = get_type_hints(cls)
    spec: dict[str, Any] = {f.name: (hints[f.name], ...) for f in dataclasses.fields(cls)}
    return create_model(name, __base__=_Model, __doc__=doc, __module__=__name__, **{**spec, **fields})


HitModel = _of(
    Hit,
    "HitModel",
    "A stored detection and its cosine similarity to the query.",
    timestamp=(float, Field(description="Seconds: Unix time, or seconds into a video.")),
    box=(Box | None, ...),
    track_id=(
        int | None,
        Field(description="The tracker's own id within its source (not the track number: see `track`)."),
    ),
    crop=(str | None, Field(description="The crop file as recorded in the gallery (the service serves it by id).")),
    score=(float, Field(description="Cosine similarity to the query.")),
    picture=(
        str | None,
        Field(description="A photo folder's sighting: the picture's file name in the folder (else null)."),
    ),
)
TrackModel = _of(
    Track,
    "TrackModel",
    "A stored track: a tracker id within a source, with the span and number of its crops.",
    id=(int, Field(description="The gallery's track row id (what `track` searches take).")),
)
QueryModel = _of(QueryInfo, "QueryModel", "What was searched for.", track=(TrackModel | None, ...))
AppearanceModel = _of(
    Appearance,
    "AppearanceModel",
    "One sighting of the person: a track (or a lone detection) on one camera.",
    best=(HitModel, ...),
    track=(
        int | None,
        Field(description="The track number (the gallery's track row id: what `track` searches and /tracks take)."),
    ),
)


class ReferenceModel(_Model):
    n: int
    median: list[float]
    spread: list[float]


class SearchResultModel(_Model):
    """Exactly what `reidkit search --json` writes: appearances grouped by camera in time order, the
    match rule and the closest non-matches for review."""

    gallery: str
    model: str | None
    query: QueryModel
    threshold: float
    threshold_source: str
    z_threshold: float | None
    r_threshold: float | None
    reference: ReferenceModel | None
    k: int
    reranked: bool
    fuse: Literal["mean", "max"]
    cameras: list[str] | None
    time_range: Annotated[list[float | None], Field(min_length=2, max_length=2)] | None
    n_candidates: int
    n_matches: int
    hits: list[HitModel]
    rerank_distance: list[float] | None
    z: list[float] | None
    r: list[float] | None
    appearances: list[AppearanceModel]
    near_misses: list[AppearanceModel]
    review_floor: float | None = Field(description="No near miss is less similar than this (cosine similarity).")
    time_from: dict[str, str] = Field(
        default_factory=dict, description="Where the times of photo-folder sources came from (when present)."
    )


SightingModel = _of(
    Record,
    "SightingModel",
    "A stored detection, with the service's URLs of its crop and frame.",
    box=(Box | None, ...),
    time_text=(str, Field(description="The timestamp as reidkit prints it (UTC date-time or video position).")),
    track=(int | None, Field(description="The track number (the gallery's track row id), if it belongs to a track.")),
    crop_url=(str, ...),
    frame_url=(str | None, ...),
)


class TrackDetailModel(TrackModel):
    sightings: list[SightingModel]


Clock = Literal["date", "offset", "mixed"]


class CameraModel(_Model):
    camera: str
    sightings: int
    tracks: int
    first_time: float
    last_time: float
    first_text: str
    last_text: str
    clock: Clock = Field(description="date: Unix times; offset: seconds into a video (no date); mixed: both.")


class SourceModel(_Model):
    id: int
    uri: str
    camera: str
    status: str
    progress: float | None
    sightings: int
    tracks: int
    times: str | None = Field(
        description="How its times were made: a photo folder's bases (EXIF, file modification time, ...), "
        "else video offset (no date) or date."
    )


class ClockSpanModel(_Model):
    clock: Literal["date", "offset"]
    start: float
    end: float
    start_text: str
    end_text: str
    cameras: list[str]


class TotalsModel(_Model):
    sightings: int
    tracks: int
    sources: int
    cameras: int


class SpanModel(_Model):
    start: float | None
    end: float | None
    start_text: str | None
    end_text: str | None


class GalleryModel(_Model):
    gallery: str = Field(description="The gallery folder's name.")
    model: str | None
    warnings: list[str] = Field(description="What not to trust, e.g. photo times that are a folder copy's.")
    totals: TotalsModel
    searchable: int = Field(description="Sightings in the search index now (new ones join within seconds).")
    time_span: SpanModel
    clocks: list[ClockSpanModel] = Field(
        description="The time span per clock: dates, and offsets into videos (never one span across both)."
    )
    cameras: list[CameraModel]
    sources: list[SourceModel]
    recent: list[SightingModel] = Field(description="The sightings added last, newest first.")


class HealthModel(_Model):
    status: Literal["ok"]
    gallery: bool = Field(description="Whether the gallery is open (false: none built yet at the folder).")
    auth: bool = Field(description="Whether the other endpoints need `Authorization: Bearer <token>`.")


BrowseSightingModel = create_model(
    "BrowseSightingModel",
    __base__=SightingModel,
    __module__=__name__,
    n_crops=(int, Field(description="Crops of its track (1 without one).")),
)


class BrowseModel(_Model):
    """A camera's sightings in time order (one per track unless asked otherwise), a page of them."""

    camera: str
    clock: Clock | None
    total: int = Field(description="Sightings (tracks) in the time range.")
    offset: int
    limit: int
    per_track: bool
    sightings: list[BrowseSightingModel]  # type: ignore[valid-type]


class AlbumModel(_Model):
    id: int
    size: int = Field(description="Tracks (or sightings) in the album.")
    crops: int
    cameras: list[str]
    first_time: float
    last_time: float
    first_text: str
    last_text: str
    sightings: list[SightingModel] = Field(description="A sample: one per track, spread over the album's time.")


class ClustersModel(_Model):
    """The gallery grouped into albums, one per identity found (DBSCAN), largest first."""

    level: Literal["tracks", "sightings"]
    n_items: int
    n_noise: int = Field(description="Items in no album (seen once, or like nobody else).")
    rerank: bool
    eps: float
    clusters: list[AlbumModel]
