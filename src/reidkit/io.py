"""Crash-safe file writing and the saved-features file format (``.npz``).

A features file holds ``qf``, ``gf`` (float arrays, one row per image), ``q_pids``, ``g_pids``,
``q_camids``, ``g_camids`` and optionally ``q_paths``, ``g_paths``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FEATURE_KEYS = ("qf", "gf", "q_pids", "g_pids", "q_camids", "g_camids")


class FeatureFileError(ValueError):
    """A features file is missing, unreadable or malformed (the message names it)."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make every written file private
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


@dataclass
class FeatureSet:
    """Query and gallery features with their identities and cameras."""

    qf: np.ndarray
    gf: np.ndarray
    q_pids: np.ndarray
    g_pids: np.ndarray
    q_camids: np.ndarray
    g_camids: np.ndarray
    q_paths: np.ndarray | None = None
    g_paths: np.ndarray | None = None


def save_features(path: str | os.PathLike[str], fs: FeatureSet) -> None:
    """Write a features file atomically (float32 features, int64 ids)."""
    arrays: dict[str, np.ndarray] = {
        "qf": np.asarray(fs.qf, dtype=np.float32),
        "gf": np.asarray(fs.gf, dtype=np.float32),
        "q_pids": np.asarray(fs.q_pids, dtype=np.int64),
        "g_pids": np.asarray(fs.g_pids, dtype=np.int64),
        "q_camids": np.asarray(fs.q_camids, dtype=np.int64),
        "g_camids": np.asarray(fs.g_camids, dtype=np.int64),
    }
    if fs.q_paths is not None and fs.g_paths is not None:
        arrays["q_paths"] = np.asarray(fs.q_paths, dtype=str)
        arrays["g_paths"] = np.asarray(fs.g_paths, dtype=str)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def load_features(path: str | os.PathLike[str]) -> FeatureSet:
    """Read and validate a features file; raise :class:`FeatureFileError` naming what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise FeatureFileError(f"{p}: no such features file (expected an .npz with {FEATURE_KEYS})")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as exc:  # zipfile/pickle/format errors all mean "not our file"
        raise FeatureFileError(f"{p}: not a readable .npz features file ({exc})") from exc
    with data:
        missing = [k for k in FEATURE_KEYS if k not in data.files]
        if missing:
            raise FeatureFileError(
                f"{p}: missing keys {missing}; expected {list(FEATURE_KEYS)} (found {data.files})"
            )
        arr = {k: data[k] for k in data.files}
    for side in ("q", "g"):
        f = arr[f"{side}f"]
        if f.ndim != 2 or not np.issubdtype(f.dtype, np.floating):
            raise FeatureFileError(f"{p}: '{side}f' must be a 2-D float array, got {f.dtype} {f.shape}")
        for key in (f"{side}_pids", f"{side}_camids"):
            a = arr[key]
            if a.ndim != 1 or len(a) != len(f) or not np.issubdtype(a.dtype, np.integer):
                raise FeatureFileError(
                    f"{p}: '{key}' must be {len(f)} integers (one per row of '{side}f'), "
                    f"got {a.dtype} {a.shape}"
                )
        if not np.isfinite(f).all():
            raise FeatureFileError(f"{p}: '{side}f' contains NaN or infinite values")
    if arr["qf"].shape[1] != arr["gf"].shape[1]:
        raise FeatureFileError(
            f"{p}: 'qf' has {arr['qf'].shape[1]} columns but 'gf' has {arr['gf'].shape[1]}"
        )
    return FeatureSet(
        **{k: arr[k] for k in FEATURE_KEYS}, q_paths=arr.get("q_paths"), g_paths=arr.get("g_paths")
    )
