"""The SQLite side of a gallery: schema, records and small conversions.

Tables (``gallery.db``, WAL mode, ``synchronous=FULL``):

* ``meta``: ``format``, ``version``, ``dim``, ``index`` (the :class:`IndexConfig` as JSON).
* ``sources``: one row per ingested video/folder: ``uri`` (unique), ``camera``, ``fps``, content
  ``fingerprint``, ``status`` (pending / ingesting / done / failed / stopped) and ``progress`` (how far ingest
  got, e.g. the last frame or second written, updated in the same transaction as the rows).
* ``detections``: one row per person crop; its id is the vector's id in the FAISS index.
* ``features``: the float32 feature of every detection (same id), written in the same transaction,
  so the index can always be repaired or rebuilt from the database.
* ``tracks``: one row per (source, tracker id): camera, first/last time, number of crops and the
  running sum of its crops' features; the track feature is that sum L2-normalised.
* ``photos``: the ledger of a photo folder (see ``photos.py``): one row per ingested picture, its
  ``frame`` number in the source (the ``detections.frame`` of its people), file ``name`` in the
  source folder, content ``digest`` (SHA-1: a picture is never ingested twice), size, mtime, time and where the
  time came from (``time_from``), and how many people it held. Written in the same transaction as its
  sightings; galleries made before it get the table on their first writable open.

Ids are ``AUTOINCREMENT``: an id is never reused, so a stale index snapshot can never hold a vector
under an id that now belongs to a different detection.
"""

from __future__ import annotations

import sqlite3

FORMAT = "reidkit-gallery"
VERSION = 1
STATUSES = ("pending", "ingesting", "done", "failed", "stopped")  # stopped: a live source the operator stopped

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uri TEXT NOT NULL UNIQUE,
    camera TEXT NOT NULL,
    fps REAL,
    fingerprint TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    progress REAL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS detections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_id INTEGER NOT NULL REFERENCES sources(id),
    camera TEXT NOT NULL,
    timestamp REAL NOT NULL,
    frame INTEGER,
    x1 INTEGER, y1 INTEGER, x2 INTEGER, y2 INTEGER,
    track_id INTEGER,
    crop TEXT,
    quality REAL
);
CREATE INDEX IF NOT EXISTS detections_source ON detections(source_id, track_id);
CREATE INDEX IF NOT EXISTS detections_camera_time ON detections(camera, timestamp);
CREATE TABLE IF NOT EXISTS features (id INTEGER PRIMARY KEY, vec BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tracks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_id INTEGER NOT NULL REFERENCES sources(id),
    track_id INTEGER NOT NULL,
    camera TEXT NOT NULL,
    first_time REAL NOT NULL,
    last_time REAL NOT NULL,
    n_crops INTEGER NOT NULL,
    feature_sum BLOB NOT NULL,
    UNIQUE(source_id, track_id)
);
CREATE TABLE IF NOT EXISTS photos (
    source_id INTEGER NOT NULL REFERENCES sources(id),
    frame INTEGER NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    timestamp REAL NOT NULL,
    time_from TEXT NOT NULL,
    detections INTEGER NOT NULL,
    PRIMARY KEY (source_id, frame),
    UNIQUE (source_id, digest)
);
"""
PHOTOS_DDL = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS photos") :].strip().rstrip(";")
# Tracking state of an interrupted ingest: one pickled snapshot per (source, progress); created on the
# first writable open (galleries made before it get it then), rows of removed sources dropped there.
SNAPSHOTS_DDL = (
    "CREATE TABLE IF NOT EXISTS ingest_snapshots (source_id INTEGER NOT NULL, progress REAL NOT NULL, "
    "created REAL NOT NULL, state BLOB NOT NULL, PRIMARY KEY (source_id, progress))"
)
# What happened to a live source and when: online, offline (with why), stopped, errors in its stream.
EVENTS_DDL = (
    "CREATE TABLE IF NOT EXISTS source_events (id INTEGER PRIMARY KEY AUTOINCREMENT, source_id INTEGER NOT NULL, "
    "time REAL NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '')"
)
PHOTO_COLUMNS = "source_id, frame, name, digest, size, mtime_ns, timestamp, time_from, detections"

RECORD_SQL = (
    "SELECT d.id, d.source_id, s.uri, d.camera, d.timestamp, d.frame, d.x1, d.y1, d.x2, d.y2, d.track_id, "
    "d.crop, d.quality FROM detections d JOIN sources s ON s.id = d.source_id"
)
TRACK_SQL = (
    "SELECT t.id, t.source_id, s.uri, t.track_id, t.camera, t.first_time, t.last_time, t.n_crops "
    "FROM tracks t JOIN sources s ON s.id = t.source_id"
)
SOURCE_SQL = "SELECT id, uri, camera, fps, fingerprint, status, progress, created, updated FROM sources"


def connect(path: str, read_only: bool = False) -> sqlite3.Connection:
    """Open ``gallery.db`` in autocommit mode (transactions are explicit), WAL, full sync."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    if not read_only:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn
