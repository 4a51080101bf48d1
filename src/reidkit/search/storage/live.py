"""A read-only gallery that follows what ``reidkit ingest`` adds from another process.

A read-only :class:`~reidkit.search.Gallery` searches the FAISS snapshot it reconciled when it was
opened; rows committed later are in ``gallery.db`` but not in its index. :class:`LiveGallery` keeps
one open gallery and, at most every ``refresh_s`` seconds, asks SQLite whether anything was
committed since (``PRAGMA data_version`` on a connection of its own, plus the size and modification
time of ``gallery.db``, its WAL file and the index file). When something was, a background thread
opens a fresh read-only gallery and swaps it in atomically. Requests hold a *lease* on the gallery
object they started with, so a search never mixes two snapshots (no torn reads); a replaced gallery
is closed when its last lease ends. Nothing here writes to the gallery.

A gallery on a Milvus server needs none of this (the server is always current): :class:`ServerGallery`
gives it the same interface, and :func:`follow_gallery` picks the one a gallery URI needs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from reidkit.search.storage.base import GalleryBackend
from reidkit.search.storage.gallery import DB_NAME, INDEX_NAME, Gallery
from reidkit.search.storage.schema import connect

log = logging.getLogger(__name__)


class NoGallery(RuntimeError):
    """There is no (readable) gallery at the folder yet."""


@dataclass
class _Snapshot:
    gallery: Gallery
    key: tuple
    users: int = 0
    retired: bool = False


def _retire(snap: _Snapshot | None) -> _Snapshot | None:
    """Mark ``snap`` retired; returned when nobody uses it any more (the caller closes it, unlocked)."""
    if snap is None:
        return None
    snap.retired = True
    return snap if snap.users == 0 else None


class LiveGallery:
    """The current read-only :class:`Gallery` at ``root``, refreshed when another process writes.

    Use :meth:`lease` around every piece of work that reads the gallery. ``refresh_s``: how often to
    check for changes (0: on every lease). :attr:`reopens` counts the swaps.
    """

    def __init__(self, root: str | os.PathLike[str], refresh_s: float = 1.0) -> None:
        self.root = Path(root)
        self.refresh_s = float(refresh_s)
        self.reopens = 0
        self.error: str | None = None
        self._lock = threading.Lock()
        self._snap: _Snapshot | None = None
        self._probe = None
        self._probe_ino: int | None = None
        self._checked = -float("inf")
        self._refreshing = False
        self._closed = False
        self.refresh()

    # -- change detection -----------------------------------------------------------------------------
    def _key(self) -> tuple | None:
        """What changes when another process commits to the gallery (None: no gallery.db). Under the lock."""
        db = self.root / DB_NAME
        try:
            ino = db.stat().st_ino
        except FileNotFoundError:
            return None
        if self._probe is None or self._probe_ino != ino:  # first look, or the database was replaced
            if self._probe is not None:
                self._probe.close()
            self._probe = connect(str(db), read_only=True)
            self._probe_ino = ino
        version = self._probe.execute("PRAGMA data_version").fetchone()[0]
        # File stats as well: a database deleted and created again may reuse the inode number, and the probe
        # would then watch the deleted file; every WAL commit changes the -wal file (or, checkpointed, the db).
        files = []
        for name in (DB_NAME, DB_NAME + "-wal", INDEX_NAME):
            try:
                st = (self.root / name).stat()
                files.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                files.append(None)
        return (ino, version, *files)

    def refresh(self) -> bool:
        """Check now and, if the gallery changed (or is not open yet), reopen it in this thread.
        Returns whether a new gallery object was swapped in."""
        with self._lock:
            if self._refreshing or self._closed:
                return False
            self._checked = time.monotonic()
            key = self._key()
            if key is None or (self._snap is not None and self._snap.key == key):
                if key is None and self._snap is None:
                    self.error = f"no gallery at {self.root} (no {DB_NAME}); build one with reidkit ingest"
                return False
            self._refreshing = True
        return self._reopen(key)

    def _maybe_refresh(self) -> None:
        with self._lock:
            if self._refreshing or self._closed or time.monotonic() - self._checked < self.refresh_s:
                return
            self._checked = time.monotonic()
            key = self._key()
            if key is None or (self._snap is not None and self._snap.key == key):
                return
            self._refreshing = True
        if self._snap is None:  # nothing to serve meanwhile: open it in this request
            self._reopen(key)
        else:  # keep serving the current snapshot; swap when the new one is ready
            threading.Thread(target=self._reopen, args=(key,), name="reidkit-gallery-refresh", daemon=True).start()

    def _reopen(self, key: tuple) -> bool:
        # The key is read before opening: whatever is committed after it changes the key again, so the
        # next check opens once more and nothing committed is ever missed for good.
        t0 = time.perf_counter()
        try:
            gallery = Gallery.open(self.root, create=False, read_only=True)
        except Exception as exc:  # a half-created gallery, a corrupt file: keep the old one, retry later
            log.warning("gallery %s: could not (re)open it: %s", self.root, exc)
            with self._lock:
                self._refreshing = False
                if self._snap is None:
                    self.error = f"gallery {self.root} cannot be opened: {exc}"
            return False
        old = None
        with self._lock:
            self._refreshing = False
            if self._closed:
                old, self._snap = _Snapshot(gallery, key, retired=True), None
            else:
                old, self._snap = self._snap, _Snapshot(gallery, key)
                self.reopens += 1
                self.error = None
            old = _retire(old)
        if old is not None:
            old.gallery.close()
        log.info("gallery %s: opened %d sightings in %.2f s", self.root, len(gallery), time.perf_counter() - t0)
        return True

    # -- use ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lease(self) -> Iterator[Gallery]:
        """The current gallery, kept open (and unchanged) for the duration of the block."""
        self._maybe_refresh()
        with self._lock:
            snap = self._snap
            if snap is None:
                raise NoGallery(self.error or f"no gallery at {self.root}")
            snap.users += 1
        try:
            yield snap.gallery
        finally:
            with self._lock:
                snap.users -= 1
                done = snap.retired and snap.users == 0
            if done:
                snap.gallery.close()

    @property
    def ready(self) -> bool:
        return self._snap is not None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            snap, self._snap = self._snap, None
            if self._probe is not None:
                self._probe.close()
                self._probe = None
            snap = _retire(snap)
        if snap is not None:
            snap.gallery.close()


class ServerGallery:
    """A gallery on a server (Milvus) read by the service while any number of writers add to it.

    The server answers every read with what is committed (Session consistency: other processes' rows
    within Milvus's time tick), so there is nothing to reopen: one read-only client serves every request.
    Until the gallery exists, each lease tries to open it again (at most every ``retry_s`` seconds) and
    raises :class:`NoGallery` meanwhile. Same interface as :class:`LiveGallery`.
    """

    def __init__(self, uri: str, retry_s: float = 1.0) -> None:
        self.uri = uri
        self.retry_s = float(retry_s)
        self.reopens = 0
        self.error: str | None = None
        self._lock = threading.Lock()
        self._gallery: GalleryBackend | None = None
        self._tried = -float("inf")
        self._closed = False
        self._open()

    @property
    def root(self) -> Path:
        """The gallery's media folder (``<media>/<NAME>``), where its crops are."""
        return Path(getattr(self._gallery, "root", "")) if self._gallery is not None else Path()

    def _open(self) -> None:
        from reidkit.search.storage.open import open_gallery
        from reidkit.search.storage.records import GalleryError

        with self._lock:
            if self._gallery is not None or self._closed or time.monotonic() - self._tried < self.retry_s:
                return
            self._tried = time.monotonic()
            try:
                self._gallery = open_gallery(self.uri, create=False, read_only=True)
            except GalleryError as exc:
                self.error = str(exc)
                return
            self.reopens += 1
            self.error = None

    @contextlib.contextmanager
    def lease(self) -> Iterator[GalleryBackend]:
        """The gallery (always current); NoGallery while there is none at the URI."""
        self._open()
        g = self._gallery
        if g is None:
            raise NoGallery(self.error or f"no gallery at {self.uri}")
        yield g

    @property
    def ready(self) -> bool:
        return self._gallery is not None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            g, self._gallery = self._gallery, None
        if g is not None:
            g.close()


def follow_gallery(uri: str | os.PathLike[str], refresh_s: float = 1.0) -> LiveGallery | ServerGallery:
    """The service's view of the gallery at ``uri``: a :class:`LiveGallery` for a folder, a
    :class:`ServerGallery` for Milvus (a server, or a Milvus Lite folder no writer holds)."""
    from reidkit.search.storage.open import is_milvus

    return ServerGallery(str(uri), refresh_s) if is_milvus(uri) else LiveGallery(uri, refresh_s)
