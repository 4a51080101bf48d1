"""The gallery interface: what ingest, query and the application API may ask of a gallery.

:class:`GalleryBackend` is the contract a backend implements; :class:`~reidkit.search.storage.gallery.
Gallery` (SQLite metadata + FAISS index in one folder) is the embedded one. A second backend (a
distributed vector database) implements the same methods and is chosen where a gallery is opened,
without touching ingest, query or the service. Both inherit what does not depend on the storage (the
source-registration policy, crop naming, ``add``'s checks, filter parsing) from
:class:`~reidkit.search.storage.common.GalleryCommon`. Every method takes source ids or URIs (``SourceRef``)
and returns the records of :mod:`reidkit.search.storage.records`; nothing above storage sees SQL.

Groups (the embedded backend documents each method's exact semantics):

* **sources**: ``register`` (what an ingest of a source must do: skip / new / resume / replaced),
  ``add_source``, ``source_status``, ``set_source_status``, ``sources``, ``remove_source``;
* **writing** (ingest): ``save_crop`` / ``copy_crop`` (media), ``add`` (sightings with their features,
  the source's progress, a tracking ``snapshot`` and photo-ledger rows, in one transaction),
  ``snapshot`` / ``drop_snapshots``, ``max_track_id``, ``photo_ledger``;
* **searching**: ``search`` and ``search_tracks`` with ``k`` and filters on camera, time range and
  source;
* **reading**: ``get`` / ``record`` by id, ``records``, ``features``, ``tracks``, ``track``,
  ``tracks_by_key``, ``track_features``, ``cameras``, ``time_bases``, ``photo_path``; and what the
  application API (search, the service's gallery pages) reads: ``ids``, ``pictures``, ``overview``;
* **lifecycle**: ``save``, ``close``, ``dim``, ``len()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from reidkit.search.storage import records as rec

SourceRef = int | str


@runtime_checkable
class GalleryBackend(Protocol):
    """A gallery of sightings and their features (see the module docstring)."""

    root: Path
    read_only: bool

    @property
    def dim(self) -> int | None: ...

    def __len__(self) -> int: ...

    # sources
    def register(
        self, uri: str, camera: str, fps: float | None, fingerprint: str, *, replace: bool = False,
        grows: bool = False, live: bool = False,
    ) -> tuple[rec.Source, str]: ...  # fmt: skip

    def add_source(
        self, uri: str, camera: str, fps: float | None = None, fingerprint: str | None = None
    ) -> rec.Source: ...

    def source_status(self, source: SourceRef) -> rec.Source | None: ...

    def set_source_status(
        self, source: SourceRef, status: str, progress: float | None = None, *, fingerprint: str | None = None
    ) -> rec.Source: ...

    def sources(self) -> list[rec.Source]: ...

    def remove_source(self, source: SourceRef) -> int: ...

    # writing
    def save_crop(self, image: Any, source: SourceRef, name: str | None = None, **kw: Any) -> str: ...

    def copy_crop(self, source: SourceRef, path: str, root: str) -> str: ...

    def add(
        self, features: Any, records: Sequence[rec.Sighting], *, progress: float | None = None,
        source: SourceRef | None = None, snapshot: bytes | None = None, photos: Sequence[rec.Photo] = (),
    ) -> np.ndarray: ...  # fmt: skip

    def snapshot(self, source: SourceRef, progress: float) -> bytes | None: ...

    def drop_snapshots(self, source: SourceRef) -> None: ...

    def max_track_id(self, source: SourceRef) -> int: ...

    def photo_ledger(self, source: SourceRef) -> rec.PhotoLedger: ...

    # searching
    def search(
        self, queries: Any, k: int = 100, *, cameras: str | Iterable[str] | None = None,
        time_range: tuple[Any, Any] | None = None, exclude_source: SourceRef | Iterable[SourceRef] | None = None,
    ) -> list[list[rec.Hit]]: ...  # fmt: skip

    def search_tracks(self, queries: Any, k: int = 100, **filters: Any) -> list[list[rec.TrackHit]]: ...

    # reading
    def get(self, ids: Iterable[int]) -> list[rec.Record]: ...

    def records(self, source: SourceRef | None = None, track_id: int | None = None) -> list[rec.Record]: ...

    def features(self, ids: Iterable[int]) -> np.ndarray: ...

    def tracks(self, source: SourceRef | None = None) -> list[rec.Track]: ...

    def track_features(self, ids: Iterable[int]) -> np.ndarray: ...

    def cameras(self) -> list[str]: ...

    def photo_path(self, source: SourceRef, frame: int | None) -> Path | None: ...

    # reading for the application API (reidkit.search.api)
    def record(self, sighting: int) -> rec.Record | None:
        """One stored detection by id (None: no such id)."""

    def track(self, track: int) -> rec.Track | None:
        """One track by row id (None: no such track)."""

    def tracks_by_key(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], rec.Track]:
        """The tracks of ``(source_id, tracker id)`` pairs, by pair (pairs without a track absent)."""

    def ids(self) -> np.ndarray:
        """Every detection id, ascending (the search's z reference samples them)."""

    def time_bases(self) -> dict[int, str]:
        """Where each photo source's times came from (exif, sidecar, pattern, mtime or a mix), by source id."""

    def pictures(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], str]:
        """The file names of the pictures of photo-folder ``(source_id, frame)`` pairs (others absent)."""

    def overview(self, recent: int = 24) -> rec.GalleryOverview:
        """Counts per camera and per source, tracks, searchable detections and the ``recent`` added last."""

    # lifecycle
    def save(self) -> None: ...

    def close(self) -> None: ...
