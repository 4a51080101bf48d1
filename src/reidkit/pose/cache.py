"""A keypoint cache keyed by image content: computed once per image, resumable, safe to share.

One SQLite file (WAL) per pose model: ``meta(pose)`` names the model (``movenet_lightning:<sha1>``);
``keypoints(digest, width, height, kp)`` holds the ``(17, 3)`` float32 ``x, y, score`` of the image
whose file bytes have that SHA-1, with its size. Batches are committed as they finish, so a killed
run keeps what it had done and a re-run computes only the rest. The default file is
``<cache>/keypoints/<pose id>.sqlite`` (``$REIDKIT_CACHE``, see :func:`reidkit.paths.cache_root`).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from reidkit.paths import cache_root
from reidkit.pose.movenet import MoveNet


class KeypointCacheError(ValueError):
    """A cache file that cannot be used as asked (the message names the file and why)."""


def image_digest(path: str | os.PathLike[str]) -> str:
    """SHA-1 (hex) of an image file's bytes: the cache key."""
    try:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise KeypointCacheError(f"{path}: cannot read ({exc.strerror or exc})") from None


def default_cache_path(pose_id: str) -> Path:
    return cache_root() / "keypoints" / (pose_id.replace(":", "_") + ".sqlite")


class KeypointCache:
    """Keypoints by image digest for one pose model (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], pose_id: str, create: bool = True) -> None:
        self.path = Path(path)
        self.pose_id = pose_id
        if not self.path.is_file() and not create:
            raise KeypointCacheError(f"{self.path}: no such keypoint cache")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS keypoints (digest TEXT PRIMARY KEY, width INTEGER NOT NULL, "
                "height INTEGER NOT NULL, kp BLOB NOT NULL)"
            )
            row = self.db.execute("SELECT value FROM meta WHERE key = 'pose'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise KeypointCacheError(f"{self.path}: not a keypoint cache ({exc})") from None
        if row is None:
            self.db.execute("INSERT INTO meta(key, value) VALUES ('pose', ?)", (pose_id,))
        elif row[0] != pose_id:
            raise KeypointCacheError(
                f"{self.path}: holds keypoints of pose model {row[0]}, not {pose_id}; use another cache file"
            )

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM keypoints").fetchone()[0])

    def get(self, digests: Sequence[str]) -> dict[str, tuple[int, int, np.ndarray]]:
        """``{digest: (width, height, (17, 3) keypoints)}`` for the digests present."""
        out: dict[str, tuple[int, int, np.ndarray]] = {}
        uniq = list(dict.fromkeys(digests))
        for i in range(0, len(uniq), 900):
            chunk = uniq[i : i + 900]
            q = f"SELECT digest, width, height, kp FROM keypoints WHERE digest IN ({','.join('?' * len(chunk))})"
            for d, w, h, blob in self.db.execute(q, chunk):
                kp = np.frombuffer(blob, np.float32)
                if kp.size != 51:
                    raise KeypointCacheError(f"{self.path}: entry {d} holds {kp.size} values, not 17 x 3")
                out[d] = (int(w), int(h), kp.reshape(17, 3).copy())
        return out

    def put(self, rows: Sequence[tuple[str, int, int, np.ndarray]]) -> None:
        """Store ``(digest, width, height, keypoints)`` rows in one transaction."""
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.executemany(
                "INSERT OR REPLACE INTO keypoints(digest, width, height, kp) VALUES (?, ?, ?, ?)",
                [(d, int(w), int(h), np.asarray(k, np.float32).tobytes()) for d, w, h, k in rows],
            )
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> KeypointCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def keypoints_for(
    paths: Sequence[str | os.PathLike[str]],
    pose: MoveNet,
    cache: KeypointCache | None = None,
    *,
    batch: int = 256,
    workers: int = 1,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 17, 3)`` keypoints (``x, y, score`` in image pixels) and ``(N, 2)`` image sizes
    ``(width, height)`` of image files: cached ones read, the rest computed (``workers`` threads, one
    interpreter each) and committed ``batch`` at a time; ``on_batch(done, computed)`` reports progress."""
    from reidkit.imaging import to_rgb_array

    if cache is not None and cache.pose_id != pose.id:
        raise KeypointCacheError(f"{cache.path}: cache of pose model {cache.pose_id}, not {pose.id}")
    out = np.empty((len(paths), 17, 3), np.float32)
    sizes = np.empty((len(paths), 2), np.int32)
    computed = 0

    def one(p: str | os.PathLike[str]) -> tuple[int, int, np.ndarray]:
        rgb = to_rgb_array(p)
        return rgb.shape[1], rgb.shape[0], pose.predict_one(rgb)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for b in range(0, len(paths), batch):
            chunk = list(paths[b : b + batch])
            digests = [image_digest(p) for p in chunk]
            have = cache.get(digests) if cache is not None else {}
            todo = [i for i, d in enumerate(digests) if d not in have]
            rows = []
            for i, (w, h, kp) in zip(todo, pool.map(one, [chunk[i] for i in todo]), strict=True):
                have[digests[i]] = (w, h, kp)
                rows.append((digests[i], w, h, kp))
            if cache is not None and rows:
                cache.put(rows)
            computed += len(rows)
            for i, d in enumerate(digests):
                sizes[b + i] = have[d][:2]
                out[b + i] = have[d][2]
            if on_batch is not None:
                on_batch(b + len(chunk), computed)
    return out, sizes
