"""The gallery on Milvus: one gallery shared by many processes on many machines (issue 21).

:class:`MilvusGallery` implements :class:`~reidkit.search.storage.base.GalleryBackend` with
``pymilvus.MilvusClient``, against a Milvus server (standalone or distributed: ``milvus://HOST:PORT/NAME``)
or a Milvus Lite folder (``milvus-lite:///path/gallery.db``: one process, for trials and tests). Open it
with :func:`reidkit.search.storage.open_gallery`. It needs the ``cluster`` extra (``pip install
reidkit[cluster]``); nothing else in reidkit imports pymilvus.

What is stored where (collection names start with the gallery's ``NAME``):

* ``NAME_sightings``: one row per sighting: ``id`` (primary key), ``vec`` (the L2-normalised feature) and,
  as scalar fields, ``source_id``, ``camera``, ``timestamp``, ``frame``, ``track_id``, ``box``, ``crop``
  (the crop file's path relative to the media folder), ``quality`` and ``txn`` (the ``add`` that wrote it).
  Camera, time range and excluded sources become a Milvus filter expression evaluated inside the vector
  search (``camera in [...] and timestamp >= t0 and source_id not in [...]``): nothing is post-filtered.
* ``NAME_tracks``: one row per (source, tracker id): ``vec`` (the normalised mean of its crops' features,
  searched exactly), the float32 feature sum (``fsum``, base64, so a resumed ingest adds to it bit for bit
  as the folder gallery does), camera, first/last time, number of crops.
* ``NAME_meta``: small rows keyed by ``key``: the gallery itself (format, version, ``dim``, ``model``,
  index options), sources (uri, camera, fps, fingerprint, status, progress, the ``pending`` add), per
  (source, camera) counts for the overview, the photo ledger, tracking snapshots (base64 chunks), source
  events, id-slot claims. (Milvus wants a vector field in every collection: this one carries a 2-d zero
  vector.)

Ids stay small (< 2**53, so a browser's JSON keeps them exact) and are never reused: a writer claims a slot
``W`` (slot ``W`` gives sighting and track ids ``W * 2**24 + 1 ...`` and source ids ``W * 2**10 + 1 ...``)
by inserting a claim row ``(W, token)`` and reading slot ``W`` back with Strong consistency: it owns the slot
if its claim is the only one there, else it tries another. Two claimants cannot both see only their own
claim (the later read sees the earlier insert), so no slot has two owners.

Consistency: reads are ``Session`` (a process sees its own inserts at once; others' within Milvus's time
tick, 200 ms by default). Milvus's session does not cover deletes, so after deleting the gallery makes one
Strong read of each collection it deleted from (``count`` needs it right after a delete) before going on.

Crash safety (Milvus has no transaction across rows): ``add`` first marks the sources it writes with the
add's ``txn``, then inserts sightings, tracks, ledger rows and snapshot, then clears the mark with the new
progress. A source left marked (a writer died mid-add) is repaired when it is registered again: the rows
of that add are deleted and the source's tracks and counts recomputed from its sightings, so a resumed
ingest never duplicates a sighting. One process ingests a given source at a time (as with the folder
gallery); any number ingest different sources of one gallery at once.

Media (crops) are files under a folder every node reaches (NFS, CephFS, SMB, or an object store mounted
as a file system): ``?media=/shared/reidkit`` in the URI, else ``$REIDKIT_MEDIA``, else the folder
recorded when the gallery was made; the gallery's crops go to ``<media>/<NAME>/crops/<source id>/``
(:attr:`root` is ``<media>/<NAME>``) and sightings keep paths relative to it, exactly as in a folder
gallery. A shared path rather than S3: every reader of crops and frames (the service, HTML reports,
cluster sheets) and ingest's atomic writes work on paths today, so nothing changes above storage and
reidkit holds no object-store credentials; an S3 bucket is still usable through a FUSE mount
(mountpoint-s3, s3fs) where that is what a site has. Without a media folder, writing a crop is refused
with a GalleryError (a node-local folder would hide crops from the other nodes).

Index: ``flat`` (exact, the default: the same top-k as the FAISS flat gallery), ``hnsw`` (``M``,
``efConstruction``; ``ef`` at search = max(ef_search, k)) or ``ivf`` (IVF_FLAT, ``nlist``; ``nprobe``),
all inner product on normalised vectors. A Milvus server builds HNSW/IVF indexes on sealed segments in the
background; until it has, those rows are searched by an interim index (lower recall): call
:meth:`MilvusGallery.wait_indexed` after a bulk load. Tracks are always searched exactly (FLAT).

gRPC channels do not survive ``fork``: the client is made lazily in the process that uses it (a gallery
object carried over a fork makes a new one). Milvus Lite allows one process per folder; a second one gets
a GalleryError saying so.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from reidkit.search.storage import records as rec
from reidkit.search.storage.common import CROPS, GalleryCommon, normalize, open_config
from reidkit.search.storage.index import IndexConfig
from reidkit.search.storage.records import GalleryError, Source, redact_uri

log = logging.getLogger(__name__)

FORMAT = "reidkit-gallery-milvus"
VERSION = 1
NONE_INT = -(2**63)  # frame / track_id of a sighting that has none (Milvus 2.3 has no NULL)
SLOT_BITS, SOURCE_BITS = 24, 10  # a slot's sighting/track ids and source ids
MAX_K = 16384  # Milvus's topk and query window limit
MAX_EF = 32768  # Milvus's largest HNSW ef
_CHUNK = 8192  # ids per "id in [...]" expression
_PLAIN = 50_000  # rows a scan reads in one query (more: a query iterator)
_BLOB = 60_000  # base64 characters per snapshot row (VARCHAR holds 65,535 bytes)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,200}")
_ZERO2 = [0.0, 0.0]

SourceRef = str | int


def _lit(value: Any) -> str:
    """A Milvus expression literal: strings JSON-quoted (Milvus reads JSON escapes), numbers as they are."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(float(value))
    return str(int(value))


def _in(field: str, values: Iterable[Any]) -> str:
    return f"{field} in [{', '.join(_lit(v) for v in values)}]"


def _chunks(seq: Sequence[Any], n: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _b64(x: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(x, np.float32).tobytes()).decode("ascii")


def _unb64(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), np.float32).copy()


def _opt_int(v: Any) -> int | None:
    return None if v is None or int(v) == NONE_INT else int(v)


def _opt_float(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


_RECORD_FIELDS = ["id", "source_id", "camera", "timestamp", "frame", "track_id", "box", "crop", "quality"]
_TRACK_FIELDS = ["id", "source_id", "track_id", "camera", "first_time", "last_time", "n_crops"]
_SOURCE_KINDS = ["source", "stat", "photo", "snap", "event"]  # meta rows of a source (removed with it)
_LITE_USERS: dict[str, int] = {}  # Milvus Lite folder -> open galleries in this process
_LITE_LOCK = threading.Lock()


class _MvccWarning(logging.Filter):
    """pymilvus warns on every query iterator against a 2.3 server that it falls back to a client timestamp."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "mvccTs" not in record.getMessage()


class _Slots:
    """Id allocation from claimed slots (see the module docstring)."""

    def __init__(self, gallery: MilvusGallery) -> None:
        self.g = gallery
        self.slot: int | None = None
        self.next = {"sighting": 0, "track": 0, "source": 0}

    def _claim(self) -> int:
        g, coll = self.g, self.g.coll("meta")
        token = uuid.uuid4().hex
        extra = 0
        for _ in range(50):
            rows = g.query(coll, 'kind == "claim"', ["sid"], strong=True)
            block = max((int(r["sid"]) for r in rows), default=-1) + 1 + extra
            key = f"claim:{block}:{token}"
            g._put_meta([{"key": key, "kind": "claim", "sid": block, "num": time.time(), "name": "", "body": ""}])
            owners = {r["key"] for r in g.query(coll, f'kind == "claim" and sid == {block}', ["key"], strong=True)}
            if owners == {key}:
                return block
            extra = secrets.randbelow(4) + 1  # contended: both may retreat; jitter apart
        raise GalleryError(f"gallery {g.where}: could not claim an id slot (50 tries)")

    def take(self, kind: str, n: int) -> np.ndarray:
        """``n`` new ids of ``kind`` (sighting / track / source), ascending."""
        bits = SOURCE_BITS if kind == "source" else SLOT_BITS
        out: list[np.ndarray] = []
        while n > 0:
            if self.slot is None or self.next[kind] >= (1 << bits):
                if self.slot is not None and self.next[kind] >= (1 << bits):
                    self.slot = None
                if self.slot is None:
                    self.slot = self._claim()
                    self.next = dict.fromkeys(self.next, 0)
            start = self.next[kind]
            m = min(n, (1 << bits) - start)
            base = (self.slot << bits) + 1
            out.append(np.arange(base + start, base + start + m, dtype=np.int64))
            self.next[kind] += m
            n -= m
        return np.concatenate(out) if out else np.zeros(0, np.int64)


class _TrackState:
    __slots__ = ("camera", "first", "id", "last", "n", "sum")

    def __init__(self, id: int, camera: str, first: float, last: float, n: int, sum: np.ndarray) -> None:
        self.id, self.camera, self.first, self.last, self.n, self.sum = id, camera, first, last, n, sum


class MilvusGallery(GalleryCommon):
    """A gallery in Milvus collections (see the module docstring); open with :func:`open_gallery`.

    ``uri``: a Milvus server (``http://HOST:PORT``) or a Milvus Lite folder (a path ending ``.db``);
    ``name``: the gallery (collection prefix); ``media``: the shared folder for crops (see the module
    docstring); ``index``: ``flat`` / ``hnsw`` / ``ivf`` or an :class:`IndexConfig` (for a new gallery;
    an existing one must match, as in the folder gallery); ``model``: the embedding model's name, kept with
    the gallery and checked like ``dim``; ``consistency``: Milvus consistency level of reads.
    """

    def __init__(
        self,
        uri: str,
        name: str = "gallery",
        *,
        create: bool = True,
        read_only: bool = False,
        dim: int | None = None,
        index: str | IndexConfig | None = None,
        model: str | None = None,
        media: str | os.PathLike[str] | None = None,
        token: str | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
        consistency: str = "Session",
        where: str | None = None,
    ) -> None:
        if not _NAME.fullmatch(name):
            raise GalleryError(f"gallery name {name!r} must be letters, digits and _ (not starting with a digit)")
        if isinstance(index, str):
            IndexConfig(kind=index)  # validate before anything is created
        if dim is not None and int(dim) < 1:
            raise GalleryError(f"dim must be positive, got {dim}")
        self.uri = str(uri)
        self.name = name
        self.read_only = read_only
        self.consistency = consistency
        self.lite = self.uri.endswith(".db") and "://" not in self.uri
        self.where = where or (f"milvus-lite://{Path(self.uri).absolute()}?name={name}" if self.lite
                               else f"{redact_uri(self.uri)}/{name}")  # fmt: skip
        self.repairs: dict[str, int] = {}
        self._token = token
        self._lock = threading.RLock()
        self._client: Any = None
        self._pid = os.getpid()
        self._closed = False
        self._slots = _Slots(self)
        self._src: dict[int, Source] = {}  # sources by id, as last read or written by this object
        self._tracks: dict[int, dict[int, _TrackState]] = {}  # writer's cache: source -> tracker id -> state
        self._stats: dict[int, dict[str, dict[str, Any]]] = {}  # writer's cache: source -> camera -> counts
        self.dim: int | None = None
        self.model: str | None = None
        self._lite_path: str | None = None
        if self.lite:
            self._lite_open()
        try:
            self._open(create and not read_only, dim, index, model, media, ef_search, nprobe)
        except BaseException:
            self._release()
            raise

    # -- connection ---------------------------------------------------------------------------------
    def _lite_open(self) -> None:
        path = str(Path(self.uri).absolute())
        if Path(path).is_file():
            raise GalleryError(f"{path} is a file: a Milvus Lite gallery is a folder ending .db")
        with _LITE_LOCK:
            _LITE_USERS[path] = _LITE_USERS.get(path, 0) + 1
        self._lite_path = path
        self.uri = path

    @property
    def client(self) -> Any:
        """The ``MilvusClient`` of this process (made on first use, and again after a fork)."""
        if self._closed:
            raise GalleryError(f"gallery {self.where} is closed")
        if self._client is None or self._pid != os.getpid():
            from pymilvus import MilvusClient
            from pymilvus.exceptions import MilvusException

            logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(_MvccWarning())
            try:
                self._client = MilvusClient(uri=self.uri, token=self._token or "")
            except MilvusException as exc:
                if self.lite:
                    raise GalleryError(
                        f"Milvus Lite folder {self.uri} cannot be opened ({exc.message}); Milvus Lite allows one "
                        "process per folder: is another process using it? Use a Milvus server to share a gallery"
                    ) from None
                raise GalleryError(f"cannot reach Milvus at {self.where}: {exc.message}") from None
            self._pid = os.getpid()
        return self._client

    def coll(self, kind: str) -> str:
        return f"{self.name}_{kind}"

    def query(
        self, coll: str, expr: str, fields: list[str], *, strong: bool = False, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Rows of ``coll`` matching ``expr`` (all of them: use :meth:`scan` where there may be very many)."""
        kw: dict[str, Any] = {"consistency_level": "Strong" if strong else self.consistency}
        if limit is not None:
            kw["limit"] = limit
        return list(self.client.query(coll, filter=expr, output_fields=fields, **kw))

    def scan(self, coll: str, expr: str, fields: list[str], batch: int = 8192) -> Iterator[list[dict[str, Any]]]:
        """``expr``'s rows of ``coll`` in batches: up to ``_PLAIN`` rows in one query, more through a query
        iterator (no result-window limit; slower to start). Milvus Lite has no limit, nor the timestamp
        service the iterator wants: always one query."""
        if self.lite or self._count(coll, expr) <= _PLAIN:
            yield self.query(coll, expr, fields)
            return
        it = self.client.query_iterator(
            coll, batch_size=batch, filter=expr, output_fields=fields, consistency_level=self.consistency
        )
        try:
            while rows := it.next():
                yield list(rows)
        finally:
            it.close()

    def _count(self, coll: str, expr: str = "", strong: bool = False) -> int:
        rows = self.query(coll, expr, ["count(*)"], strong=strong)
        return int(rows[0]["count(*)"]) if rows else 0

    def _barrier(self, *colls: str) -> None:
        """Make deletes visible to this process's next reads (see the module docstring)."""
        for c in colls:
            self._count(c, strong=True)

    # -- opening ------------------------------------------------------------------------------------
    def _meta_schema(self) -> Any:
        from pymilvus import DataType, MilvusClient

        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("key", DataType.VARCHAR, is_primary=True, max_length=512)
        s.add_field("kind", DataType.VARCHAR, max_length=16)
        s.add_field("sid", DataType.INT64)
        s.add_field("num", DataType.DOUBLE)
        s.add_field("name", DataType.VARCHAR, max_length=8192)
        s.add_field("body", DataType.VARCHAR, max_length=65535)
        s.add_field("v", DataType.FLOAT_VECTOR, dim=2)
        return s

    def _vector_schema(self, kind: str, dim: int) -> Any:
        from pymilvus import DataType, MilvusClient

        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("id", DataType.INT64, is_primary=True)
        s.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
        s.add_field("source_id", DataType.INT64)
        s.add_field("camera", DataType.VARCHAR, max_length=1024)
        if kind == "sightings":
            s.add_field("timestamp", DataType.DOUBLE)
            s.add_field("frame", DataType.INT64)
            s.add_field("track_id", DataType.INT64)
            s.add_field("box", DataType.VARCHAR, max_length=96)
            s.add_field("crop", DataType.VARCHAR, max_length=4096)
            s.add_field("quality", DataType.DOUBLE)
            s.add_field("txn", DataType.INT64)
        else:
            s.add_field("track_id", DataType.INT64)
            s.add_field("first_time", DataType.DOUBLE)
            s.add_field("last_time", DataType.DOUBLE)
            s.add_field("n_crops", DataType.INT64)
            s.add_field("fsum", DataType.VARCHAR, max_length=65535)
            s.add_field("txn", DataType.INT64)
        return s

    def _index_params(self, field: str, config: IndexConfig | None) -> Any:
        ip = self.client.prepare_index_params()
        if config is None:
            ip.add_index(field, index_type="FLAT", metric_type="L2")
        elif config.kind == "hnsw":
            ip.add_index(field, index_type="HNSW", metric_type="IP",
                         params={"M": config.hnsw_m, "efConstruction": config.ef_construction})  # fmt: skip
        elif config.kind == "ivf":
            if config.codec not in ("flat", "sq8"):
                raise GalleryError(f"{self.where}: Milvus has IVF_FLAT and IVF_SQ8, not ivf-{config.codec}")
            kind = "IVF_FLAT" if config.codec == "flat" else "IVF_SQ8"
            ip.add_index(field, index_type=kind, metric_type="IP", params={"nlist": config.nlist})
        else:
            ip.add_index(field, index_type="FLAT", metric_type="IP")
        return ip

    def _create(self, specs: dict[str, tuple[Any, Any]]) -> None:
        """Create collections (name -> (schema, index params)) that do not exist yet, indexed and loaded (the
        loads run at once: a load takes the server seconds)."""
        from pymilvus.exceptions import MilvusException

        made, theirs = [], []
        for coll, (schema, index_params) in specs.items():
            if self.client.has_collection(coll):
                theirs.append(coll)
                continue
            try:
                self.client.create_collection(coll, schema=schema, consistency_level="Session")
                self.client.create_index(coll, index_params)
            except MilvusException:
                if not self.client.has_collection(coll):
                    raise
                theirs.append(coll)  # another process made it just now
                continue
            made.append(coll)
        for coll in made:
            self.client.load_collection(coll, _async=True)
        self._wait_loaded(made)
        for coll in theirs:  # made by another process, which may not have loaded it yet
            self._ensure_loaded(coll)

    def _wait_loaded(self, colls: list[str], timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        for coll in colls:
            while "Loaded" not in str(self.client.get_load_state(coll).get("state", "")):
                if time.monotonic() > deadline:
                    raise GalleryError(f"{self.where}: collection {coll} did not load in {timeout:.0f} s")
                time.sleep(0.05)

    def _open(
        self,
        create: bool,
        dim: int | None,
        index: str | IndexConfig | None,
        model: str | None,
        media: str | os.PathLike[str] | None,
        ef_search: int | None,
        nprobe: int | None,
    ) -> None:
        meta = self.coll("meta")
        config = index if isinstance(index, IndexConfig) else IndexConfig(kind=index or "flat")
        new = {"format": FORMAT, "version": VERSION, "dim": dim, "model": model, "index": config.to_dict(),
               "media": None if media is None else str(media), "created": time.time()}  # fmt: skip
        if not self.client.has_collection(meta):
            if not create:
                raise GalleryError(
                    f"{self.where} is not a reidkit gallery (no collection {meta}); open it with create=True "
                    "to make one"
                )
            self.config = config
            specs = {meta: (self._meta_schema(), self._index_params("v", None))}
            if dim is not None:  # all at once: their loads overlap
                specs.update(self._vector_specs(int(dim)))
            self._create(specs)
            if not self.query(meta, 'key == "gallery"', ["body"], strong=True):
                self._put_info(new)
        self._ensure_loaded(meta)
        rows = self._gallery_row(wait=30.0 if create else 0.0)
        if not rows and create:  # its maker died between the collection and the row: finish the job
            self.config = config
            self._put_info(new)
            rows = self._gallery_row(wait=0.0)
        if not rows:
            raise GalleryError(f"{self.where} is not a reidkit gallery (no gallery row in {meta})")
        info = json.loads(rows[0]["body"])
        if info.get("format") != FORMAT:
            raise GalleryError(f"{self.where} is not a reidkit gallery (format {info.get('format')!r})")
        if int(info.get("version", 0)) > VERSION:
            raise GalleryError(f"{self.where} was written by a newer reidkit (gallery version {info['version']})")
        self.dim = None if info.get("dim") is None else int(info["dim"])
        self.model = info.get("model")
        if dim is not None and self.dim is not None and int(dim) != self.dim:
            raise GalleryError(f"{self.where} holds dim={self.dim} features; dim={dim} was asked for")
        if model is not None and self.model is not None and model != self.model:
            raise GalleryError(
                f"{self.where} holds features of model {self.model!r}; model {model!r} was asked for "
                "(features of different models cannot be compared: use another gallery)"
            )
        self.config = open_config(self.where, IndexConfig.from_dict(info["index"]), index, ef_search, nprobe)
        base = media or os.environ.get("REIDKIT_MEDIA") or info.get("media")
        if base is None and self.lite:
            base = Path(self.uri).with_suffix(".media")
        self.media = None if base is None else Path(base)
        self.root = self.media / self.name if self.media is not None else Path(self.name)
        if not self.read_only:
            changed = False
            if model is not None and self.model is None:
                info["model"], self.model, changed = model, model, True
            if media is not None and info.get("media") is None:
                info["media"], changed = str(media), True
            if changed:
                self._put_info(info)
            if dim is not None and self.dim is None:
                self._set_dim(int(dim))
        if self.dim is not None:
            for c in ("sightings", "tracks"):
                self._ensure_loaded(self.coll(c))

    def _ensure_loaded(self, coll: str) -> None:
        if not self.client.has_collection(coll):
            raise GalleryError(f"{self.where}: collection {coll} is missing (a damaged gallery)")
        from pymilvus.exceptions import MilvusException

        deadline = time.monotonic() + 60
        while "Loaded" not in (state := str(self.client.get_load_state(coll).get("state", ""))):
            try:
                if "Loading" not in state:
                    self.client.load_collection(coll, _async=True)
                self._wait_loaded([coll])
            except MilvusException:  # another process is making it (no index yet): wait for it
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _vector_specs(self, dim: int) -> dict[str, tuple[Any, Any]]:
        flat = IndexConfig()
        return {self.coll("sightings"): (self._vector_schema("sightings", dim), self._index_params("vec", self.config)),
                self.coll("tracks"): (self._vector_schema("tracks", dim), self._index_params("vec", flat))}  # fmt: skip

    def _set_dim(self, dim: int) -> None:
        meta = self.coll("meta")
        self._create(self._vector_specs(dim))
        info = json.loads(self.query(meta, 'key == "gallery"', ["body"], strong=True)[0]["body"])
        if info.get("dim") is not None and int(info["dim"]) != dim:  # another process set it meanwhile
            raise GalleryError(f"{self.where} holds dim={info['dim']} features; dim={dim} was asked for")
        info["dim"] = dim
        self._put_info(info)
        self.dim = dim

    def _writable(self) -> None:
        if self.read_only:
            raise GalleryError(f"gallery {self.where} is open read-only")
        if self._closed:
            raise GalleryError(f"gallery {self.where} is closed")

    def _gallery_row(self, wait: float) -> list[dict[str, Any]]:
        """The gallery's own meta row, waiting up to ``wait`` seconds for it: another process making the
        gallery at the same moment has made the collection but may not have written the row yet."""
        deadline = time.monotonic() + wait
        while not (rows := self.query(self.coll("meta"), 'key == "gallery"', ["body"], strong=True)):
            if time.monotonic() >= deadline:
                return []
            time.sleep(0.2)
        return rows

    def _put_info(self, info: dict[str, Any]) -> None:
        row = {"key": "gallery", "kind": "gallery", "sid": 0, "num": 0.0, "name": "", "body": json.dumps(info)}
        self._put_meta([row])

    def _put_meta(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.client.upsert(self.coll("meta"), [dict(r, v=_ZERO2) for r in rows])

    # -- sources ------------------------------------------------------------------------------------
    @staticmethod
    def _source_row(s: Source, pending: int | None = None) -> dict[str, Any]:
        body = {"camera": s.camera, "fps": s.fps, "fingerprint": s.fingerprint, "status": s.status,
                "progress": s.progress, "created": s.created, "updated": s.updated, "pending": pending}  # fmt: skip
        return {"key": f"source:{s.id}", "kind": "source", "sid": s.id, "num": 0.0, "name": s.uri,
                "body": json.dumps(body)}  # fmt: skip

    def _read_sources(self, expr: str) -> list[tuple[Source, int | None]]:
        out = []
        for r in self.query(self.coll("meta"), f'kind == "source" and ({expr})', ["sid", "name", "body"]):
            b = json.loads(r["body"])
            s = Source(int(r["sid"]), r["name"], b["camera"], b["fps"], b["fingerprint"], b["status"],
                       b["progress"], b["created"], b["updated"])  # fmt: skip
            self._src[s.id] = s
            out.append((s, b.get("pending")))
        return sorted(out, key=lambda t: t[0].id)

    def _lookup(self, source: SourceRef) -> tuple[Source, int | None] | None:
        expr = f"sid == {int(source)}" if isinstance(source, int | np.integer) else f"name == {_lit(str(source))}"
        rows = self._read_sources(expr)
        return rows[0] if rows else None

    def source_status(self, source: SourceRef) -> Source | None:
        """The stored source (by uri or id), or None if unknown."""
        with self._lock:
            found = self._lookup(source)
        return None if found is None else found[0]

    def _source_id(self, source: SourceRef) -> int | None:
        if isinstance(source, int | np.integer):
            if int(source) in self._src:
                return int(source)
        else:
            for s in self._src.values():
                if s.uri == str(source):
                    return s.id
        found = self._lookup(source)
        return None if found is None else found[0].id

    def _uri(self, sid: int) -> str:
        s = self._src.get(sid)
        if s is None:
            found = self._lookup(sid)
            return "" if found is None else found[0].uri
        return s.uri

    def sources(self) -> list[Source]:
        with self._lock:
            return [s for s, _ in self._read_sources("sid >= 0")]

    def _write_source(self, s: Source, pending: int | None = None) -> Source:
        self._put_meta([self._source_row(s, pending)])
        self._src[s.id] = s
        return s

    def _existing(self, uri: str) -> Source | None:
        """The stored source of ``uri`` with an unfinished add undone (a write: the gallery must be writable)."""
        self._writable()
        found = self._lookup(uri)
        if found is None:
            return None
        old, pending = found
        return old if pending is None else self._repair(old, pending)

    def _keep_source(self, old: Source, fingerprint: str | None) -> Source:
        return old if fingerprint is None else self._write_source(replace(old, fingerprint=fingerprint))

    def _insert_source(self, uri: str, camera: str, fps: float | None, fingerprint: str | None) -> Source:
        now = time.time()
        sid = int(self._slots.take("source", 1)[0])
        return self._write_source(Source(sid, str(uri), str(camera), fps, fingerprint, "pending", None, now, now))

    def _set_status(self, source: SourceRef, status: str, progress: float | None, fingerprint: str | None) -> Source:
        found = self._lookup(source)
        if found is None:
            raise KeyError(f"no such source {source!r}")
        old, pending = found
        new = replace(old, status=status, progress=old.progress if progress is None else float(progress),
                      fingerprint=fingerprint or old.fingerprint, updated=time.time())  # fmt: skip
        self._put_meta([self._source_row(new, pending)])
        self._src[new.id] = new
        return new

    def remove_source(self, source: SourceRef) -> int:
        """Delete a source with its sightings, tracks, ledger, snapshots, events and crop files; returns the
        sightings removed."""
        self._writable()
        with self._lock:
            found = self._lookup(source)
            if found is None:
                raise KeyError(f"no such source {source!r}")
            sid = found[0].id
            n = 0
            if self.dim is not None:
                n = self._count(self.coll("sightings"), f"source_id == {sid}", strong=True)
                self.client.delete(self.coll("sightings"), filter=f"source_id == {sid}")
                self.client.delete(self.coll("tracks"), filter=f"source_id == {sid}")
            self.client.delete(self.coll("meta"), filter=f"sid == {sid} and {_in('kind', _SOURCE_KINDS)}")
            self._barrier(*(self.coll(c) for c in (("sightings", "tracks", "meta") if self.dim else ("meta",))))
            self._src.pop(sid, None)
            self._tracks.pop(sid, None)
            self._stats.pop(sid, None)
            shutil.rmtree(self.root / CROPS / str(sid), ignore_errors=True)
            return n

    # -- crash repair ---------------------------------------------------------------------------------
    def _repair(self, src: Source, txn: int) -> Source:
        """Undo the add ``txn`` that a writer left half done on ``src`` (see the module docstring)."""
        sid = src.id
        log.warning("gallery %s: source %s has an unfinished add (txn %d); removing its rows", self.where, src.uri, txn)
        n = 0
        if self.dim is not None:
            n = self._count(self.coll("sightings"), f"source_id == {sid} and txn == {txn}", strong=True)
            self.client.delete(self.coll("sightings"), filter=f"source_id == {sid} and txn == {txn}")
            self._barrier(self.coll("sightings"))
            self._rebuild_tracks(sid)
        ledger = self.query(self.coll("meta"), f'kind == "photo" and sid == {sid}', ["key", "body"], strong=True)
        gone = [r["key"] for r in ledger if json.loads(r["body"]).get("txn") == txn]
        if gone:
            self.client.delete(self.coll("meta"), ids=gone)
        self.repairs["unfinished_adds"] = self.repairs.get("unfinished_adds", 0) + 1
        self.repairs["rolled_back_rows"] = self.repairs.get("rolled_back_rows", 0) + n
        fixed = self._write_source(src, None)
        self._barrier(self.coll("meta"))
        return fixed

    def _rebuild_tracks(self, sid: int) -> None:
        """Recompute a source's tracks and counts from its sightings."""
        tracks: dict[int, _TrackState] = {}
        stats: dict[str, dict[str, Any]] = {}
        old_ids = {int(r["track_id"]): int(r["id"]) for r in
                   self.query(self.coll("tracks"), f"source_id == {sid}", ["id", "track_id"], strong=True)}  # fmt: skip
        fields = ["id", "vec", "camera", "timestamp", "track_id"]
        for rows in self.scan(self.coll("sightings"), f"source_id == {sid}", fields):
            rows.sort(key=lambda r: int(r["id"]))
            for r in rows:
                cam, ts = str(r["camera"]), float(r["timestamp"])
                st = stats.setdefault(cam, {"n": 0, "t0": ts, "t1": ts, "tracks": 0, "last": []})
                st["n"] += 1
                st["t0"], st["t1"] = min(st["t0"], ts), max(st["t1"], ts)
                st["last"] = sorted([*st["last"], int(r["id"])])[-64:]
                tid = _opt_int(r["track_id"])
                if tid is None:
                    continue
                vec = np.asarray(r["vec"], np.float32)
                t = tracks.get(tid)
                if t is None:
                    tracks[tid] = _TrackState(old_ids.get(tid, 0), cam, ts, ts, 1, vec.copy())
                    st["tracks"] += 1
                else:
                    t.first, t.last, t.n = min(t.first, ts), max(t.last, ts), t.n + 1
                    t.sum = (t.sum + vec).astype(np.float32)
        missing = [t for t in tracks.values() if t.id == 0]
        for t, i in zip(missing, self._slots.take("track", len(missing)), strict=True):
            t.id = int(i)
        dead = [i for tid, i in old_ids.items() if tid not in tracks]
        if dead:
            self.client.delete(self.coll("tracks"), ids=dead)
        self._upsert_tracks(sid, list(tracks.items()), 0)
        self.client.delete(self.coll("meta"), filter=f'kind == "stat" and sid == {sid}')
        self._barrier(self.coll("tracks"), self.coll("meta"))
        self._put_meta([self._stat_row(sid, cam, st) for cam, st in stats.items()])
        self._tracks[sid], self._stats[sid] = tracks, stats

    # -- writing --------------------------------------------------------------------------------------
    def _check_media(self) -> None:
        if self.media is None:
            raise GalleryError(
                f"gallery {self.where} has no media folder for crops: give one every node reaches with "
                "?media=/shared/folder in the gallery URI or REIDKIT_MEDIA"
            )

    def _load_writer_state(self, sid: int) -> None:
        """The tracks and counts of a source this process is about to write (once per source)."""
        if sid in self._tracks:
            return
        tracks: dict[int, _TrackState] = {}
        if self.dim is not None:
            fields = [*_TRACK_FIELDS, "fsum"]
            for rows in self.scan(self.coll("tracks"), f"source_id == {sid}", fields):
                for r in rows:
                    t = _TrackState(int(r["id"]), str(r["camera"]), float(r["first_time"]), float(r["last_time"]),
                                    int(r["n_crops"]), _unb64(r["fsum"]))  # fmt: skip
                    tracks[int(r["track_id"])] = t
        stats = {r["name"]: json.loads(r["body"]) for r in
                 self.query(self.coll("meta"), f'kind == "stat" and sid == {sid}', ["name", "body"])}  # fmt: skip
        self._tracks[sid], self._stats[sid] = tracks, stats

    @staticmethod
    def _stat_row(sid: int, camera: str, st: dict[str, Any]) -> dict[str, Any]:
        key = hashlib.sha1(camera.encode()).hexdigest()[:20]
        return {"key": f"stat:{sid}:{key}", "kind": "stat", "sid": sid, "num": float(st["n"]), "name": camera,
                "body": json.dumps(st)}  # fmt: skip

    def _upsert_tracks(self, sid: int, items: list[tuple[int, _TrackState]], txn: int) -> None:
        rows = []
        for tid, t in items:
            vec = normalize(t.sum[None])[0].astype(np.float32)
            rows.append({"id": t.id, "vec": vec, "source_id": sid, "camera": t.camera, "track_id": tid,
                         "first_time": t.first, "last_time": t.last, "n_crops": t.n, "fsum": _b64(t.sum),
                         "txn": txn})  # fmt: skip
        for chunk in _chunks(rows, 2000):
            self.client.upsert(self.coll("tracks"), list(chunk))

    def _add(
        self, x: np.ndarray, records: Sequence[rec.Sighting], progress: float | None, source: SourceRef | None,
        snapshot: bytes | None, photos: Sequence[rec.Photo],
    ) -> np.ndarray:  # fmt: skip
        """:meth:`add`: the sources written are marked with the add's ``txn`` first, the mark cleared last
        (see the module docstring for how a half-done add is undone)."""
        with self._lock:
            if len(x) == 0:
                if (progress is not None and source is not None) or photos:
                    sids = [] if source is None else [self._sid(source)]
                    self._put_meta(self._photo_rows(photos, 0))
                    self._mark(sids, progress, snapshot)
                return np.zeros(0, np.int64)
            if self.dim is None:
                self._set_dim(x.shape[1])
            by_uri: dict[str, int] = {}
            for r in records:
                if r.source in by_uri:
                    continue
                sid = self._source_id(str(r.source))
                if sid is None:
                    if r.camera is None:
                        raise GalleryError(f"unknown source {r.source!r}: add_source it first or give a camera")
                    sid = self.add_source(str(r.source), str(r.camera)).id
                    self._write_source(replace(self._src[sid], status="ingesting"))
                by_uri[r.source] = sid
            plain = self._sighting_rows(records, {uri: (sid, self._src[sid].camera) for uri, sid in by_uri.items()})
            rows = [{"source_id": p.source_id, "camera": p.camera, "timestamp": float(p.timestamp),
                     "frame": NONE_INT if p.frame is None else p.frame,
                     "track_id": NONE_INT if p.track_id is None else p.track_id,
                     "box": "" if p.box is None else ",".join(map(str, p.box)), "crop": p.crop or "",
                     "quality": math.nan if p.quality is None else p.quality} for p in plain]  # fmt: skip
            ids = self._slots.take("sighting", len(x))
            txn = int(ids[0])
            involved = sorted(set(by_uri.values()))
            for sid in involved:
                self._load_writer_state(sid)
            self._put_meta([self._source_row(self._src[s], txn) for s in involved])  # the mark: see _repair
            for i, row in enumerate(rows):
                row.update(id=int(ids[i]), vec=x[i], txn=txn)
            for chunk in _chunks(rows, 4096):
                self.client.insert(self.coll("sightings"), list(chunk))
            self._add_tracks(x, rows, txn)
            self._put_meta(self._photo_rows(photos, txn))
            marked = involved if source is None else [self._sid(source)]
            self._mark(sorted(set(marked) | set(involved)), progress, snapshot, keep=set(marked))
            return ids

    def _add_tracks(self, x: np.ndarray, rows: list[dict[str, Any]], txn: int) -> None:
        groups: dict[tuple[int, int], list[int]] = {}
        stat_rows = []
        for i, r in enumerate(rows):
            new_stat = {"n": 0, "t0": r["timestamp"], "t1": r["timestamp"], "tracks": 0, "last": []}
            st = self._stats[r["source_id"]].setdefault(r["camera"], new_stat)
            st["n"] += 1
            st["t0"], st["t1"] = min(st["t0"], r["timestamp"]), max(st["t1"], r["timestamp"])
            if r["track_id"] != NONE_INT:
                groups.setdefault((r["source_id"], r["track_id"]), []).append(i)
        new = [key for key in groups if key[1] not in self._tracks[key[0]]]
        new_ids = self._slots.take("track", len(new))
        fresh = dict(zip(new, new_ids.tolist(), strict=True))
        touched: dict[int, list[tuple[int, _TrackState]]] = {}
        for (sid, tid), idx in groups.items():
            s = x[idx].sum(0)
            ts = [rows[i]["timestamp"] for i in idx]
            first, last = float(min(ts)), float(max(ts))
            t = self._tracks[sid].get(tid)
            if t is None:
                cam = rows[idx[0]]["camera"]
                t = self._tracks[sid][tid] = _TrackState(fresh[(sid, tid)], cam, first, last, len(idx), s)
                self._stats[sid][cam]["tracks"] += 1
            else:
                t.sum = s + t.sum
                t.first, t.last, t.n = min(first, t.first), max(last, t.last), t.n + len(idx)
            touched.setdefault(sid, []).append((tid, t))
        for sid, items in touched.items():
            self._upsert_tracks(sid, items, txn)
        for sid in {r["source_id"] for r in rows}:
            for cam, st in self._stats[sid].items():
                mine = [r["id"] for r in rows if r["source_id"] == sid and r["camera"] == cam]
                if mine:
                    st["last"] = sorted([*st["last"], *mine])[-64:]
                    stat_rows.append(self._stat_row(sid, cam, st))
        self._put_meta(stat_rows)

    def _photo_rows(self, photos: Sequence[rec.Photo], txn: int) -> list[dict[str, Any]]:
        rows = []
        for p in photos:
            body = {"digest": p.digest, "size": p.size, "mtime_ns": p.mtime_ns, "timestamp": p.timestamp,
                    "time_from": p.time_from, "detections": p.detections, "txn": txn}  # fmt: skip
            rows.append({"key": f"photo:{p.source_id}:{p.frame}", "kind": "photo", "sid": p.source_id,
                         "num": float(p.frame), "name": p.name, "body": json.dumps(body)})  # fmt: skip
        return rows

    def _mark(
        self, sids: list[int], progress: float | None, snapshot: bytes | None, keep: set[int] | None = None
    ) -> None:
        """Clear the add's mark on ``sids``; set the progress of those in ``keep`` (default all: pending ->
        ingesting), with ``snapshot`` the one tracking snapshot of the (single) source at that progress."""
        now = time.time()
        rows = []
        for sid in sids:
            s = self._src.get(sid) or self._lookup(sid)[0]  # type: ignore[index]
            if progress is not None and (keep is None or sid in keep):
                s = replace(s, progress=float(progress), updated=now,
                            status="ingesting" if s.status == "pending" else s.status)  # fmt: skip
            self._src[sid] = s
            rows.append(self._source_row(s, None))
        if snapshot is not None and progress is not None:
            sid = sids[0] if keep is None else next(iter(keep))
            blob = base64.b64encode(snapshot).decode("ascii")
            parts = [blob[i : i + _BLOB] for i in range(0, len(blob), _BLOB)] or [""]
            tag = f"{float(progress)!r}"
            self._put_meta([{"key": f"snap:{sid}:{tag}:{i}", "kind": "snap", "sid": sid, "num": float(progress),
                             "name": str(len(parts)), "body": part} for i, part in enumerate(parts)])  # fmt: skip
            self.client.delete(self.coll("meta"), filter=f'kind == "snap" and sid == {sid} and num != {tag}')
        self._put_meta(rows)

    # -- ingest state ---------------------------------------------------------------------------------
    def snapshot(self, source: SourceRef, progress: float) -> bytes | None:
        """The tracking snapshot an interrupted ingest of ``source`` left at ``progress``, if any."""
        with self._lock:
            sid = self._sid(source)
            rows = self.query(self.coll("meta"), f'kind == "snap" and sid == {sid} and num == {float(progress)!r}',
                              ["key", "name", "body"])  # fmt: skip
        if not rows:
            return None
        parts = sorted(rows, key=lambda r: int(r["key"].rsplit(":", 1)[1]))
        if len(parts) != int(parts[0]["name"]):
            return None
        return base64.b64decode("".join(r["body"] for r in parts))

    def drop_snapshots(self, source: SourceRef) -> None:
        """Forget ``source``'s tracking snapshots."""
        self._writable()
        with self._lock:
            self.client.delete(self.coll("meta"), filter=f'kind == "snap" and sid == {self._sid(source)}')
            self._barrier(self.coll("meta"))

    def log_event(self, source: SourceRef, event: str, detail: str = "", at: float | None = None) -> None:
        """Record that ``event`` happened to ``source`` (see :class:`SourceEvent`)."""
        self._writable()
        t = time.time() if at is None else float(at)
        with self._lock:
            sid = self._sid(source)
            key = f"event:{sid}:{int(t * 1e6):020d}:{uuid.uuid4().hex[:8]}"
            row = {"key": key, "kind": "event", "sid": sid, "num": t, "name": str(event), "body": str(detail)}
            self._put_meta([row])

    def events(self, source: SourceRef | None = None) -> list[rec.SourceEvent]:
        """What happened to ``source`` (default: every source), oldest first."""
        with self._lock:
            expr = 'kind == "event"' + ("" if source is None else f" and sid == {self._sid(source)}")
            rows = self.query(self.coll("meta"), expr, ["key", "sid", "num", "name", "body"])
        rows.sort(key=lambda r: (r["key"].split(":")[2], r["key"]))
        return [rec.SourceEvent(int(r["sid"]), float(r["num"]), r["name"], r["body"]) for r in rows]

    def max_track_id(self, source: SourceRef) -> int:
        """The largest track id stored for ``source`` (0: none)."""
        with self._lock:
            sid = self._sid(source)
            if sid in self._tracks:
                return max(self._tracks[sid], default=0)
            if self.dim is None:
                return 0
            rows = self.query(self.coll("tracks"), f"source_id == {sid}", ["track_id"])
        return max((int(r["track_id"]) for r in rows), default=0)

    def photo_ledger(self, source: SourceRef) -> rec.PhotoLedger:
        """What the gallery holds of a photo source (see :class:`PhotoLedger`)."""
        with self._lock:
            sid = self._sid(source)
            rows = self.query(self.coll("meta"), f'kind == "photo" and sid == {sid}', ["num", "name", "body"])
            track = self.max_track_id(sid)
        digests, stats, frame = set(), {}, 0
        for r in rows:
            b = json.loads(r["body"])
            digests.add(b["digest"])
            stats[r["name"]] = (int(b["size"]), int(b["mtime_ns"]))
            frame = max(frame, int(r["num"]))
        return rec.PhotoLedger(digests, stats, frame + 1, track + 1)

    # -- reading --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        if self.dim is None:
            return 0
        with self._lock:
            return self._count(self.coll("sightings"))

    def _record(self, r: dict[str, Any]) -> rec.Record:
        box = tuple(int(v) for v in r["box"].split(",")) if r.get("box") else None
        sid = int(r["source_id"])
        return rec.Record(int(r["id"]), sid, self._uri(sid), str(r["camera"]), float(r["timestamp"]),
                      _opt_int(r["frame"]), box, _opt_int(r["track_id"]), r["crop"] or None, _opt_float(r["quality"]))  # type: ignore[arg-type]  # fmt: skip

    def _records(self, ids: Sequence[int]) -> dict[int, rec.Record]:
        out: dict[int, rec.Record] = {}
        if self.dim is None:
            return out
        uniq = list(dict.fromkeys(int(i) for i in ids))
        for chunk in _chunks(uniq):
            for r in self.query(self.coll("sightings"), _in("id", chunk), _RECORD_FIELDS):
                out[int(r["id"])] = self._record(r)
        return out

    def records(self, source: SourceRef | None = None, track_id: int | None = None) -> list[rec.Record]:
        """Stored records, optionally of one source (and one of its tracks), in id order."""
        with self._lock:
            expr = self._rows_of(source, "" if track_id is None else f" and track_id == {int(track_id)}")
            if expr is None:
                return []
            out = [self._record(r) for rows in self.scan(self.coll("sightings"), expr, _RECORD_FIELDS) for r in rows]
        return sorted(out, key=lambda r: r.id)

    def _rows_of(self, source: SourceRef | None, more: str = "") -> str | None:
        """The filter expression of the rows of ``source`` (all: None), ``more`` appended; None: there are none
        (no vector collections yet, or no such source)."""
        if self.dim is None:
            return None
        if source is None:
            return "id >= 0"
        sid = self._source_id(source)
        return None if sid is None else f"source_id == {sid}{more}"

    def _vectors(self, coll: str, ids: list[int]) -> dict[int, np.ndarray]:
        found: dict[int, np.ndarray] = {}
        for chunk in _chunks(list(dict.fromkeys(ids))):
            for r in self.query(coll, _in("id", chunk), ["id", "vec"]):
                found[int(r["id"])] = np.asarray(r["vec"], np.float32)
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"no such gallery ids: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        return found

    def features(self, ids: Iterable[int]) -> np.ndarray:
        """The stored (L2-normalised) features of ``ids``, in order (KeyError for unknown ids)."""
        ids = [int(i) for i in ids]
        if not ids or self.dim is None:
            if ids:
                raise KeyError(f"no such gallery ids: {ids[:10]}")
            return np.zeros((0, self.dim or 0), np.float32)
        with self._lock:
            found = self._vectors(self.coll("sightings"), ids)
        return np.stack([found[i] for i in ids]).astype(np.float32)

    def track_features(self, ids: Iterable[int]) -> np.ndarray:
        """Track features (the L2-normalised mean of each track's crop features), in order."""
        ids = [int(i) for i in ids]
        if not ids:
            return np.zeros((0, self.dim or 0), np.float32)
        with self._lock:
            found = self._vectors(self.coll("tracks"), ids)
        return np.stack([found[i] for i in ids]).astype(np.float32)

    def _track(self, r: dict[str, Any]) -> rec.Track:
        sid = int(r["source_id"])
        return rec.Track(int(r["id"]), sid, self._uri(sid), int(r["track_id"]), str(r["camera"]),
                         float(r["first_time"]), float(r["last_time"]), int(r["n_crops"]))  # fmt: skip

    def tracks(self, source: SourceRef | None = None) -> list[rec.Track]:
        """Stored tracks (optionally of one source), in id order."""
        with self._lock:
            expr = self._rows_of(source)
            if expr is None:
                return []
            out = [self._track(r) for rows in self.scan(self.coll("tracks"), expr, _TRACK_FIELDS) for r in rows]
        return sorted(out, key=lambda t: t.id)

    def track(self, track: int) -> rec.Track | None:
        """The track with row id ``track``, None if there is none."""
        with self._lock:
            if self.dim is None:
                return None
            rows = self.query(self.coll("tracks"), f"id == {int(track)}", _TRACK_FIELDS)
            return self._track(rows[0]) if rows else None

    def tracks_by_key(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], rec.Track]:
        """The stored tracks of ``(source_id, tracker id)`` pairs, by pair; pairs without one are absent."""
        wanted: dict[int, set[int]] = {}
        for s, t in keys:
            wanted.setdefault(int(s), set()).add(int(t))
        out: dict[tuple[int, int], rec.Track] = {}
        with self._lock:
            if self.dim is None:
                return out
            for sid, tids in wanted.items():
                for chunk in _chunks(sorted(tids)):
                    expr = f"source_id == {sid} and {_in('track_id', chunk)}"
                    for r in self.query(self.coll("tracks"), expr, _TRACK_FIELDS):
                        out[(sid, int(r["track_id"]))] = self._track(r)
        return out

    def ids(self) -> np.ndarray:
        """Every stored detection id, ascending (int64)."""
        with self._lock:
            if self.dim is None:
                return np.zeros(0, np.int64)
            parts = [np.fromiter((r["id"] for r in rows), np.int64, len(rows))
                     for rows in self.scan(self.coll("sightings"), "id >= 0", ["id"], batch=16384)]  # fmt: skip
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def _all_stats(self) -> list[tuple[int, str, dict[str, Any]]]:
        rows = self.query(self.coll("meta"), 'kind == "stat"', ["sid", "name", "body"])
        return [(int(r["sid"]), str(r["name"]), json.loads(r["body"])) for r in rows]

    def cameras(self) -> list[str]:
        """The cameras that have detections, sorted."""
        with self._lock:
            return sorted({cam for _, cam, st in self._all_stats() if st["n"] > 0})

    def photo_path(self, source: SourceRef, frame: int | None) -> Path | None:
        """The picture a photo-folder sighting was detected in (by its source and frame), else None."""
        if frame is None:
            return None
        with self._lock:
            sid = self._source_id(source)
            if sid is None:
                return None
            rows = self.query(self.coll("meta"), f'key == {_lit(f"photo:{sid}:{int(frame)}")}', ["name"])
            return Path(self._uri(sid)) / rows[0]["name"] if rows else None

    def time_bases(self) -> dict[int, str]:
        """Where each photo source's times came from, by source id (as :meth:`Gallery.time_bases`)."""
        with self._lock:
            rows = self.query(self.coll("meta"), 'kind == "photo"', ["sid", "body"])
        counts: dict[int, dict[str, int]] = {}
        for r in rows:
            kind = json.loads(r["body"])["time_from"]
            c = counts.setdefault(int(r["sid"]), {})
            c[kind] = c.get(kind, 0) + 1
        out = {}
        for sid, c in counts.items():
            kinds = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))
            out[sid] = kinds[0][0] if len(kinds) == 1 else ", ".join(f"{k} {n}" for k, n in kinds)
        return out

    def pictures(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], str]:
        """The file names of the pictures of photo-folder ``(source_id, frame)`` pairs (others absent)."""
        want = [f"photo:{int(s)}:{int(f)}" for s, f in keys]
        out: dict[tuple[int, int], str] = {}
        with self._lock:
            for chunk in _chunks(list(dict.fromkeys(want))):
                for r in self.query(self.coll("meta"), _in("key", chunk), ["sid", "num", "name"]):
                    out[(int(r["sid"]), int(r["num"]))] = str(r["name"])
        return out

    def overview(self, recent: int = 24) -> rec.GalleryOverview:
        """Counts per camera and per source, tracks, searchable detections and the ``recent`` added last."""
        with self._lock:
            stats = self._all_stats()
            sources = self.sources()
            n = len(self)
            recent = max(0, int(recent))
            last = sorted({i for _, _, st in stats for i in st.get("last", [])}, reverse=True)
            if recent > 64 and n > len(last):
                last = sorted(self.ids().tolist(), reverse=True)
            found = self._records(last[:recent])
        cams: dict[str, list[float]] = {}
        per_src: dict[int, list[int]] = {}
        for sid, cam, st in stats:
            c = cams.setdefault(cam, [0, 0, math.inf, -math.inf])
            c[0], c[1] = c[0] + st["n"], c[1] + st["tracks"]
            if st["n"]:
                c[2], c[3] = min(c[2], st["t0"]), max(c[3], st["t1"])
            p = per_src.setdefault(sid, [0, 0])
            p[0], p[1] = p[0] + st["n"], p[1] + st["tracks"]
        return rec.GalleryOverview(
            cameras=[rec.CameraCount(c, int(v[0]), int(v[1]), v[2], v[3]) for c, v in sorted(cams.items()) if v[0] > 0],
            sources=[rec.SourceCount(s, *per_src.get(s.id, [0, 0])) for s in sources],
            tracks=sum(int(v[1]) for v in cams.values()),
            searchable=n,
            recent=[found[i] for i in last[:recent] if i in found],
        )

    # -- search ---------------------------------------------------------------------------------------
    def _filter(
        self,
        cameras: str | Iterable[str] | None = None,
        time_range: tuple[Any, Any] | None = None,
        exclude_source: SourceRef | Iterable[SourceRef] | None = None,
        *,
        tracks: bool = False,
    ) -> str | None:
        """The Milvus filter expression of search's filters (None: no filter)."""
        cams, t0, t1, excl = self._filters(cameras, time_range, exclude_source)
        lo_f, hi_f = ("last_time", "first_time") if tracks else ("timestamp", "timestamp")
        parts = []
        if cams is not None:
            parts.append(_in("camera", sorted(cams)) if cams else "id < 0")
        if t0 > -math.inf:
            parts.append(f"{lo_f} >= {t0!r}")
        if t1 < math.inf:
            parts.append(f"{hi_f} <= {t1!r}")
        if excl:
            parts.append(f"source_id not in [{', '.join(map(str, sorted(excl)))}]")
        return " and ".join(f"({p})" for p in parts) if parts else None

    def _search_params(self, k: int, exact: bool, frac: float) -> dict[str, Any]:
        """HNSW ``ef`` and IVF ``nprobe`` widened by 1 / (the fraction of rows a filter admits), as the
        folder gallery does, so a filtered search visits as many admissible candidates as an unfiltered one."""
        cfg = self.config
        if exact or cfg.kind == "flat":
            return {"metric_type": "IP", "params": {}}
        if cfg.kind == "hnsw":
            return {"metric_type": "IP", "params": {"ef": min(MAX_EF, math.ceil(max(cfg.ef_search, k) / frac))}}
        return {"metric_type": "IP", "params": {"nprobe": min(cfg.nlist, math.ceil(cfg.nprobe / frac))}}

    def _search(self, coll: str, q: np.ndarray, k: int, expr: str | None, fields: list[str], exact: bool) -> list[Any]:
        frac = 1.0
        if expr and not exact and self.config.kind != "flat":  # two counts: cheap beside a search
            frac = max(self._count(coll, expr), 1) / max(self._count(coll), 1)
        out: list[Any] = []
        for i in range(0, len(q), 1024):
            kw: dict[str, Any] = {"filter": expr} if expr else {}
            out.extend(self.client.search(coll, q[i : i + 1024], limit=k, output_fields=fields,
                                          search_params=self._search_params(k, exact, frac),
                                          consistency_level=self.consistency, **kw))  # fmt: skip
        return out

    def _knn(
        self, q: np.ndarray, k: int, cameras: str | Iterable[str] | None, time_range: tuple[Any, Any] | None,
        exclude_source: SourceRef | Iterable[SourceRef] | None,
    ) -> list[list[rec.Hit]]:  # fmt: skip
        """:meth:`search`: ``k`` at most 16,384; the filters evaluated inside Milvus's vector search."""
        if self.dim is None or k <= 0:
            return [[] for _ in range(len(q))]
        expr = self._filter(cameras, time_range, exclude_source)
        res = self._search(self.coll("sightings"), q, min(int(k), MAX_K), expr, _RECORD_FIELDS[1:], False)
        return [[rec.Hit(**vars(self._record(dict(h["entity"], id=h["id"]))), score=float(h["distance"])) for h in row]
                for row in res]  # fmt: skip

    def search_tracks(self, queries: Any, k: int = 100, **filters: Any) -> list[list[rec.TrackHit]]:
        """Like :meth:`search` (same filters), over tracks (exact; a track matches ``time_range`` if it
        overlaps it)."""
        with self._lock:
            q = self._prep(queries, "queries")
            if self.dim is None or k <= 0:
                return [[] for _ in range(len(q))]
            expr = self._filter(**filters, tracks=True)
            res = self._search(self.coll("tracks"), q, min(int(k), MAX_K), expr, _TRACK_FIELDS[1:], True)
            return [[rec.TrackHit(**vars(self._track(dict(h["entity"], id=h["id"]))), score=float(h["distance"]))
                     for h in row] for row in res]  # fmt: skip

    # -- index management -----------------------------------------------------------------------------
    @property
    def index_structure(self) -> str:
        """The index in use: flat / hnsw / ivf."""
        return self.config.kind

    def wait_indexed(self, timeout: float = 600.0) -> bool:
        """Flush, then wait until the server has built the index of every row and its query node searches
        them through it (True), or ``timeout`` s passed (False). Until then rows are searched through an
        interim index (IVF, nprobe 16 of 128 lists, whatever ``ef``/``nprobe`` asks): lower recall."""
        if self.dim is None or self.lite:
            return True
        coll = self.coll("sightings")
        self.client.flush(coll)
        total = self._count(coll, strong=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.client.describe_index(coll, index_name="vec") or {}
            pending, done = int(info.get("pending_index_rows", 0)), int(info.get("indexed_rows", 0))
            if pending == 0 and done >= total:
                segs = self.client.list_loaded_segments(coll)
                served = sum(int(s.num_rows) for s in segs if "Sealed" in str(s.state) and s.index_name)
                if served >= total:
                    return True
            time.sleep(0.5)
        return False

    def reindex(self, index: str | IndexConfig, **options: Any) -> None:
        """Rebuild the vector index as another kind or with other build options (e.g. ``hnsw_m``, ``nlist``)."""
        self._writable()
        cfg = index if isinstance(index, IndexConfig) else IndexConfig(kind=index, **options)
        with self._lock:
            meta = self.coll("meta")
            info = json.loads(self.query(meta, 'key == "gallery"', ["body"], strong=True)[0]["body"])
            info["index"] = cfg.to_dict()
            self.config = cfg
            if self.dim is not None:
                coll = self.coll("sightings")
                self.client.release_collection(coll)
                self.client.drop_index(coll, index_name="vec")
                self.client.create_index(coll, self._index_params("vec", cfg))
                self.client.load_collection(coll)
            self._put_info(info)

    # -- lifecycle ------------------------------------------------------------------------------------
    def save(self) -> None:
        """Nothing to do: every write is in Milvus once the call returns (:meth:`wait_indexed` flushes)."""
        self._writable()

    def _release(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):
                self._client.close()
        self._client = None
        if self._lite_path is not None:
            path, self._lite_path = self._lite_path, None
            with _LITE_LOCK:
                _LITE_USERS[path] -= 1
                last = _LITE_USERS[path] == 0
                if last:
                    del _LITE_USERS[path]
            if last:  # free the folder for another process
                with contextlib.suppress(Exception):
                    from milvus_lite.server_manager import server_manager_instance

                    server_manager_instance.release_server(path)

    def close(self) -> None:
        """Release the connection (and a Milvus Lite folder once its last gallery here is closed)."""
        with self._lock:
            if self._closed:
                return
            self._release()
            self._closed = True

    def __repr__(self) -> str:
        return f"MilvusGallery({self.where!r}, {'closed' if self._closed else f'{self.config.kind} index'})"

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self._closed:
                self._release()


def drop_gallery(uri: str, name: str = "gallery", token: str | None = None) -> None:
    """Drop a gallery's collections (its crops stay where they are)."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, token=token or "")
    try:
        for kind in ("sightings", "tracks", "meta"):
            if client.has_collection(f"{name}_{kind}"):
                client.drop_collection(f"{name}_{kind}")
    finally:
        client.close()
