"""A searchable gallery of person crops: SQLite metadata + a FAISS index, in one folder.

Layout of a gallery folder::

    gallery.db              SQLite (WAL): meta, sources, detections, features, tracks (see store.py)
    index.faiss             FAISS snapshot of the detection features, id = detections.id
    crops/<source-id>/...   JPEG crops written by Gallery.save_crop (paths in the DB are relative)
    .lock                   flock held by the one writer

Crash safety: the database is the source of truth, the index a derived snapshot.

* ``add`` commits the detection rows *and their features* (``features`` table) in one SQLite
  transaction (``synchronous=FULL``), then adds the vectors to the in-memory index. ``remove_source``
  deletes rows, features and tracks in one transaction, then the vectors, then the crop folder.
* The index file is only ever replaced whole (temp file, fsync, ``os.replace``): on ``save()``,
  ``close()`` and every ``autosave`` added rows. A kill at any point leaves the last snapshot intact.
* On open the two are reconciled by id set: vectors whose rows are gone (a removal committed after
  the snapshot) are removed from the index (HNSW, which cannot remove, masks them at search time and
  is rebuilt once they pass 25 %); rows missing from the snapshot (committed after it, or the process
  died between commit and save) get their vectors re-added from the ``features`` table; an unreadable
  or mismatched snapshot is rebuilt from the database. Ids are AUTOINCREMENT and never reused, so an
  id in a stale snapshot always means the same detection. Leftover temp files and crop folders of
  removed sources are deleted. What was repaired is logged and kept in ``Gallery.repairs``.
  (An id-set diff rather than a high-water mark, because removals leave holes; it costs one
  ``SELECT id`` per open, ~0.3 s per million rows.) A crash between ``save_crop`` and the ``add``
  that references the crop leaves an unreferenced JPEG behind; nothing else is left over.

Search: unfiltered queries go straight to FAISS. Filters (cameras, time range, excluded sources)
become an id bitmap (``IDSelectorBitmap``) built from per-id columns kept in memory; HNSW efSearch
and IVF nprobe are widened by 1 / (fraction of the gallery that passes) so as many admissible
candidates are visited as in an unfiltered search, and filters that leave <= ``EXACT_SUBSET`` rows
are answered by brute force over them. Single queries are fastest with one OpenMP thread
(``faiss.omp_set_num_threads(1)`` in a query server): FAISS parallelises over queries.

Only one process may write a gallery (``.lock``); others may open it ``read_only=True`` and see the
snapshot reconciled in memory. A Gallery object is thread-safe (one lock around each operation).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import astuple
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from reidkit.search.storage.common import CROPS, GalleryCommon, normalize, open_config
from reidkit.search.storage.index import IndexConfig, IndexFileError, VectorIndex, bitmap_selector
from reidkit.search.storage.media import lookup_photo
from reidkit.search.storage.records import (
    CameraCount,
    GalleryError,
    GalleryOverview,
    Hit,
    Photo,
    PhotoLedger,
    Record,
    Sighting,
    Source,
    SourceCount,
    SourceEvent,
    Track,
    TrackHit,
)
from reidkit.search.storage.schema import (
    EVENTS_DDL,
    FORMAT,
    PHOTO_COLUMNS,
    PHOTOS_DDL,
    RECORD_SQL,
    SCHEMA,
    SNAPSHOTS_DDL,
    SOURCE_SQL,
    TRACK_SQL,
    VERSION,
    connect,
)

try:  # POSIX advisory lock; without it (Windows) the single-writer rule is not enforced
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

DB_NAME = "gallery.db"
INDEX_NAME = "index.faiss"
EXACT_SUBSET = 4096  # filters that leave this few candidates are answered exactly (brute force over them)
_CHUNK = 900  # ids per SQL "IN (...)"

SourceRef = str | int


def _chunks(seq: Sequence[int], n: int = _CHUNK) -> Iterator[Sequence[int]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row top-``k`` (values, column indices), best first."""
    k = min(k, scores.shape[1])
    part = (
        np.argpartition(-scores, k - 1, axis=1)[:, :k]
        if k < scores.shape[1]
        else np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    )
    vals = np.take_along_axis(scores, part, 1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(vals, order, 1), np.take_along_axis(part, order, 1)


class _Columns:
    """Per-id filter columns (alive, camera code, timestamp, source) for vectorised filtering."""

    def __init__(self) -> None:
        self.alive = np.zeros(0, bool)
        self.cam = np.zeros(0, np.int32)
        self.ts = np.zeros(0, np.float64)
        self.src = np.zeros(0, np.int64)
        self.codes: dict[str, int] = {}

    def code(self, camera: str) -> int:
        return self.codes.setdefault(camera, len(self.codes))

    def put(self, ids: np.ndarray, cameras: Sequence[str], ts: np.ndarray, src: np.ndarray) -> None:
        if len(ids) == 0:
            return
        need = int(ids.max()) + 1
        if need > len(self.alive):
            cap = max(need, 2 * len(self.alive), 1024)
            for name in ("alive", "cam", "ts", "src"):
                old = getattr(self, name)
                new = np.zeros(cap, old.dtype)
                new[: len(old)] = old
                setattr(self, name, new)
        self.alive[ids] = True
        self.cam[ids] = [self.code(c) for c in cameras]
        self.ts[ids] = ts
        self.src[ids] = src

    def kill(self, ids: np.ndarray) -> None:
        ids = ids[ids < len(self.alive)]
        self.alive[ids] = False

    def mask(self, cameras: set[str] | None, t0: float, t1: float, exclude: set[int]) -> np.ndarray:
        m = self.alive.copy()
        if cameras is not None:
            ok = np.zeros(len(self.codes) + 1, bool)
            ok[[self.codes[c] for c in cameras if c in self.codes]] = True
            m &= ok[self.cam]
        if t0 > -math.inf:
            m &= self.ts >= t0
        if t1 < math.inf:
            m &= self.ts <= t1
        for s in exclude:
            m &= self.src != s
        return m


class _TrackCache:
    """Track features (normalised sums) and filter columns in memory, for exact track search."""

    def __init__(self, dim: int) -> None:
        self.ids = np.zeros(0, np.int64)
        self.mat = np.zeros((0, dim), np.float32)
        self.cam: list[str] = []
        self.first = np.zeros(0, np.float64)
        self.last = np.zeros(0, np.float64)
        self.src = np.zeros(0, np.int64)
        self.pos: dict[int, int] = {}
        self.n = 0

    def put(self, tid: int, vec: np.ndarray, camera: str, first: float, last: float, src: int) -> None:
        i = self.pos.get(tid)
        if i is None:
            i = self.n
            if i == len(self.ids):
                cap = max(64, 2 * len(self.ids))
                self.ids = np.resize(self.ids, cap)
                self.first, self.last = np.resize(self.first, cap), np.resize(self.last, cap)
                self.src = np.resize(self.src, cap)
                mat = np.zeros((cap, self.mat.shape[1]), np.float32)
                mat[: self.n] = self.mat[: self.n]
                self.mat = mat
            self.pos[tid] = i
            self.cam.append(camera)
            self.n += 1
        self.ids[i], self.mat[i], self.first[i], self.last[i], self.src[i] = tid, vec, first, last, src


class Gallery(GalleryCommon):
    """Person crops from many cameras, searchable by appearance; see the module docstring.

    Open with :meth:`open` (or the constructor, same arguments); use as a context manager or call
    :meth:`close`, which saves the index.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        create: bool = True,
        dim: int | None = None,
        index: str | IndexConfig | None = None,
        *,
        ef_search: int | None = None,
        nprobe: int | None = None,
        read_only: bool = False,
        autosave: int | None = 100_000,
    ) -> None:
        self.root = Path(path)
        self.read_only = read_only
        self.autosave = autosave
        self.repairs: dict[str, int] = {}
        self._lock = threading.RLock()
        self._lockfd: int | None = None
        self._conn: sqlite3.Connection | None = None
        self._index: VectorIndex | None = None
        self._cols: _Columns | None = None
        self._tracks: _TrackCache | None = None
        self._unsaved = 0
        if isinstance(index, str):
            IndexConfig(kind=index)  # validate before anything is created
        if dim is not None and int(dim) < 1:
            raise GalleryError(f"dim must be positive, got {dim}")
        db = self.root / DB_NAME
        if not db.is_file():
            self._check_creatable(create and not read_only)
        try:
            if not read_only:
                self.root.mkdir(parents=True, exist_ok=True)
                self._acquire_lock()
            new = not db.is_file()
            if new:
                self._check_creatable(True)  # re-check under the lock
            self._conn = connect(str(db), read_only=read_only)
            if (
                not new
                and not read_only
                and self._conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
            ):
                new = True  # an empty database: creation was interrupted before its first commit
            if new:
                self._init_schema(dim, index)
            self._load_meta(dim, index, ef_search, nprobe)
            self._n = int(self._conn.execute("SELECT COUNT(*) FROM detections").fetchone()[0])
            if self.dim is not None:
                self._load_index()
                self._reconcile()
            if not read_only:
                self._conn.execute(PHOTOS_DDL)  # galleries made before photo folders existed
                self._conn.execute(SNAPSHOTS_DDL)
                self._conn.execute(EVENTS_DDL)
                self._conn.execute("DELETE FROM ingest_snapshots WHERE source_id NOT IN (SELECT id FROM sources)")
                self._cleanup_files()
                if self._unsaved:
                    self.save()
        except BaseException:
            self._release()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Gallery:
        """Open the gallery at ``path``, creating it (an empty or new folder) if ``create``; the
        constructor's arguments (``create``, ``dim``, ``index``, then keywords only).

        ``index``: ``"flat"`` (exact; default for a new gallery), ``"hnsw"``, ``"ivf"`` or an
        :class:`IndexConfig`; for an existing gallery it must match what it was built with (see
        :meth:`reindex`). Keywords: ``ef_search``, ``nprobe`` (search knobs for this session),
        ``read_only`` and ``autosave`` (save the index every that many added rows; None: never).
        """
        return cls(path, *args, **kwargs)

    # -- opening ----------------------------------------------------------------------------------
    def _check_creatable(self, create: bool) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise GalleryError(f"{root} is a file, not a gallery folder")
        if not create:
            raise GalleryError(f"{root} is not a reidkit gallery (no {DB_NAME}); open it with create=True to make one")
        if root.exists() and any(p.name != ".lock" for p in root.iterdir()):
            raise GalleryError(
                f"{root} is not a reidkit gallery (no {DB_NAME}) and is not empty; refusing to create a gallery "
                "there: pass an empty or new folder"
            )

    def _acquire_lock(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise GalleryError(
                f"{self.root} is already open for writing (by this or another process); "
                "open it with read_only=True to search it"
            ) from None
        self._lockfd = fd

    def _release(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lockfd is not None:
            os.close(self._lockfd)  # closing the descriptor releases the flock
            self._lockfd = None

    def _init_schema(self, dim: int | None, index: str | IndexConfig | None) -> None:
        config = index if isinstance(index, IndexConfig) else IndexConfig(kind=index or "flat")
        if dim is not None and int(dim) < 1:
            raise GalleryError(f"dim must be positive, got {dim}")
        with self._tx() as cur:
            for stmt in SCHEMA.split(";"):  # not executescript: it would commit the open transaction
                if stmt.strip():
                    cur.execute(stmt)
            meta = {"format": FORMAT, "version": str(VERSION), "index": json.dumps(config.to_dict())}
            if dim is not None:
                meta["dim"] = str(int(dim))
            cur.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", meta.items())

    def _load_meta(
        self, dim: int | None, index: str | IndexConfig | None, ef_search: int | None, nprobe: int | None
    ) -> None:
        try:
            meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError:
            raise GalleryError(f"{self.root / DB_NAME} is not a reidkit gallery database") from None
        if meta.get("format") != FORMAT:
            fmt = meta.get("format")
            raise GalleryError(f"{self.root / DB_NAME} is not a reidkit gallery database (format {fmt!r})")
        if int(meta.get("version", 0)) > VERSION:
            raise GalleryError(f"{self.root} was written by a newer reidkit (gallery version {meta['version']})")
        self.dim: int | None = int(meta["dim"]) if meta.get("dim") else None
        if dim is not None and self.dim is not None and int(dim) != self.dim:
            raise GalleryError(f"{self.root} holds dim={self.dim} features; dim={dim} was asked for")
        if dim is not None and self.dim is None:
            self._set_dim(int(dim))
        self.config = open_config(self.root, IndexConfig.from_dict(json.loads(meta["index"])), index, ef_search, nprobe)

    def _set_dim(self, dim: int) -> None:
        if dim < 1:
            raise GalleryError(f"dim must be positive, got {dim}")
        if not self.read_only:
            with self._tx() as cur:
                cur.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('dim', ?)", (str(dim),))
        self.dim = dim

    def _load_index(self) -> None:
        assert self.dim is not None
        path = self.root / INDEX_NAME
        idx = None
        if path.exists():
            try:
                idx = VectorIndex.read(path, self.config)
            except IndexFileError as exc:
                log.warning("gallery %s: %s; rebuilding the index from the database", self.root, exc)
                self.repairs["index_unreadable"] = 1
            else:
                expected = {self.config.kind, "flat"} if self.config.kind == "ivf" else {self.config.kind}
                if idx.dim != self.dim or idx.structure not in expected:
                    log.warning("gallery %s: index snapshot does not match the configuration; rebuilding", self.root)
                    self.repairs["index_mismatch"] = 1
                    idx = None
        if idx is None:
            idx = VectorIndex.empty(self.dim, self.config)
            self._unsaved += 1
        self._index = idx

    def _reconcile(self) -> None:
        """Make the index hold exactly the database's detections (see the module docstring)."""
        idx = self._index
        assert idx is not None
        if not self.read_only:  # rows without features cannot be searched (never written so; be safe)
            n_feat = int(self.db.execute("SELECT COUNT(*) FROM features").fetchone()[0])
            n1 = n2 = 0
            if n_feat != self._n:
                with self._tx() as cur:
                    n1 = cur.execute("DELETE FROM detections WHERE id NOT IN (SELECT id FROM features)").rowcount
                    n2 = cur.execute("DELETE FROM features WHERE id NOT IN (SELECT id FROM detections)").rowcount
            if n1 or n2:
                self.repairs["orphan_rows"] = n1 + n2
                self._n = int(self.db.execute("SELECT COUNT(*) FROM detections").fetchone()[0])
        db_ids = np.fromiter((r[0] for r in self.db.execute("SELECT id FROM detections")), np.int64, count=self._n)
        idx_ids = idx.ids()
        if len(np.unique(idx_ids)) != len(idx_ids):
            log.warning("gallery %s: index holds duplicate ids; rebuilding it", self.root)
            self.repairs["duplicates"] = len(idx_ids) - len(np.unique(idx_ids))
            self._rebuild()
            return
        extra = np.setdiff1d(idx_ids, db_ids, assume_unique=True)
        missing = np.setdiff1d(db_ids, idx_ids, assume_unique=True)
        if not idx.supports_remove:  # HNSW keeps removed vectors, masked at search time: not damage
            extra = extra[:0]
        if len(extra):
            self.repairs["stale_vectors"] = len(extra)
            idx.remove(extra)
            self._unsaved += 1
        if len(missing):
            self.repairs["readded_vectors"] = len(missing)
            for ids in _chunks(missing, 50_000):
                idx.add(np.asarray(ids), self._read_features(ids))
            self._unsaved += 1
        if len(extra) or len(missing):
            log.warning(
                "gallery %s: reconciled the index with the database: %d stale vectors dropped, %d re-added",
                self.root,
                len(extra),
                len(missing),
            )
        self._maybe_rebuild()

    def _maybe_rebuild(self) -> None:
        idx = self._index
        assert idx is not None
        dead = idx.ntotal - self._n
        if self.config.kind == "ivf" and idx.structure != "ivf" and self._n >= self.config.min_train:
            self._rebuild()  # enough vectors to train IVF
        elif dead > 0 and dead > 0.25 * idx.ntotal:
            self._rebuild()  # HNSW: too many removed vectors still in the graph

    def _cleanup_files(self) -> None:
        for tmp in self.root.glob(f".{INDEX_NAME}.*"):
            tmp.unlink(missing_ok=True)
            self.repairs["temp_files"] = self.repairs.get("temp_files", 0) + 1
        crops = self.root / CROPS
        if crops.is_dir():
            live = {str(r[0]) for r in self.db.execute("SELECT id FROM sources")}
            for d in crops.iterdir():
                if d.is_dir() and d.name not in live:
                    shutil.rmtree(d, ignore_errors=True)
                    self.repairs["orphan_crop_dirs"] = self.repairs.get("orphan_crop_dirs", 0) + 1

    # -- plumbing ---------------------------------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise GalleryError(f"gallery {self.root} is closed")
        return self._conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def _writable(self) -> None:
        if self.read_only:
            raise GalleryError(f"gallery {self.root} is open read-only")
        self.db  # noqa: B018 (raises if closed)

    def _source_id(self, source: SourceRef) -> int | None:
        col = "id" if isinstance(source, int | np.integer) else "uri"
        row = self.db.execute(f"SELECT id FROM sources WHERE {col} = ?", (int(source) if col == "id" else str(source),))
        r = row.fetchone()
        return None if r is None else int(r[0])

    def _read_features(self, ids: Sequence[int], table: str = "features", col: str = "vec") -> np.ndarray:
        assert self.dim is not None
        ids = [int(i) for i in ids]
        out = np.empty((len(ids), self.dim), np.float32)
        where = {i: n for n, i in enumerate(ids)}
        found: set[int] = set()
        for chunk in _chunks(list(where)):
            q = f"SELECT id, {col} FROM {table} WHERE id IN ({','.join('?' * len(chunk))})"
            for i, blob in self.db.execute(q, chunk):
                out[where[i]] = np.frombuffer(blob, np.float32)
                found.add(i)
        if len(found) != len(where):
            missing = [i for i in where if i not in found]
            raise KeyError(f"no such gallery ids: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if len(where) != len(ids):  # repeated ids
            out = out[[where[i] for i in ids]]
        return out

    def _iter_features(self, batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        cur = self.db.execute("SELECT id, vec FROM features ORDER BY id")
        while rows := cur.fetchmany(batch):
            ids = np.fromiter((r[0] for r in rows), np.int64, count=len(rows))
            yield ids, np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), -1)

    def _rebuild(self) -> None:
        """Build a fresh index of the configured kind from the ``features`` table."""
        assert self.dim is not None
        cfg = self.config
        t = time.perf_counter()
        if cfg.kind == "ivf" and self._n >= cfg.min_train:
            all_ids = np.fromiter((r[0] for r in self.db.execute("SELECT id FROM features")), np.int64)
            rng = np.random.default_rng(0)
            sample = np.sort(rng.choice(all_ids, size=min(len(all_ids), cfg.min_train), replace=False))
            idx = VectorIndex.trained_ivf(self._read_features(sample), cfg)
        else:
            idx = VectorIndex.empty(self.dim, cfg)
        for ids, x in self._iter_features():
            idx.add(ids, x)
        self._index = idx
        self._unsaved += 1
        self.repairs["index_rebuilt"] = self.repairs.get("index_rebuilt", 0) + 1
        log.info(
            "gallery %s: built a %s index of %d vectors in %.1fs",
            self.root,
            idx.structure,
            idx.ntotal,
            time.perf_counter() - t,
        )

    # -- sources ----------------------------------------------------------------------------------
    def _existing(self, uri: str) -> Source | None:
        return self.source_status(uri)

    def _keep_source(self, old: Source, fingerprint: str | None) -> Source:
        if fingerprint is not None:
            with self._tx() as cur:
                cur.execute("UPDATE sources SET fingerprint = ? WHERE id = ?", (fingerprint, old.id))
        return self.source_status(old.id)  # type: ignore[return-value]

    def _insert_source(self, uri: str, camera: str, fps: float | None, fingerprint: str | None) -> Source:
        now = time.time()
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO sources(uri, camera, fps, fingerprint, status, created, updated) "
                "VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                (str(uri), str(camera), fps, fingerprint, now, now),
            )
        return self.source_status(str(uri))  # type: ignore[return-value]

    def source_status(self, source: SourceRef) -> Source | None:
        """The stored source (by uri or id), or None if unknown."""
        col = "id" if isinstance(source, int | np.integer) else "uri"
        with self._lock:
            row = self.db.execute(f"{SOURCE_SQL} WHERE {col} = ?", (int(source) if col == "id" else str(source),))
            r = row.fetchone()
        return None if r is None else Source(*r)

    def _set_status(self, source: SourceRef, status: str, progress: float | None, fingerprint: str | None) -> Source:
        sid = self._sid(source)
        with self._tx() as cur:
            cur.execute(
                "UPDATE sources SET status = ?, progress = COALESCE(?, progress), "
                "fingerprint = COALESCE(?, fingerprint), updated = ? WHERE id = ?",
                (status, progress, fingerprint, time.time(), sid),
            )
        return self.source_status(sid)  # type: ignore[return-value]

    def sources(self) -> list[Source]:
        with self._lock:
            return [Source(*r) for r in self.db.execute(f"{SOURCE_SQL} ORDER BY id")]

    def remove_source(self, source: SourceRef) -> int:
        """Delete a source with its detections, vectors, tracks and crop files; returns the rows removed."""
        self._writable()
        with self._lock:
            sid = self._source_id(source)
            if sid is None:
                raise KeyError(f"no such source {source!r}")
            with self._tx() as cur:
                ids = np.fromiter(
                    (r[0] for r in cur.execute("SELECT id FROM detections WHERE source_id = ?", (sid,))), np.int64
                )
                cur.execute("DELETE FROM features WHERE id IN (SELECT id FROM detections WHERE source_id = ?)", (sid,))
                cur.execute("DELETE FROM detections WHERE source_id = ?", (sid,))
                cur.execute("DELETE FROM tracks WHERE source_id = ?", (sid,))
                cur.execute("DELETE FROM photos WHERE source_id = ?", (sid,))
                cur.execute("DELETE FROM ingest_snapshots WHERE source_id = ?", (sid,))
                cur.execute("DELETE FROM source_events WHERE source_id = ?", (sid,))
                cur.execute("DELETE FROM sources WHERE id = ?", (sid,))
            self._n -= len(ids)
            if self._index is not None and len(ids):
                self._index.remove(ids)
                self._unsaved += 1
                if self._cols is not None:
                    self._cols.kill(ids)
                self._tracks = None
                self._maybe_rebuild()
            shutil.rmtree(self.root / CROPS / str(sid), ignore_errors=True)
            return len(ids)

    # -- adding -----------------------------------------------------------------------------------
    def _add(
        self, x: np.ndarray, records: Sequence[Sighting], progress: float | None, source: SourceRef | None,
        snapshot: bytes | None, photos: Sequence[Photo],
    ) -> np.ndarray:  # fmt: skip
        """:meth:`add`, committed in one transaction: the rows, features and track updates, the progress
        marker with its snapshot, the photo-ledger rows."""
        if len(x) == 0:
            if (progress is not None and source is not None) or photos:
                with self._lock, self._tx() as cur:
                    self._mark(cur, {} if source is None else {"": (self._sid(source), "")}, progress, snapshot)
                    self._put_photos(cur, photos)
            return np.zeros(0, np.int64)
        with self._lock:
            if self.dim is None:
                self._set_dim(x.shape[1])
                self._index = VectorIndex.empty(x.shape[1], self.config)
            assert self._index is not None
            sids: dict[str, tuple[int, str]] = {}
            now = time.time()
            with self._tx() as cur:
                for r in records:
                    if r.source in sids:
                        continue
                    row = cur.execute("SELECT id, camera FROM sources WHERE uri = ?", (str(r.source),)).fetchone()
                    if row is None:
                        if r.camera is None:
                            raise GalleryError(f"unknown source {r.source!r}: add_source it first or give a camera")
                        cur.execute(
                            "INSERT INTO sources(uri, camera, status, created, updated) "
                            "VALUES (?, ?, 'ingesting', ?, ?)",
                            (str(r.source), str(r.camera), now, now),
                        )
                        row = (cur.lastrowid, str(r.camera))
                    sids[r.source] = (int(row[0]), str(row[1]))
                seq = cur.execute("SELECT seq FROM sqlite_sequence WHERE name = 'detections'").fetchone()
                top = cur.execute("SELECT MAX(id) FROM detections").fetchone()[0]
                start = max(seq[0] if seq else 0, top or 0) + 1
                ids = np.arange(start, start + len(x), dtype=np.int64)
                plain = self._sighting_rows(records, sids)
                cams = [p.camera for p in plain]
                ts = np.array([p.timestamp for p in plain], np.float64)
                rows = [(int(i), p.source_id, p.camera, t, p.frame, *(p.box or (None,) * 4), p.track_id, p.crop,
                         p.quality) for i, p, t in zip(ids, plain, ts, strict=True)]  # fmt: skip
                cur.executemany("INSERT INTO detections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                cur.executemany("INSERT INTO features(id, vec) VALUES (?, ?)", zip(ids.tolist(), x, strict=True))
                track_updates = self._update_tracks(cur, x, records, sids, cams, ts)
                self._put_photos(cur, photos)
                marked = sids if source is None else {"": (self._sid(source), "")}
                self._mark(cur, marked, progress, snapshot)
            self._n += len(ids)
            try:
                self._index.add(ids, x)
            except BaseException:
                self._reconcile()
                raise
            self._unsaved += len(ids)
            if self._cols is not None:
                self._cols.put(ids, cams, ts, np.array([sids[r.source][0] for r in records]))
            if self._tracks is not None:
                for upd in track_updates:
                    self._tracks.put(*upd)
            self._maybe_rebuild()
            if self.autosave and self._unsaved >= self.autosave:
                self.save()
            return ids

    @staticmethod
    def _mark(
        cur: sqlite3.Cursor, sids: dict[str, tuple[int, str]], progress: float | None, snapshot: bytes | None
    ) -> None:
        """Set the sources' progress marker (pending -> ingesting); with ``snapshot``, keep it as the one
        tracking snapshot of the (single) source at that progress."""
        if progress is None:
            return
        now = time.time()
        cur.executemany(
            "UPDATE sources SET progress = ?, updated = ?, "
            "status = CASE WHEN status = 'pending' THEN 'ingesting' ELSE status END WHERE id = ?",
            [(float(progress), now, sid) for sid, _ in sids.values()],
        )
        for sid, _ in sids.values():
            if snapshot is not None:
                cur.execute(
                    "INSERT OR REPLACE INTO ingest_snapshots(source_id, progress, created, state) VALUES (?, ?, ?, ?)",
                    (sid, float(progress), now, snapshot),
                )
                keep = (sid, float(progress))
                cur.execute("DELETE FROM ingest_snapshots WHERE source_id = ? AND progress != ?", keep)

    @staticmethod
    def _put_photos(cur: sqlite3.Cursor, photos: Sequence[Photo]) -> None:
        if photos:
            sql = f"INSERT INTO photos({PHOTO_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            cur.executemany(sql, [astuple(p) for p in photos])

    # -- ingest state -----------------------------------------------------------------------------
    def snapshot(self, source: SourceRef, progress: float) -> bytes | None:
        """The tracking snapshot an interrupted ingest of ``source`` left at ``progress``, if any."""
        with self._lock:
            row = self.db.execute(
                "SELECT state FROM ingest_snapshots WHERE source_id = ? AND progress = ?",
                (self._sid(source), float(progress)),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def drop_snapshots(self, source: SourceRef) -> None:
        """Forget ``source``'s tracking snapshots (its ingest finished, or starts afresh)."""
        self._writable()
        with self._lock:
            self.db.execute("DELETE FROM ingest_snapshots WHERE source_id = ?", (self._sid(source),))

    def log_event(self, source: SourceRef, event: str, detail: str = "", at: float | None = None) -> None:
        """Record that ``event`` happened to ``source`` (see :class:`SourceEvent`)."""
        self._writable()
        with self._lock:
            self.db.execute(
                "INSERT INTO source_events(source_id, time, event, detail) VALUES (?, ?, ?, ?)",
                (self._sid(source), time.time() if at is None else float(at), str(event), str(detail)),
            )

    def events(self, source: SourceRef | None = None) -> list[SourceEvent]:
        """What happened to ``source`` (default: every source), oldest first."""
        q = "SELECT source_id, time, event, detail FROM source_events"
        with self._lock:
            if not self._has_table("source_events"):
                return []
            rows = self.db.execute(q + " ORDER BY id") if source is None else self.db.execute(
                q + " WHERE source_id = ? ORDER BY id", (self._sid(source),)
            )
            return [SourceEvent(*r) for r in rows]

    def _has_table(self, name: str) -> bool:
        q = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return self.db.execute(q, (name,)).fetchone() is not None

    def max_track_id(self, source: SourceRef) -> int:
        """The largest track id stored for ``source`` (0: none), so a new run's tracks follow it."""
        with self._lock:
            row = self.db.execute("SELECT MAX(track_id) FROM detections WHERE source_id = ?", (self._sid(source),))
            return int(row.fetchone()[0] or 0)

    def photo_ledger(self, source: SourceRef) -> PhotoLedger:
        """What the gallery holds of a photo source (see :class:`PhotoLedger`)."""
        with self._lock:
            sid, db = self._sid(source), self.db
            rows = db.execute("SELECT name, digest, size, mtime_ns FROM photos WHERE source_id = ?", (sid,)).fetchall()
            frame = db.execute("SELECT MAX(frame) FROM photos WHERE source_id = ?", (sid,)).fetchone()[0]
            track = db.execute("SELECT MAX(track_id) FROM detections WHERE source_id = ?", (sid,)).fetchone()[0]
        stats = {str(r[0]): (int(r[2]), int(r[3])) for r in rows}
        return PhotoLedger({str(r[1]) for r in rows}, stats, (frame or 0) + 1, (track or 0) + 1)

    @staticmethod
    def _update_tracks(
        cur: sqlite3.Cursor,
        x: np.ndarray,
        records: Sequence[Sighting],
        sids: dict[str, tuple[int, str]],
        cams: list[str],
        ts: np.ndarray,
    ) -> list[tuple[int, np.ndarray, str, float, float, int]]:
        groups: dict[tuple[int, int], list[int]] = {}
        for i, r in enumerate(records):
            if r.track_id is not None:
                groups.setdefault((sids[r.source][0], int(r.track_id)), []).append(i)
        out = []
        for (sid, tid), rows in groups.items():
            s = x[rows].sum(0)
            first, last = float(ts[rows].min()), float(ts[rows].max())
            old = cur.execute(
                "SELECT id, first_time, last_time, n_crops, feature_sum, camera FROM tracks "
                "WHERE source_id = ? AND track_id = ?",
                (sid, tid),
            ).fetchone()
            if old is None:
                cam = cams[rows[0]]
                cur.execute(
                    "INSERT INTO tracks(source_id, track_id, camera, first_time, last_time, n_crops, feature_sum) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (sid, tid, cam, first, last, len(rows), s.astype(np.float32).tobytes()),
                )
                row_id = int(cur.lastrowid or 0)
            else:
                row_id, cam = int(old[0]), old[5]
                s = s + np.frombuffer(old[4], np.float32)
                first, last = min(first, old[1]), max(last, old[2])
                cur.execute(
                    "UPDATE tracks SET first_time = ?, last_time = ?, n_crops = n_crops + ?, feature_sum = ? "
                    "WHERE id = ?",
                    (first, last, len(rows), s.astype(np.float32).tobytes(), row_id),
                )
            out.append((row_id, normalize(s[None])[0].astype(np.float32), cam, first, last, sid))
        return out

    # -- reading ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def _records(self, ids: Sequence[int]) -> dict[int, Record]:
        out: dict[int, Record] = {}
        uniq = list(dict.fromkeys(ids))
        for chunk in _chunks(uniq):
            for row in self.db.execute(f"{RECORD_SQL} WHERE d.id IN ({','.join('?' * len(chunk))})", chunk):
                out[row[0]] = Record.from_row(row)
        return out

    def records(self, source: SourceRef | None = None, track_id: int | None = None) -> list[Record]:
        """Stored records, optionally of one source (and one of its tracks), in id order."""
        sql, args = RECORD_SQL, []
        with self._lock:
            if source is not None:
                sid = self._source_id(source)
                if sid is None:
                    return []
                sql += " WHERE d.source_id = ?"
                args.append(sid)
                if track_id is not None:
                    sql += " AND d.track_id = ?"
                    args.append(int(track_id))
            return [Record.from_row(r) for r in self.db.execute(sql + " ORDER BY d.id", args)]

    def features(self, ids: Iterable[int]) -> np.ndarray:
        """The stored (L2-normalised) features of ``ids``, in order (KeyError for unknown ids)."""
        with self._lock:
            return self._read_features(list(ids))

    def cameras(self) -> list[str]:
        """The cameras that have detections, sorted."""
        with self._lock:
            return [r[0] for r in self.db.execute("SELECT DISTINCT camera FROM detections ORDER BY camera")]

    def _has_photos(self) -> bool:
        q = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'photos'"
        return self.db.execute(q).fetchone() is not None

    def photo_path(self, source: SourceRef, frame: int | None) -> Path | None:
        """The picture a photo-folder sighting was detected in (by its source and frame), else None."""
        rec = self.source_status(source)
        return None if rec is None else lookup_photo(self.root, rec.uri, frame)

    def time_bases(self) -> dict[int, str]:
        """Where each photo source's times came from, by source id: ``"exif"``, ``"sidecar"``,
        ``"pattern"`` or ``"mtime"``, or a mix such as ``"exif 12, mtime 1"``. Sources that are not
        photo folders are absent (their times are the video's start time + frame / fps)."""
        with self._lock:
            if not self._has_photos():
                return {}
            rows = self.db.execute(
                "SELECT source_id, time_from, COUNT(*) FROM photos GROUP BY source_id, time_from "
                "ORDER BY source_id, COUNT(*) DESC, time_from"
            ).fetchall()
        out: dict[int, list[tuple[str, int]]] = {}
        for sid, kind, n in rows:
            out.setdefault(int(sid), []).append((str(kind), int(n)))
        return {sid: kinds[0][0] if len(kinds) == 1 else ", ".join(f"{k} {n}" for k, n in kinds)
                for sid, kinds in out.items()}  # fmt: skip

    def tracks(self, source: SourceRef | None = None) -> list[Track]:
        """Stored tracks (optionally of one source), in id order."""
        with self._lock:
            if source is None:
                return [Track.from_row(r) for r in self.db.execute(f"{TRACK_SQL} ORDER BY t.id")]
            sid = self._source_id(source)
            rows = self.db.execute(f"{TRACK_SQL} WHERE t.source_id = ? ORDER BY t.id", (sid,))
            return [Track.from_row(r) for r in rows]

    def track_features(self, ids: Iterable[int]) -> np.ndarray:
        """Track features (the L2-normalised mean of each track's crop features), in order."""
        with self._lock:
            return normalize(self._read_features(list(ids), "tracks", "feature_sum"))

    # -- search -----------------------------------------------------------------------------------
    def _columns(self) -> _Columns:
        if self._cols is None:
            cols = _Columns()
            rows = self.db.execute("SELECT id, camera, timestamp, source_id FROM detections").fetchall()
            if rows:
                ids, cams, ts, src = zip(*rows, strict=True)
                cols.put(np.array(ids, np.int64), cams, np.array(ts, np.float64), np.array(src, np.int64))
            self._cols = cols
        return self._cols

    def _knn(
        self, q: np.ndarray, k: int, cameras: str | Iterable[str] | None, time_range: tuple[Any, Any] | None,
        exclude_source: SourceRef | Iterable[SourceRef] | None,
    ) -> list[list[Hit]]:  # fmt: skip
        """:meth:`search`: filtered searches restrict FAISS with an id selector (widening efSearch / nprobe
        by the filter's selectivity); very selective filters are answered exactly from stored features."""
        if self._n == 0 or k <= 0 or self._index is None:
            return [[] for _ in range(len(q))]
        cams, t0, t1, excl = self._filters(cameras, time_range, exclude_source)
        filtered = cams is not None or t0 > -math.inf or t1 < math.inf or excl
        if not filtered and self._index.ntotal == self._n:
            scores, ids = self._index.search(q, min(k, self._n))
        else:
            scores, ids = self._filtered_knn(q, k, self._columns().mask(cams, t0, t1, excl))
        recs = self._records(ids[ids >= 0].tolist())
        return [
            [Hit(**vars(recs[i]), score=float(s)) for s, i in zip(srow, irow, strict=True) if i in recs]
            for srow, irow in zip(scores, ids.tolist(), strict=True)
        ]

    def _filtered_knn(self, q: np.ndarray, k: int, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = self._index
        assert idx is not None
        n_allowed = int(mask.sum())
        kk = min(k, n_allowed)
        if kk == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if idx.structure != "flat" and n_allowed <= EXACT_SUBSET:
            return self._exact_subset(q, kk, np.flatnonzero(mask))
        sel, _bits = bitmap_selector(mask)
        frac = n_allowed / max(idx.ntotal, 1)
        ef = min(idx.ntotal, math.ceil(max(self.config.ef_search, kk) / frac))
        nprobe = math.ceil(self.config.nprobe / frac)
        scores, ids = idx.search(q, kk, selector=sel, ef_search=ef, nprobe=nprobe)
        short = np.flatnonzero((ids < 0).any(axis=1))
        if len(short) and n_allowed <= 16 * EXACT_SUBSET:  # approximate search came back short: go exact
            scores[short], ids[short] = self._exact_subset(q[short], kk, np.flatnonzero(mask))
        return scores, ids

    def _exact_subset(self, q: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self._index is not None
        x = self._index.reconstruct(ids)
        if x is None:
            x = self._read_features(ids)
        scores, cols = faiss.knn(q, x, k, metric=faiss.METRIC_INNER_PRODUCT)  # FAISS threads, not BLAS's
        return scores, ids[cols]

    def _track_cache(self) -> _TrackCache:
        if self._tracks is None:
            assert self.dim is not None
            cache = _TrackCache(self.dim)
            rows = self.db.execute(
                "SELECT id, feature_sum, camera, first_time, last_time, source_id FROM tracks ORDER BY id"
            )
            for tid, blob, cam, first, last, sid in rows:
                cache.put(tid, normalize(np.frombuffer(blob, np.float32)[None])[0], cam, first, last, sid)
            self._tracks = cache
        return self._tracks

    def search_tracks(self, queries: Any, k: int = 100, **filters: Any) -> list[list[TrackHit]]:
        """Like :meth:`search` (same ``filters``), over tracks (exact; a track matches ``time_range`` if it
        overlaps it)."""
        with self._lock:
            q = self._prep(queries, "queries")
            if self.dim is None or k <= 0:
                return [[] for _ in range(len(q))]
            tc = self._track_cache()
            if tc.n == 0:
                return [[] for _ in range(len(q))]
            cams, t0, t1, excl = self._filters(**filters)
            ok = (tc.last[: tc.n] >= t0) & (tc.first[: tc.n] <= t1) & ~np.isin(tc.src[: tc.n], list(excl))
            if cams is not None:
                ok &= np.array([c in cams for c in tc.cam], bool)
            cand = np.flatnonzero(ok)
            if len(cand) == 0:
                return [[] for _ in range(len(q))]
            scores, cols = _topk(q @ tc.mat[cand].T, k)
            tids = tc.ids[cand[cols]]
            found: dict[int, Track] = {}
            for chunk in _chunks(list(dict.fromkeys(tids.ravel().tolist()))):
                for row in self.db.execute(f"{TRACK_SQL} WHERE t.id IN ({','.join('?' * len(chunk))})", chunk):
                    found[row[0]] = Track.from_row(row)
        return [
            [TrackHit(**vars(found[t]), score=float(s)) for s, t in zip(srow, trow, strict=True) if t in found]
            for srow, trow in zip(scores, tids.tolist(), strict=True)
        ]

    # -- index management ---------------------------------------------------------------------------
    @property
    def index_structure(self) -> str | None:
        """The FAISS structure in use: flat / hnsw / ivf (an IVF gallery is flat until trained)."""
        return None if self._index is None else self._index.structure

    def _config_changed(self) -> None:
        if self._index is not None:
            self._index.config = self.config

    def reindex(self, index: str | IndexConfig, **options: Any) -> None:
        """Rebuild the index as another kind or with other build options (e.g. ``hnsw_m``, ``nlist``)."""
        self._writable()
        cfg = index if isinstance(index, IndexConfig) else IndexConfig(kind=index, **options)
        with self._lock:
            with self._tx() as cur:
                cur.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('index', ?)", (json.dumps(cfg.to_dict()),))
            self.config = cfg
            if self.dim is not None:
                self._rebuild()
                self.save()

    def save(self) -> None:
        """Write the index snapshot (atomically) if it changed since the last one."""
        self._writable()
        with self._lock:
            if self._index is not None and self._unsaved:
                self._index.write(self.root / INDEX_NAME)
            self._unsaved = 0

    def close(self) -> None:
        """Save (unless read-only) and release the database and the writer lock."""
        with self._lock:
            if self._conn is None:
                return
            try:
                if not self.read_only:
                    self.save()
            finally:
                self._release()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else f"{self._n} detections, {self.index_structure} index"
        return f"Gallery({str(self.root)!r}, {state})"

    # --- read side for the application API (reidkit.search.api: the service's and the CLI's reads) ----------
    def track(self, track: int) -> Track | None:
        """The track with row id ``track`` (as listed by :meth:`tracks`), None if there is none."""
        with self._lock:
            row = self.db.execute(f"{TRACK_SQL} WHERE t.id = ?", (int(track),)).fetchone()
        return None if row is None else Track.from_row(row)

    def tracks_by_key(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], Track]:
        """The stored tracks of ``(source_id, tracker id)`` pairs, by pair; pairs without one are absent."""
        sql = f"{TRACK_SQL} WHERE t.source_id = ? AND t.track_id = ?"  # the UNIQUE(source_id, track_id) index
        out: dict[tuple[int, int], Track] = {}
        with self._lock:
            for key in dict.fromkeys((int(s), int(t)) for s, t in keys):
                row = self.db.execute(sql, key).fetchone()
                if row is not None:
                    out[key] = Track.from_row(row)
        return out

    def ids(self) -> np.ndarray:
        """Every stored detection id, ascending (int64)."""
        with self._lock:
            return np.fromiter((r[0] for r in self.db.execute("SELECT id FROM detections ORDER BY id")), np.int64)

    def pictures(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], str]:
        """The file names (within their photo folder) of the pictures of ``(source_id, frame)`` pairs, by
        pair; pairs that are not a photo folder's (videos, folders of crops) are absent."""
        wanted: dict[int, set[int]] = {}
        for sid, frame in keys:
            wanted.setdefault(int(sid), set()).add(int(frame))
        out: dict[tuple[int, int], str] = {}
        with self._lock:
            if not wanted or not self._has_photos():
                return out
            for sid, frames in wanted.items():
                for chunk in _chunks(sorted(frames)):
                    marks = ",".join("?" * len(chunk))
                    sql = f"SELECT frame, name FROM photos WHERE source_id = ? AND frame IN ({marks})"
                    out.update(((sid, int(f)), str(name)) for f, name in self.db.execute(sql, (sid, *chunk)))
        return out

    def overview(self, recent: int = 24) -> GalleryOverview:
        """Counts per camera and per source, and the ``recent`` detections added last (newest first)."""
        with self._lock:
            db = self.db
            cams = db.execute(
                "SELECT camera, COUNT(*), MIN(timestamp), MAX(timestamp) FROM detections "
                "GROUP BY camera ORDER BY camera"
            ).fetchall()
            cam_tracks = dict(db.execute("SELECT camera, COUNT(*) FROM tracks GROUP BY camera").fetchall())
            src_n = dict(db.execute("SELECT source_id, COUNT(*) FROM detections GROUP BY source_id").fetchall())
            src_t = dict(db.execute("SELECT source_id, COUNT(*) FROM tracks GROUP BY source_id").fetchall())
            sources = [Source(*r) for r in db.execute(f"{SOURCE_SQL} ORDER BY id")]
            rows = db.execute(f"{RECORD_SQL} ORDER BY d.id DESC LIMIT ?", (max(0, int(recent)),)).fetchall()
            searchable = self._n
        return GalleryOverview(
            cameras=[CameraCount(c, int(n), int(cam_tracks.get(c, 0)), t0, t1) for c, n, t0, t1 in cams],
            sources=[SourceCount(s, int(src_n.get(s.id, 0)), int(src_t.get(s.id, 0))) for s in sources],
            tracks=sum(int(n) for n in cam_tracks.values()),
            searchable=searchable,
            recent=[Record.from_row(r) for r in rows],
        )
