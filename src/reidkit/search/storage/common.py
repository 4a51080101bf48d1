"""What both gallery backends do the same way, over a few storage primitives of their own.

:class:`GalleryCommon` is the backend-independent half of :class:`~reidkit.search.storage.base.GalleryBackend`,
inherited by :class:`~reidkit.search.storage.gallery.Gallery` (SQLite + FAISS) and
:class:`~reidkit.search.storage.milvus.MilvusGallery`: the source-registration policy (``register``: skip / new
/ resume / replaced; ``add_source``'s fingerprint and camera checks), crop naming and paths (``save_crop``,
``copy_crop``), ``add``'s argument checks and the preparation of its sighting rows, the parsing of search
filters, and lookups by id (``get``, ``record``). A backend supplies the primitives:

* ``_writable()`` (raise unless the gallery may be written), ``_source_id(source)`` (id or None),
  ``_records(ids)`` (the records found, by id), ``source_status``, ``remove_source``;
* ``_existing(uri)``: the stored source of ``uri`` (None: unknown) for registering it again (a backend with
  crash repair undoes a half-done add first); ``_keep_source(old, fingerprint)``: the known, unchanged source,
  with ``fingerprint`` recorded first where it had none; ``_insert_source(uri, camera, fps, fingerprint)``: a
  new ``pending`` source;
* ``_check_media()`` (optional): raise if crops have nowhere to go;
* the attributes ``root`` (crops go under ``root/crops/<source id>/``), ``dim`` and ``_lock`` (an ``RLock``).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple, Self

import numpy as np

from reidkit.search.storage.index import IndexConfig
from reidkit.search.storage.media import save_crop as write_crop
from reidkit.search.storage.records import GalleryError, Hit, Photo, Record, Sighting, Source, to_seconds
from reidkit.search.storage.schema import STATUSES

CROPS = "crops"

SourceRef = str | int


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def open_config(
    where: object, stored: IndexConfig, index: str | IndexConfig | None, ef_search: int | None, nprobe: int | None
) -> IndexConfig:
    """The index configuration of an existing gallery (``where``) built with ``stored``: ``index`` (asked for on
    opening) must match its structure (an error names ``reindex``); search options come from ``index``, then
    ``ef_search`` / ``nprobe``."""
    config = stored
    if index is not None:
        wanted = index if isinstance(index, IndexConfig) else replace(config, kind=index, codec="flat")
        structural = ("kind", "codec", "hnsw_m", "ef_construction", "nlist", "train_size")
        if any(getattr(wanted, f) != getattr(config, f) for f in structural):
            raise GalleryError(
                f"{where} was built with index {config.kind!r} ({config}); asked for {wanted}. "
                "Open it without `index` and call gallery.reindex(...) to convert it"
            )
        config = replace(config, ef_search=wanted.ef_search, nprobe=wanted.nprobe)
    return replace(config, ef_search=ef_search or config.ef_search, nprobe=nprobe or config.nprobe)


class SightingRow(NamedTuple):
    """One :class:`Sighting` checked and made plain for storing (``box``: 4 ints or None)."""

    source_id: int
    camera: str
    timestamp: float
    frame: int | None
    box: tuple[int, ...] | None
    track_id: int | None
    crop: str | None
    quality: float | None


class GalleryCommon:
    """The logic both gallery backends share (see the module docstring)."""

    root: Path
    dim: int | None
    config: IndexConfig
    _lock: threading.RLock

    # -- primitives a backend supplies ----------------------------------------------------------------
    def _writable(self) -> None:
        raise NotImplementedError

    def _source_id(self, source: SourceRef) -> int | None:
        raise NotImplementedError

    def _records(self, ids: Sequence[int]) -> dict[int, Record]:
        raise NotImplementedError

    def _existing(self, uri: str) -> Source | None:
        raise NotImplementedError

    def _keep_source(self, old: Source, fingerprint: str | None) -> Source:
        raise NotImplementedError

    def _insert_source(self, uri: str, camera: str, fps: float | None, fingerprint: str | None) -> Source:
        raise NotImplementedError

    def remove_source(self, source: SourceRef) -> int:
        raise NotImplementedError

    def _set_status(self, source: SourceRef, status: str, progress: float | None, fingerprint: str | None) -> Source:
        """:meth:`set_source_status` after its checks (called under the lock)."""
        raise NotImplementedError

    def _check_media(self) -> None:
        """Raise if crops cannot be written (default: they always can)."""

    def _add(
        self, x: np.ndarray, records: Sequence[Sighting], progress: float | None, source: SourceRef | None,
        snapshot: bytes | None, photos: Sequence[Photo],
    ) -> np.ndarray:  # fmt: skip
        """:meth:`add` after its checks (``x``: the normalised features, one row per record; maybe none)."""
        raise NotImplementedError

    def _knn(
        self, q: np.ndarray, k: int, cameras: str | Iterable[str] | None, time_range: tuple[Any, Any] | None,
        exclude_source: SourceRef | Iterable[SourceRef] | None,
    ) -> list[list[Hit]]:  # fmt: skip
        """:meth:`search` of the normalised queries ``q`` (called under the lock)."""
        raise NotImplementedError

    def _config_changed(self) -> None:
        """:attr:`config` has new search options (default: nothing to do)."""

    def close(self) -> None:
        raise NotImplementedError

    # -- sources ----------------------------------------------------------------------------------------
    def _sid(self, source: SourceRef) -> int:
        sid = self._source_id(source)
        if sid is None:
            raise KeyError(f"no such source {source!r}")
        return sid

    def add_source(
        self,
        uri: str,
        camera: str,
        fps: float | None = None,
        fingerprint: str | None = None,
        *,
        replace_changed: bool = False,
    ) -> Source:
        """Register a source (idempotent) and return it, with its ingest ``status`` and ``progress``.

        A known ``uri`` returns the stored source, so a re-run can skip (``status == "done"``) or resume
        (from ``progress``). A different ``fingerprint`` (the content changed) is an error unless
        ``replace_changed``, which removes the old rows first.
        """
        self._writable()
        with self._lock:
            old = self._existing(uri)
            if old is not None:
                changed = fingerprint is not None and old.fingerprint is not None and fingerprint != old.fingerprint
                if changed and not replace_changed:
                    raise GalleryError(
                        f"source {uri!r} was ingested with fingerprint {old.fingerprint!r}, now {fingerprint!r}: "
                        "pass replace_changed=True (or remove_source) to re-ingest it"
                    )
                if not changed:
                    if old.camera != camera:
                        raise GalleryError(f"source {uri!r} is registered with camera {old.camera!r}, not {camera!r}")
                    return self._keep_source(old, fingerprint if old.fingerprint is None else None)
                self.remove_source(old.id)
            return self._insert_source(uri, camera, fps, fingerprint)

    def set_source_status(
        self, source: SourceRef, status: str, progress: float | None = None, *, fingerprint: str | None = None
    ) -> Source:
        """Record how far a source's ingest got (``status`` one of pending/ingesting/done/failed/stopped) and,
        if given, its new content ``fingerprint`` (a photo folder that grew)."""
        self._writable()
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        with self._lock:
            return self._set_status(source, status, progress, fingerprint)

    def register(
        self,
        uri: str,
        camera: str,
        fps: float | None,
        fingerprint: str,
        *,
        replace: bool = False,
        grows: bool = False,
        live: bool = False,
    ) -> tuple[Source, str]:
        """Register a source for an ingest and say what to do with it: ``(source, action)`` with action
        ``skip`` (done and unchanged: the stored source), ``new``, ``resume`` (from ``source.progress``)
        or ``replaced`` (its old rows removed first, as ``replace`` asks).

        A source whose ``fingerprint`` changed is an error unless ``replace``; one that ``grows`` (a
        photo folder) is resumed instead and keeps its old fingerprint until done; a ``live`` stream has
        no content to compare and is never skipped.
        """
        with self._lock:
            old = self._existing(uri)
            action = "new"
            if old is not None:
                changed = old.fingerprint is not None and old.fingerprint != fingerprint and not grows
                if old.status == "done" and old.fingerprint in (None, fingerprint) and not live and not replace:
                    return old, "skip"
                if changed and not replace:
                    raise GalleryError(
                        f"source {uri} changed since it was ingested (fingerprint {old.fingerprint} -> "
                        f"{fingerprint}): pass replace=True (--replace) to remove it and ingest it again"
                    )
                if replace:
                    self.remove_source(old.id)
                    old, action = None, "replaced"
                else:
                    action = "resume"
            stored = self.add_source(uri, camera, fps, None if grows and old is not None else fingerprint)
            return stored, action

    # -- crops ------------------------------------------------------------------------------------------
    def save_crop(
        self,
        image: Any,
        source: SourceRef,
        name: str | None = None,
        *,
        box: Sequence[int] | None = None,
        bgr: bool = True,
        jpeg_quality: int = 90,
    ) -> str:
        """Save a crop under ``crops/<source-id>/`` below :attr:`root` (see
        :func:`~reidkit.search.storage.media.save_crop`); returns its path relative to :attr:`root`, for
        :attr:`Sighting.crop`. ``name`` defaults to a random one."""
        self._writable()
        self._check_media()
        with self._lock:
            sid = self._source_id(source)
        if sid is None:
            raise KeyError(f"no such source {source!r}; add_source it first")
        name = name or uuid.uuid4().hex
        if not name.lower().endswith((".jpg", ".jpeg")):
            name += ".jpg"
        rel = Path(CROPS, str(sid), name)
        if ".." in rel.parts or rel.is_absolute() or not re.fullmatch(r"[\w./-]+", name):
            raise ValueError(f"crop name {name!r} must be a plain relative file name")
        write_crop(image, self.root / rel, box=box, bgr=bgr, jpeg_quality=jpeg_quality)
        return rel.as_posix()

    def copy_crop(self, source: SourceRef, path: str | os.PathLike[str], root: str | os.PathLike[str]) -> str:
        """Copy a ready-made crop file into ``crops/<source-id>/`` (its path below ``root`` kept, else its
        name); returns its path relative to :attr:`root`, for :attr:`Sighting.crop`."""
        from reidkit.io import atomic_path

        self._writable()
        self._check_media()
        try:
            rel_name = Path(path).relative_to(Path(root).absolute())
        except ValueError:
            rel_name = Path(Path(path).name)
        with self._lock:
            rel = Path(CROPS, str(self._sid(source)), rel_name)
        with atomic_path(self.root / rel) as tmp:
            shutil.copyfile(path, tmp)
        return rel.as_posix()

    # -- adding -----------------------------------------------------------------------------------------
    def _prep(self, x: Any, what: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2:
            raise ValueError(f"{what} must be an (N, D) array, got shape {x.shape}")
        if self.dim is not None and x.shape[1] != self.dim:
            raise GalleryError(f"{what} have {x.shape[1]} dimensions but this gallery holds dim={self.dim} features")
        if not np.isfinite(x).all():
            raise ValueError(f"{what} contain NaN or infinite values")
        return np.ascontiguousarray(normalize(x), dtype=np.float32)

    def add(
        self,
        features: Any,
        records: Sequence[Sighting],
        *,
        progress: float | None = None,
        source: SourceRef | None = None,
        snapshot: bytes | None = None,
        photos: Sequence[Photo] = (),
    ) -> np.ndarray:
        """Add ``features`` (N, D; L2-normalised on the way in) with one :class:`Sighting` each.

        Returns the new ids (int64). Also records the ``progress`` marker of ``source`` (default: the
        records' sources) with ``snapshot``, that source's tracking state at ``progress``, replacing its
        older ones; and ``photos``, the ledger rows of the pictures the sightings came from. The folder
        gallery commits all of it in one transaction; the Milvus one undoes a half-done add when the source
        is registered again (see its module docstring).
        """
        self._writable()
        x = self._prep(features, "features") if len(records) else np.zeros((0, self.dim or 1), np.float32)
        if len(records) != len(x):
            raise ValueError(f"{len(x)} feature rows but {len(records)} records")
        if snapshot is not None and (source is None or progress is None):
            raise ValueError("a snapshot needs its source and progress")
        return self._add(x, records, progress, source, snapshot, photos)

    @staticmethod
    def _sighting_rows(records: Sequence[Sighting], where: Mapping[Any, tuple[int, str]]) -> list[SightingRow]:
        """The records checked and made plain; ``where``: each record's ``source`` -> (source id, its camera),
        the camera of the records that name none."""
        out = []
        for i, r in enumerate(records):
            sid, cam = where[r.source]
            box = None if r.box is None else tuple(int(v) for v in r.box)
            if box is not None and len(box) != 4:
                raise ValueError(f"record {i}: box must be (x1, y1, x2, y2), got {r.box}")
            out.append(SightingRow(
                sid, str(r.camera) if r.camera is not None else cam, to_seconds(r.timestamp),
                None if r.frame is None else int(r.frame), box, None if r.track_id is None else int(r.track_id),
                r.crop, None if r.quality is None else float(r.quality),
            ))  # fmt: skip
        return out

    # -- searching and reading --------------------------------------------------------------------------
    def _filters(
        self,
        cameras: str | Iterable[str] | None = None,
        time_range: tuple[Any, Any] | None = None,
        exclude_source: SourceRef | Iterable[SourceRef] | None = None,
    ) -> tuple[set[str] | None, float, float, set[int]]:
        """Search filters made plain: (cameras or None for all, start, end (infinite: open), excluded source ids)."""
        cams = None if cameras is None else ({cameras} if isinstance(cameras, str) else {str(c) for c in cameras})
        t0, t1 = -math.inf, math.inf
        if time_range is not None:
            lo, hi = time_range
            t0 = -math.inf if lo is None else to_seconds(lo)
            t1 = math.inf if hi is None else to_seconds(hi)
        excl: set[int] = set()
        if exclude_source is not None:
            refs = [exclude_source] if isinstance(exclude_source, str | int | np.integer) else list(exclude_source)
            excl = {s for s in (self._source_id(r) for r in refs) if s is not None}
        return cams, t0, t1, excl

    def search(
        self,
        queries: Any,
        k: int = 100,
        *,
        cameras: str | Iterable[str] | None = None,
        time_range: tuple[Any, Any] | None = None,
        exclude_source: SourceRef | Iterable[SourceRef] | None = None,
    ) -> list[list[Hit]]:
        """The ``k`` detections most similar to each query (Q, D), best first, with their metadata.

        Filters: ``cameras`` (name or names), ``time_range`` ``(start, end)`` inclusive (seconds or
        ISO strings; None for open ends), ``exclude_source`` (uri/id or several, e.g. the query's own
        video). How each backend applies them: its ``_knn``.
        """
        with self._lock:
            return self._knn(self._prep(queries, "queries"), k, cameras, time_range, exclude_source)

    def get(self, ids: Iterable[int]) -> list[Record]:
        """The records of ``ids``, in order (KeyError for unknown ids)."""
        ids = [int(i) for i in ids]
        with self._lock:
            found = self._records(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"no such gallery ids: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        return [found[i] for i in ids]

    def record(self, sighting: int) -> Record | None:
        """The stored detection with id ``sighting``, None if there is none."""
        with self._lock:
            return self._records([int(sighting)]).get(int(sighting))

    # -- lifecycle --------------------------------------------------------------------------------------
    def set_search_params(self, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Change the HNSW ``ef_search`` / IVF ``nprobe`` used from now on (not saved)."""
        with self._lock:
            self.config = replace(
                self.config, ef_search=ef_search or self.config.ef_search, nprobe=nprobe or self.config.nprobe
            )
            self._config_changed()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
