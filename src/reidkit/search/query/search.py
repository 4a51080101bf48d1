"""Search a gallery for one person: query pictures (or a gallery track) in, appearances out.

:func:`search_person` does, in order:

1. **Query feature.** Every query picture is embedded (L2-normalised). Several pictures of the
   target are fused by default as their *mean* feature, renormalised (``fuse="mean"``): one search,
   the same prototype the gallery uses for its tracks, and robust to one poor picture. ``fuse="max"``
   searches with every picture and keeps, per candidate, its best similarity to any of them (useful
   when the pictures show very different views, but one bad picture then brings its own false
   matches). A query by ``track`` uses the gallery's stored track feature (the normalised mean of
   its crops) and leaves that track's own detections out of the results.
2. **Candidates.** The ``k`` most similar detections from :meth:`Gallery.search` (filters:
   ``cameras``, ``time_range``, ``exclude_source``).
3. **Re-ranking** (optional, default on). k-reciprocal re-ranking over the query and its ``k``
   candidates only (O(k), not O(gallery)): a candidate whose own nearest neighbours include the
   query and the other good candidates moves up. It only *reorders*: whether a detection is a match
   is decided on its similarity, the quantity the thresholds are calibrated on.
4. **Match rule** (:mod:`reidkit.search.query.calibrate`). A candidate matches when its cosine similarity
   is ``>= threshold`` and, with ``adaptive`` (default), it stands out from the gallery's crowd: its
   similarity standardised by the query's similarities to a fixed random sample of the gallery
   (``z = (s - median) / spread``, spread = 1.4826 x MAD) is ``>= z_threshold`` or, for a model whose
   calibration has an ``r_threshold``, its relative similarity ``r = (s - median) / (1 - median)`` (how far
   from the crowd towards an identical picture) is ``>= r_threshold``. The second test keeps footage where
   everybody looks alike to the model (higher similarities all round) from matching everybody. r is there
   for galleries of a few people in one scene: their crowd is a handful of people, whose spread caps z
   (the query's own crop reached z 3.9 in issue 22's campus pictures) while r still separates the target.
   r counts only where the model tells the crowd apart: an identical picture could pass the z test
   (``(1 - median) / spread >= z_threshold``) or the cosine threshold lies at least ``R_GATE_SPREADS`` spreads
   above the crowd's median (``(threshold - median) / spread``; the ensemble-distilled OSNet's wider spread
   caps an identical picture at z 2.93 in issue 22's campus pictures, while the threshold lies 1.16 spreads
   above their median). On footage the model cannot tell apart (vtest.avi: median 0.80, spread 0.10, so
   nothing can reach z 1.9; the ensemble OSNet's threshold lies at most 0.5 spreads above the median of its
   13 probed queries there) r would pass the upper half of the crowd, and there nothing is a confident match.
   Both default to the model's calibrated values
   (:func:`reidkit.search.query.calibrate.thresholds_for`); galleries under ``MIN_REFERENCE`` detections
   use the cosine test only, and galleries smaller than the calibration's crowd the calibrated z for
   their size (``Thresholds.z_for``: fewer other people to mistake for the target, a lower z).
5. **Appearances.** Matches of the same track (same source and tracker id) merge into one
   :class:`Appearance` with the track's time span and its best-matching crop (highest similarity);
   a detection without a track is an appearance of its own. Appearances are grouped by camera, in
   time order within a camera, and cameras are ordered by the time of their first appearance (the
   person's route).
6. **Review.** The best-ranked candidates that failed the match rule but are at least as similar as
   ``review_floor`` (``review`` appearances at most, taken in final rank order) merge per track the
   same way into ``near_misses``, listed by similarity, highest first: not matches, but the closest
   candidates for an operator to judge by eye. Detections of a track that did match are left out (the
   track is already an appearance). The floor defaults to ``threshold - REVIEW_MARGIN``: far below
   the rule, a candidate is somebody else, not a doubt worth an operator's look.
"""

from __future__ import annotations

import dataclasses
import math
import os
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from reidkit.search.storage.gallery import Gallery
from reidkit.search.storage.records import (
    GalleryError,
    Hit,
    Track,
    public_path,
    public_source,
    public_text,
    redact_uri,
    to_seconds,
)

DEFAULT_K = 200
RERANK_K1 = 20
RERANK_K2 = 6
RERANK_LAMBDA = 0.3
QUERY_CROPS = 4  # crops of a query track kept for the report
REVIEW_MARGIN = 0.2  # the review list's default floor: this much cosine similarity below the threshold
# r also counts where the cosine threshold lies at least this many spreads above the crowd's median (the model
# tells this crowd apart, though its spread caps z)
R_GATE_SPREADS = 1.0
Fuse = Literal["mean", "max"]


class Embeds(Protocol):
    """Anything that turns pictures into (N, D) features, e.g. :class:`reidkit.embed.Embedder`."""

    def embed(self, images: Sequence[Any], bgr: bool = False) -> np.ndarray: ...


@dataclass(frozen=True)
class Appearance:
    """One sighting of the person: a track (or a single untracked detection) on one camera.

    ``start``/``end`` span the whole track as stored in the gallery (the matched detections when
    there is no track); ``best`` is the matched detection most similar to the query, ``score`` its
    cosine similarity; ``hit_ids`` are all matched detections of the track, best first.
    """

    camera: str
    source: str
    source_id: int
    track_id: int | None
    start: float
    end: float
    score: float
    best: Hit
    hit_ids: tuple[int, ...]
    n_crops: int = 1
    track: int | None = None  # the gallery's track row id (Track.id), if any
    z: float | None = None  # the best hit's standardised similarity (adaptive match rule), if computed

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class QueryInfo:
    """What was searched for: pictures (``labels`` name them) or a gallery track."""

    kind: Literal["images", "track", "features"]
    labels: tuple[str, ...] = ()
    track: Track | None = None
    crops: tuple[str, ...] = ()  # a query track's crops (relative to the gallery folder)


@dataclass
class SearchResult:
    """Matches of one query in a gallery (see the module docstring for how they are made).

    ``hits`` are the matched detections in final rank order (re-ranked if ``reranked``), with
    ``rerank_distance`` and ``z`` (standardised similarities, when the adaptive test ran) alongside;
    ``z_threshold`` is None when it did not run, ``reference`` holds its sample size and the
    median and spread (1.4826 x MAD) of the query's similarities to it; ``r_threshold`` and ``r`` the
    relative-similarity test, when the model's calibration has one (a hit passes z or r). ``appearances`` are grouped
    per camera in time order (:meth:`by_camera`). ``near_misses`` are the closest candidates that failed the rule
    (none less similar than ``review_floor``), as appearances by similarity (best first), for review; they
    are not matches. ``time_from`` says, for
    each photo-folder source in the result, where its times came from (``exif``, ``sidecar``,
    ``pattern``, ``mtime`` or a mix); other sources are timed by their video. ``pictures`` names, by
    detection id, the picture (file name within its photo folder) of every hit and near miss of a photo
    folder; in the JSON each hit says it as ``picture`` (None for video frames and crops). ``query_images``
    keeps the query pictures in memory for the HTML report; it is not serialised.
    """

    gallery: str
    query: QueryInfo
    threshold: float
    threshold_source: str
    k: int
    reranked: bool
    fuse: str
    n_candidates: int
    hits: list[Hit]
    appearances: list[Appearance]
    rerank_distance: list[float] | None = None
    cameras: list[str] | None = None
    time_range: tuple[float | None, float | None] | None = None
    model: str | None = None
    z_threshold: float | None = None
    z: list[float] | None = None
    reference: dict[str, Any] | None = None
    r_threshold: float | None = None  # the relative-similarity test, when it ran (z or r must pass)
    r: list[float] | None = None  # the hits' relative similarity, alongside z
    near_misses: list[Appearance] = field(default_factory=list)
    review_floor: float | None = None
    time_from: dict[str, str] = field(default_factory=dict)
    pictures: dict[int, str] = field(default_factory=dict)
    query_images: list[Any] = field(default_factory=list, compare=False, repr=False)
    query_bgr: bool = field(default=False, compare=False, repr=False)

    def by_camera(self) -> dict[str, list[Appearance]]:
        """Appearances per camera: cameras in order of first appearance, each in time order."""
        out: dict[str, list[Appearance]] = {}
        for a in self.appearances:
            out.setdefault(a.camera, []).append(a)
        return out

    def crop_path(self, crop: str | None) -> Path | None:
        """The file of a crop recorded in the gallery (None if there is none)."""
        if not crop:
            return None
        p = Path(crop)
        return p if p.is_absolute() else Path(self.gallery) / p

    def public(self) -> SearchResult:
        """The result as the search service hands it out: no server path and no credential in it. Sources
        are :func:`~reidkit.search.storage.records.public_source` (a file's name, a stream's URL without
        user, password or secret parameters), crops their path within the gallery folder (else their file
        name), the gallery its folder's name, query pictures their file names; ids, times, boxes, scores
        and the match rule are unchanged. (``reidkit search --json`` keeps the paths: the operator's own
        machine; :meth:`to_dict` strips credentials there too.)"""

        def hit(h: Hit) -> Hit:
            return dataclasses.replace(h, source=public_source(h.source), crop=public_path(h.crop))

        def app(a: Appearance) -> Appearance:
            return dataclasses.replace(a, source=public_source(a.source), best=hit(a.best))

        q = self.query
        query = dataclasses.replace(
            q,
            labels=tuple(public_source(x) if q.kind == "images" else public_text(x) for x in q.labels),
            track=None if q.track is None else dataclasses.replace(q.track, source=public_source(q.track.source)),
            crops=tuple(c for c in (public_path(c) for c in q.crops) if c),
        )
        return dataclasses.replace(
            self,
            gallery=Path(self.gallery).name,
            query=query,
            threshold_source=public_text(self.threshold_source),
            hits=[hit(h) for h in self.hits],
            appearances=[app(a) for a in self.appearances],
            near_misses=[app(a) for a in self.near_misses],
            time_from={public_source(uri): basis for uri, basis in self.time_from.items()},
            query_images=[],
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (see :meth:`from_dict`); sources without credentials (:func:`redact_uri`)."""
        query = asdict(self.query)
        if query["track"] is not None:
            query["track"]["source"] = redact_uri(query["track"]["source"])
        d = {
            "gallery": self.gallery,
            "model": self.model,
            "query": query,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "z_threshold": self.z_threshold,
            "r_threshold": self.r_threshold,
            "reference": self.reference,
            "k": self.k,
            "reranked": self.reranked,
            "fuse": self.fuse,
            "cameras": self.cameras,
            "time_range": None if self.time_range is None else list(self.time_range),
            "n_candidates": self.n_candidates,
            "n_matches": len(self.hits),
            "hits": [self._hit_dict(h) for h in self.hits],
            "rerank_distance": self.rerank_distance,
            "z": self.z,
            "r": self.r,
            "appearances": [self._app_dict(a) for a in self.appearances],
            "near_misses": [self._app_dict(a) for a in self.near_misses],
            "review_floor": self.review_floor,
            "time_from": {redact_uri(uri): basis for uri, basis in self.time_from.items()},
        }
        return _jsonable(d)

    def _hit_dict(self, h: Hit) -> dict[str, Any]:
        box = None if h.box is None else list(h.box)
        return {**asdict(h), "source": redact_uri(h.source), "box": box, "picture": self.pictures.get(h.id)}

    def _app_dict(self, a: Appearance) -> dict[str, Any]:
        return {**asdict(a), "source": redact_uri(a.source), "best": self._hit_dict(a.best)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchResult:
        q = d["query"]
        query = QueryInfo(
            q["kind"],
            tuple(q.get("labels", ())),
            None if q.get("track") is None else Track(**q["track"]),
            tuple(q.get("crops", ())),
        )
        tr = d.get("time_range")
        every_hit = [*d["hits"], *(a["best"] for a in [*d["appearances"], *d.get("near_misses", [])])]
        return cls(
            gallery=d["gallery"],
            query=query,
            threshold=float(d["threshold"]),
            threshold_source=d["threshold_source"],
            k=int(d["k"]),
            reranked=bool(d["reranked"]),
            fuse=d["fuse"],
            n_candidates=int(d["n_candidates"]),
            hits=[_hit_from(h) for h in d["hits"]],
            appearances=[_app_from(a) for a in d["appearances"]],
            rerank_distance=d.get("rerank_distance"),
            cameras=d.get("cameras"),
            time_range=None if tr is None else (tr[0], tr[1]),
            model=d.get("model"),
            z_threshold=d.get("z_threshold"),
            z=d.get("z"),
            r_threshold=d.get("r_threshold"),
            r=d.get("r"),
            reference=d.get("reference"),
            near_misses=[_app_from(a) for a in d.get("near_misses", [])],
            review_floor=d.get("review_floor"),
            time_from=dict(d.get("time_from") or {}),
            pictures={int(h["id"]): h["picture"] for h in every_hit if h.get("picture")},
        )


def _hit_from(d: dict[str, Any]) -> Hit:
    fields = {k: v for k, v in d.items() if k != "picture"}
    return Hit(**{**fields, "box": None if d.get("box") is None else tuple(int(v) for v in d["box"])})


def _app_from(d: dict[str, Any]) -> Appearance:
    return Appearance(**{**d, "best": _hit_from(d["best"]), "hit_ids": tuple(d["hit_ids"])})


def _jsonable(x: Any) -> Any:
    """Tuples as lists, numpy scalars as Python numbers, non-finite floats as None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _label(image: Any, i: int) -> str:
    if isinstance(image, str | os.PathLike):
        return str(image)
    return f"<{type(image).__name__} {i}>"


def get_track(gallery: Gallery, track: int) -> Track:
    """The gallery track with row id ``track`` (as listed by :meth:`Gallery.tracks`)."""
    found = gallery.track(track)
    if found is None:
        raise GalleryError(f"gallery {gallery.root} has no track {track} (see `Gallery.tracks()`)")
    return found


def _rerank_order(q: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """k-reciprocal re-ranked distances (nq, n) of the candidates, over query + candidates only."""
    from reidkit.evaluation.rerank import rerank

    n = len(q) + len(cand)
    k1 = min(RERANK_K1, n - 1)
    k2 = max(1, min(RERANK_K2, k1))
    return rerank(q, cand, k1=k1, k2=k2, lambda_value=RERANK_LAMBDA)


_REFERENCES: weakref.WeakKeyDictionary[Gallery, tuple[int, np.ndarray]] = weakref.WeakKeyDictionary()


def gallery_reference(gallery: Gallery, size: int | None = None, seed: int = 0) -> np.ndarray:
    """Features of a fixed random sample of the gallery's detections (the crowd a match must stand
    out from), cached per gallery object until its size changes."""
    from reidkit.search.query.calibrate import REFERENCE

    size = REFERENCE if size is None else size
    n = len(gallery)
    cached = _REFERENCES.get(gallery)
    if cached is not None and cached[0] == n and len(cached[1]) == min(size, n):
        return cached[1]
    ids = gallery.ids()
    if len(ids) > size:
        ids = np.sort(np.random.default_rng(seed).choice(ids, size=size, replace=False))
    feats = gallery.features(ids.tolist()) if len(ids) else np.zeros((0, gallery.dim or 0), np.float32)
    _REFERENCES[gallery] = (n, feats)
    return feats


def _group_key(h: Hit) -> tuple[int, int] | tuple[str, int]:
    """What merges detections into one appearance: (source_id, tracker id), else the detection itself."""
    return (h.source_id, h.track_id) if h.track_id is not None else ("detection", h.id)


def group_appearances(
    hits: Sequence[Hit], tracks: dict[tuple[int, int], Track] | None = None, z: dict[int, float] | None = None
) -> list[Appearance]:
    """Merge hits of the same (source, track) into appearances; order them for :class:`SearchResult`.

    An appearance's ``best`` hit is its most similar one (equal similarity: higher crop quality);
    ``tracks`` maps ``(source_id, tracker id)`` to the stored track, for its full span and crop count;
    ``z`` maps hit ids to their standardised similarity.
    """
    groups: dict[tuple[int, int] | tuple[str, int], list[Hit]] = {}
    for h in hits:
        groups.setdefault(_group_key(h), []).append(h)
    apps = []
    for key, hs in groups.items():
        best = max(hs, key=lambda h: (h.score, -1.0 if h.quality is None else h.quality))
        ordered = sorted(hs, key=lambda h: -h.score)
        t = tracks.get(key) if tracks and key[0] != "detection" else None  # type: ignore[arg-type]
        start = min(h.timestamp for h in hs) if t is None else min(t.first_time, *(h.timestamp for h in hs))
        end = max(h.timestamp for h in hs) if t is None else max(t.last_time, *(h.timestamp for h in hs))
        apps.append(
            Appearance(
                camera=best.camera,
                source=best.source,
                source_id=best.source_id,
                track_id=best.track_id,
                start=float(start),
                end=float(end),
                score=float(best.score),
                best=best,
                hit_ids=tuple(h.id for h in ordered),
                n_crops=len(hs) if t is None else t.n_crops,
                track=None if t is None else t.id,
                z=None if z is None else z.get(best.id),
            )
        )
    first_seen: dict[str, float] = {}
    for a in apps:
        first_seen[a.camera] = min(first_seen.get(a.camera, math.inf), a.start)
    apps.sort(key=lambda a: (first_seen[a.camera], a.camera, a.start, a.end, -a.score))
    return apps


def _tracks_of(gallery: Gallery, hits: Iterable[Hit]) -> dict[tuple[int, int], Track]:
    """The stored tracks the hits belong to, by (source_id, tracker id)."""
    return gallery.tracks_by_key((h.source_id, h.track_id) for h in hits if h.track_id is not None)


def search_person(
    gallery: Gallery,
    embedder: Embeds | None = None,
    queries: Sequence[Any] | None = None,
    *,
    track_id: int | None = None,
    features: np.ndarray | None = None,
    k: int = DEFAULT_K,
    rerank: bool = True,
    threshold: float | None = None,
    z_threshold: float | None = None,
    adaptive: bool = True,
    model_info: Any = None,
    cameras: str | Iterable[str] | None = None,
    time_range: tuple[Any, Any] | None = None,
    exclude_source: Any = None,
    fuse: Fuse = "mean",
    bgr: bool = False,
    review: int = 8,
    review_floor: float | None = None,
) -> SearchResult:
    """Find one person in ``gallery``; see the module docstring for the steps.

    The query is one of: ``queries`` (pictures of the target: paths, PIL images, RGB arrays, or BGR
    with ``bgr=True``) embedded by ``embedder``; ``track_id`` (a gallery track row id, see
    :meth:`Gallery.tracks`); or precomputed ``features`` (N, D). ``threshold`` (cosine) and
    ``z_threshold`` default to the calibrated ones of ``model_info`` (a
    :class:`reidkit.models.zoo.ModelInfo`), else to the defaults of :mod:`reidkit.search.query.calibrate`;
    ``adaptive=False`` drops the z test (cosine threshold only). ``review`` caps the closest
    non-matching appearances kept as ``near_misses`` (0: none); ``review_floor`` is the least cosine
    similarity one of them may have (default: ``threshold - REVIEW_MARGIN``).
    """
    from reidkit.search.query.calibrate import MIN_REFERENCE, matches, reference_stats, relative, thresholds_for

    given = sum(x is not None for x in (queries, track_id, features))
    if given != 1:
        raise ValueError("give exactly one of: query pictures, track_id, features")
    if fuse not in ("mean", "max"):
        raise ValueError(f"fuse must be 'mean' or 'max', got {fuse!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if review < 0:
        raise ValueError(f"review must be >= 0, got {review}")

    images: list[Any] = []
    qtrack: Track | None = None
    if queries is not None:
        single = isinstance(queries, str | os.PathLike) or hasattr(queries, "convert")  # a path or a PIL image
        single |= getattr(queries, "ndim", None) == 3  # one H x W x 3 array or 3 x H x W tensor
        images = [queries] if single else list(queries)
        if not images:
            raise ValueError("no query pictures given")
        if embedder is None:
            raise ValueError("query pictures need an embedder")
        q = _normalize(embedder.embed(images, bgr=bgr))
        info = QueryInfo("images", tuple(_label(im, i) for i, im in enumerate(images)))
    elif track_id is not None:
        qtrack = get_track(gallery, track_id)
        q = _normalize(gallery.track_features([qtrack.id]))
        recs = gallery.records(qtrack.source_id, qtrack.track_id)
        recs.sort(key=lambda r: -(r.quality if r.quality is not None else 0.0))
        info = QueryInfo("track", (f"track {qtrack.id}",), qtrack, tuple(r.crop for r in recs[:QUERY_CROPS] if r.crop))
    else:
        q = _normalize(np.asarray(features))
        info = QueryInfo("features", tuple(f"<feature {i}>" for i in range(len(q))))
    if fuse == "mean" and len(q) > 1:
        q = _normalize(q.mean(0))

    calibrated = thresholds_for(model_info)
    src_t = calibrated.source if threshold is None else "given"
    src_z = calibrated.source if z_threshold is None else "given"
    threshold = calibrated.threshold if threshold is None else float(threshold)
    size = len(gallery)
    z_thr = calibrated.z_for(size) if z_threshold is None else float(z_threshold)
    ref = gallery_reference(gallery) if adaptive and size >= MIN_REFERENCE else None
    r_thr = calibrated.r_threshold if z_threshold is None and ref is not None else None  # a given z: z alone
    thr_source = src_t if src_t == src_z or ref is None else f"cosine {src_t}; z {src_z}"
    if ref is not None and z_threshold is None and z_thr != calibrated.z_threshold:
        thr_source += f"; z {z_thr:.2f} for a gallery of {size} detections"

    own = 0 if qtrack is None else qtrack.n_crops  # the query track's own detections are dropped below
    per_query = gallery.search(q, k + own, cameras=cameras, time_range=time_range, exclude_source=exclude_source)
    best: dict[int, Hit] = {}
    for row in per_query:
        for h in row:
            if qtrack is not None and h.source_id == qtrack.source_id and h.track_id == qtrack.track_id:
                continue
            if h.id not in best or h.score > best[h.id].score:
                best[h.id] = h
    cand = sorted(best.values(), key=lambda h: -h.score)[:k]  # fuse="max": the top k by best similarity
    n_candidates = len(cand)

    cand_f = gallery.features([h.id for h in cand]) if cand and (rerank or ref is not None) else None
    zs: np.ndarray | None = None
    rs: np.ndarray | None = None
    reference = None
    if ref is not None:
        mu, sd = reference_stats(q @ ref.T)
        reference = {
            "n": len(ref),
            "median": [round(float(m), 5) for m in mu],
            "spread": [round(float(v), 5) for v in sd],
        }
        if cand_f is not None:
            sims = cand_f @ q.T
            zs = ((sims - mu[None, :]) / sd[None, :]).max(1)  # several queries: the best one
            # r stands in for z only where the model tells this crowd apart: an identical picture could pass the
            # z test, or the cosine threshold lies R_GATE_SPREADS spreads above the median; else r would pass
            # the crowd's upper half
            open_r = ((1.0 - mu) / sd >= z_thr) | ((threshold - mu) / sd >= R_GATE_SPREADS)
            rs = np.where(open_r[:, None], relative(sims.T, mu), -np.inf).max(0)

    dist: np.ndarray | None = None
    if rerank and cand_f is not None and len(cand) >= 2:
        d = _rerank_order(q, cand_f)
        dist = d.min(0)  # several queries (fuse="max"): the closest one
        order = np.argsort(dist, kind="stable")
        cand, dist = [cand[i] for i in order], dist[order]
        zs = None if zs is None else zs[order]
        rs = None if rs is None else rs[order]

    scores = np.array([h.score for h in cand], dtype=np.float64)
    if zs is None:  # no crowd to stand out from: the cosine test alone
        keep = np.flatnonzero(scores >= threshold).tolist()
    else:  # the calibration's rule (r is -inf where its gate is closed)
        r_arr = np.full(len(cand), -np.inf) if rs is None else rs
        keep = np.flatnonzero(matches(scores, zs, r_arr, threshold, z_thr, r_thr)).tolist()
    hits = [cand[i] for i in keep]
    rr = None if dist is None else [float(dist[i]) for i in keep]
    zl = None if zs is None else [float(zs[i]) for i in keep]
    rl = None if rs is None or r_thr is None else [round(float(rs[i]), 5) for i in keep]
    # Review: failed candidates above the floor, of the first `review` new groups in rank order (matched tracks
    # left out); listed by similarity below.
    floor = threshold - REVIEW_MARGIN if review_floor is None else float(review_floor)
    seen = {_group_key(h) for h in hits}
    near: dict[int, int] = {}  # candidate index -> its group's rank
    groups: dict[tuple[int, int] | tuple[str, int], int] = {}
    for i, h in enumerate(cand if review else []):
        key = _group_key(h)
        if key in seen or h.score < floor or (key not in groups and len(groups) >= review):
            continue
        near[i] = groups.setdefault(key, len(groups))
    near_hits = [cand[i] for i in near]
    near_rank = {cand[i].id: g for i, g in near.items()}
    near_apps = group_appearances(
        near_hits, _tracks_of(gallery, near_hits), None if zs is None else {cand[i].id: float(zs[i]) for i in near}
    )
    tr = None
    if time_range is not None:
        lo, hi = time_range
        tr = (None if lo is None else to_seconds(lo), None if hi is None else to_seconds(hi))
    cams = None if cameras is None else ([cameras] if isinstance(cameras, str) else sorted(str(c) for c in cameras))
    bases = gallery.time_bases()
    shown = {(h.source_id, h.source) for h in [*hits, *near_hits]}
    time_from = {uri: bases[sid] for sid, uri in sorted(shown) if sid in bases}
    photos = [h for h in [*hits, *near_hits] if h.source_id in bases and h.frame is not None]
    names = gallery.pictures((h.source_id, h.frame) for h in photos)
    pictures = {h.id: names[(h.source_id, h.frame)] for h in photos if (h.source_id, h.frame) in names}
    return SearchResult(
        gallery=str(gallery.root),
        query=info,
        threshold=float(threshold),
        threshold_source=thr_source,
        k=k,
        reranked=dist is not None,
        fuse=fuse,
        n_candidates=n_candidates,
        hits=hits,
        appearances=group_appearances(
            hits, _tracks_of(gallery, hits), None if zl is None else dict(zip((h.id for h in hits), zl, strict=True))
        ),
        rerank_distance=rr,
        cameras=cams,
        time_range=tr,
        model=None if model_info is None else getattr(model_info, "name", None),
        z_threshold=None if ref is None else z_thr,
        z=zl,
        r_threshold=r_thr,
        r=rl,
        reference=reference,
        near_misses=sorted(near_apps, key=lambda a: (-a.score, near_rank[a.best.id])),
        review_floor=floor,
        time_from=time_from,
        pictures=pictures,
        query_images=images,
        query_bgr=bgr,
    )
