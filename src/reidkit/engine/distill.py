"""Teacher embeddings for knowledge distillation (``loss.distill``), computed once and cached.

The teacher embeds every training image as the evaluation does (resized to the teacher's own input
size, no augmentation), averaged with its mirror image and L2-normalised, so one target serves the
flipped and unflipped views the train transform makes; a student may take another input size. The array
is cached in the run folder as ``teacher_features.npz`` with the
teacher file's content hash, the image list and the input size; a cache that does not match is
recomputed, so a resumed run reuses it and a changed teacher never serves stale targets. The files of
``loss.distill.ensemble`` are cached beside it (``teacher_features_<i>_<file stem>.npz``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from reidkit.config import DistillLossConfig
from reidkit.datasets.base import Sample
from reidkit.embed import Embedder, TorchBackend
from reidkit.io import atomic_path

__all__ = ["CACHE_NAME", "teacher_targets"]

CACHE_NAME = "teacher_features.npz"


def _cache_key(teacher: Path, model_name: str | None, samples: Sequence[Sample], height: int, width: int) -> str:
    # the file's content, not its time: a copy of the same weights (a fresh checkout) keeps its cache
    with open(teacher, "rb") as fh:
        content = hashlib.file_digest(fh, "sha256").hexdigest()
    h = hashlib.sha256(f"{content}|{model_name}|{height}x{width}".encode())
    for s in samples:
        h.update(f"\n{s.path}".encode())
    return h.hexdigest()


def _load_teacher(path: Path, model_name: str | None) -> tuple[torch.nn.Module, Any]:
    """The teacher model (``model_name``: its architecture when the file does not say, torchreid files)."""
    from reidkit.models.zoo import load_model

    if not path.is_file():
        raise FileNotFoundError(f"loss.distill: teacher weights file not found: {path}")
    model, info = load_model(model_name, path)
    if getattr(model, "in_channels", 3) != 3:
        raise ValueError(f"loss.distill: {path} embeds from keypoints too (HOReID); a teacher must embed RGB alone")
    return model, info


def _embeddings(
    path: Path,
    model_name: str | None,
    samples: Sequence[Sample],
    cache: Path,
    console: Console | None,
    batch_size: int,
) -> torch.Tensor:
    """``(len(samples), D)`` float32 unit rows: the flip-averaged embedding of each sample by the model in
    ``path``, at its own input size (its :class:`ModelInfo`; torchreid files are 256x128), cached in ``cache``."""
    t0 = time.perf_counter()
    model, info = _load_teacher(path, model_name)
    height, width = info.height, info.width
    key = _cache_key(path, model_name, samples, height, width)
    if cache.is_file():
        with np.load(cache) as z:
            if str(z["key"]) == key:
                return torch.from_numpy(np.ascontiguousarray(z["features"], dtype=np.float32))
    embedder = Embedder(TorchBackend(model), height, width, batch_size=batch_size, flip=True)
    feats = embedder.embed([s.path for s in samples]).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, key=np.array(key), features=feats)
    if console is not None:
        console.print(
            f"teacher {info.name} ({path.name}, {height}x{width}): {len(feats):,} x {feats.shape[1]} "
            f"embeddings in {time.perf_counter() - t0:.0f} s, cached in {cache}",
            highlight=False,
        )
    return torch.from_numpy(feats)


def teacher_targets(
    cfg: DistillLossConfig,
    samples: Sequence[Sample],
    *,
    cache_dir: Path,
    console: Console | None = None,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The teacher's embeddings of ``samples`` (see :func:`_embeddings`) and, with ``loss.distill.ensemble``, the
    relation term's target: the unit embeddings of the teacher and of each ensemble file (reidkit model files)
    side by side, each scaled by ``1 / sqrt(T)`` for ``T`` teachers, so that a row is unit length and the cosine
    similarity of two rows is the mean of the teachers' cosine similarities (``None`` without an ensemble)."""
    if not cfg.teacher:
        raise ValueError("loss.distill.teacher is not set")
    first = _embeddings(Path(cfg.teacher).expanduser(), cfg.teacher_model, samples, cache_dir / CACHE_NAME, console,
                        batch_size)  # fmt: skip
    if not cfg.ensemble:
        return first, None
    parts = [first]
    for i, name in enumerate(cfg.ensemble, 1):
        path = Path(name).expanduser()
        cache = cache_dir / f"{Path(CACHE_NAME).stem}_{i}_{path.stem}.npz"
        parts.append(_embeddings(path, None, samples, cache, console, batch_size))
    return first, torch.cat(parts, dim=1) / len(parts) ** 0.5
