"""Teacher embeddings for knowledge distillation (``loss.distill``), computed once and cached.

The teacher embeds every training image as the evaluation does (resized to the teacher's own input
size, no augmentation), averaged with its mirror image and L2-normalised, so one target serves the
flipped and unflipped views the train transform makes; a student may take another input size. The array
is cached in the run folder as ``teacher_features.npz`` with the
teacher file's size and time, the image list and the input size; a cache that does not match is
recomputed, so a resumed run reuses it and a changed teacher never serves stale targets.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from reidkit.config import DistillLossConfig
from reidkit.datasets.base import Sample
from reidkit.embed import Embedder, TorchBackend
from reidkit.io import atomic_path

__all__ = ["CACHE_NAME", "teacher_embeddings"]

CACHE_NAME = "teacher_features.npz"


def _cache_key(cfg: DistillLossConfig, samples: Sequence[Sample], height: int, width: int) -> str:
    teacher = Path(str(cfg.teacher)).expanduser()
    st = teacher.stat()
    h = hashlib.sha256(
        f"{teacher.resolve()}|{st.st_size}|{st.st_mtime_ns}|{cfg.teacher_model}|{height}x{width}".encode()
    )
    for s in samples:
        h.update(f"\n{s.path}".encode())
    return h.hexdigest()


def teacher_embeddings(
    cfg: DistillLossConfig,
    samples: Sequence[Sample],
    *,
    cache_dir: Path,
    console: Console | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """``(len(samples), D)`` float32 unit rows: the teacher's flip-averaged embedding of each sample, at the
    teacher's own input size (its :class:`ModelInfo`; torchreid files are 256x128)."""
    from reidkit.models.zoo import load_model

    if not cfg.teacher:
        raise ValueError("loss.distill.teacher is not set")
    teacher_path = Path(cfg.teacher).expanduser()
    if not teacher_path.is_file():
        raise FileNotFoundError(f"loss.distill.teacher: weights file not found: {teacher_path}")
    t0 = time.perf_counter()
    model, info = load_model(cfg.teacher_model, teacher_path)
    height, width = info.height, info.width
    key = _cache_key(cfg, samples, height, width)
    cache = cache_dir / CACHE_NAME
    if cache.is_file():
        with np.load(cache) as z:
            if str(z["key"]) == key:
                return torch.from_numpy(np.ascontiguousarray(z["features"], dtype=np.float32))
    embedder = Embedder(TorchBackend(model), height, width, batch_size=batch_size, flip=True)
    feats = embedder.embed([s.path for s in samples]).astype(np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, key=np.array(key), features=feats)
    if console is not None:
        console.print(
            f"teacher {info.name} ({teacher_path.name}, {height}x{width}): {len(feats):,} x {feats.shape[1]} "
            f"embeddings in {time.perf_counter() - t0:.0f} s, cached in {cache}",
            highlight=False,
        )
    return torch.from_numpy(feats)
