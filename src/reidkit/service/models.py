"""The service's response bodies as pydantic models, so the OpenAPI schema documents them.

:class:`SearchResultModel` is the JSON of :meth:`reidkit.search.query.search.SearchResult.to_dict` (what
``reidkit search --json`` writes), field for field; the service sends that dict as it is and the
tests check it against this model (``extra="forbid"``), so the schema cannot drift from the data.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Box = Annotated[list[int], Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in frame pixels.")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorModel(_Model):
    detail: str = Field(description="What went wrong, and what to do about it.")


class HitModel(_Model):
    """A stored detection and its cosine similarity to the query."""

    id: int
    source_id: int
    source: str
    camera: str
    timestamp: float = Field(description="Seconds: Unix time, or seconds into a video.")
    frame: int | None
    box: Box | None
    track_id: int | None = Field(description="The tracker's id within the source.")
    crop: str | None = Field(description="The crop file as recorded in the gallery (the service serves it by id).")
    quality: float | None
    score: float = Field(description="Cosine similarity to the query.")


class TrackModel(_Model):
    id: int = Field(description="The gallery's track row id (what `track` searches take).")
    source_id: int
    source: str
    track_id: int
    camera: str
    first_time: float
    last_time: float
    n_crops: int


class QueryModel(_Model):
    kind: Literal["images", "track", "features"]
    labels: list[str]
    track: TrackModel | None
    crops: list[str]


class AppearanceModel(_Model):
    """One sighting of the person: a track (or a lone detection) on one camera."""

    camera: str
    source: str
    source_id: int
    track_id: int | None
    start: float
    end: float
    score: float
    best: HitModel
    hit_ids: list[int]
    n_crops: int
    track: int | None
    z: float | None


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
    appearances: list[AppearanceModel]
    near_misses: list[AppearanceModel]
    time_from: dict[str, str] = Field(
        default_factory=dict, description="Where the times of photo-folder sources came from (when present)."
    )


class SightingModel(_Model):
    """A stored detection, with the service's URLs of its crop and frame."""

    id: int
    source_id: int
    source: str
    camera: str
    timestamp: float
    time_text: str = Field(description="The timestamp as reidkit prints it (UTC date-time or video position).")
    frame: int | None
    box: Box | None
    track_id: int | None
    track: int | None = Field(description="The gallery's track row id, if the detection belongs to a track.")
    crop: str | None
    quality: float | None
    crop_url: str
    frame_url: str | None


class TrackDetailModel(TrackModel):
    sightings: list[SightingModel]


class CameraModel(_Model):
    camera: str
    sightings: int
    tracks: int
    first_time: float
    last_time: float
    first_text: str
    last_text: str


class SourceModel(_Model):
    id: int
    uri: str
    camera: str
    status: str
    progress: float | None
    sightings: int
    tracks: int


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
    totals: TotalsModel
    searchable: int = Field(description="Sightings in the search index now (new ones join within seconds).")
    time_span: SpanModel
    cameras: list[CameraModel]
    sources: list[SourceModel]
    recent: list[SightingModel] = Field(description="The sightings added last, newest first.")


class HealthModel(_Model):
    status: Literal["ok"]
    gallery: bool = Field(description="Whether the gallery is open (false: none built yet at the folder).")
    auth: bool = Field(description="Whether the other endpoints need `Authorization: Bearer <token>`.")
