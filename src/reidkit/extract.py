"""Dataset -> features file: the query and gallery of a dataset through one :class:`Embedder`."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from reidkit.datasets.base import ReIDDataset, Sample
from reidkit.embed import Embedder, Resize
from reidkit.io import FeatureSet
from reidkit.models.zoo import ModelInfo, load_model

Backend = Literal["torch", "onnx", "onnx-int8"]


@dataclass
class ExtractStats:
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def make_embedder(
    model: str | None,
    weights: str | os.PathLike[str] | None,
    backend: Backend = "torch",
    batch_size: int = 32,
    flip: bool = False,
    threads: int | None = None,
    workers: int = 2,
    onnx_path: str | os.PathLike[str] | None = None,
    calibration: list[str] | None = None,
    normalize: bool = True,
    resize: Resize = "pil",
) -> tuple[Embedder, ModelInfo]:
    """An :class:`Embedder` for a checkpoint, on torch or ONNX Runtime (fp32 or static INT8).

    For the ONNX backends the model is exported to ``onnx_path``, or, if omitted, into the cache
    (:func:`onnx_cache_path`: exported once per weights file content, then reused); INT8 needs
    ``calibration`` image paths (its cached file is keyed on them too).
    """
    net, info = load_model(model, weights)
    kw = {
        "height": info.height,
        "width": info.width,
        "batch_size": batch_size,
        "flip": flip,
        "workers": workers,
        "normalize": normalize,
        "resize": resize,
    }
    if getattr(net, "in_channels", 3) != 3:  # HOReID: keypoint maps beside RGB, computed (and cached) as it embeds
        from reidkit.pose.source import KeypointSource

        kw["keypoints"] = KeypointSource()
    if backend == "torch":
        return Embedder.from_model(net, threads=threads, **kw), info  # type: ignore[arg-type]
    from reidkit.export import export_onnx, quantize_int8

    if backend not in ("onnx", "onnx-int8"):
        raise ValueError(f"backend must be torch, onnx or onnx-int8, got {backend!r}")
    if backend == "onnx-int8" and not calibration:
        raise ValueError("backend onnx-int8 needs calibration images")
    cached = onnx_path is None
    out = Path(onnx_path) if onnx_path else onnx_cache_path(info, weights)
    if not (cached and out.is_file()):
        export_onnx(net, out, height=info.height, width=info.width)
    if backend == "onnx-int8":
        key = hashlib.sha256("\n".join(map(str, calibration or ())).encode()).hexdigest()[:12]
        q = out.with_name(f"{out.stem}.int8-{key}.onnx")
        if not (cached and q.is_file()):
            quantize_int8(out, q, calibration or [], height=info.height, width=info.width)
        out = q
    return Embedder.from_onnx(out, threads=threads, **kw), info  # type: ignore[arg-type]


def onnx_cache_path(info: ModelInfo, weights: str | os.PathLike[str] | None) -> Path:
    """The cached ONNX file of a checkpoint: named by architecture, input size and a digest of the
    weights file's bytes plus the torch and reidkit versions (any change: a new export). Without a
    weights file (the shipped default model) the digest is of the default model's file."""
    from reidkit import __version__
    from reidkit.models.zoo import default_model_path
    from reidkit.paths import cache_root

    src = Path(weights) if weights is not None else Path(info.source) if info.source else default_model_path()
    digest = hashlib.sha256(src.read_bytes())
    digest.update(f"{torch.__version__} {__version__} {info.height}x{info.width}".encode())
    return cache_root() / "onnx" / f"{info.name}-{info.height}x{info.width}-{digest.hexdigest()[:16]}.onnx"


def _arrays(samples: list[Sample]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.array([s.pid for s in samples], dtype=np.int64),
        np.array([s.camid for s in samples], dtype=np.int64),
        np.array([s.path for s in samples]),
    )


def extract_dataset(
    embedder: Embedder, dataset: ReIDDataset, progress: bool = False
) -> tuple[FeatureSet, ExtractStats]:
    """Features of the dataset's query and (raw, junk included) gallery, with ids, cameras, paths."""
    q_pids, q_cams, q_paths = _arrays(dataset.query)
    g_pids, g_cams, g_paths = _arrays(dataset.gallery)
    t0 = time.perf_counter()
    feats = embedder.embed([*q_paths, *g_paths], progress=progress)
    seconds = time.perf_counter() - t0
    nq = len(q_paths)
    fs = FeatureSet(feats[:nq], feats[nq:], q_pids, g_pids, q_cams, g_cams, q_paths, g_paths)
    return fs, ExtractStats(len(feats), seconds)


def extract_features(
    model: str | None,
    weights: str | os.PathLike[str] | None,
    dataset: str,
    root: str | os.PathLike[str] | None = None,
    *,
    backend: Backend = "onnx",
    batch_size: int = 32,
    flip: bool = False,
    threads: int | None = None,
    raw: bool = False,
    resize: Resize = "pil",
    holdout: int = 0,
    progress: bool = False,
) -> tuple[FeatureSet, ModelInfo, ExtractStats]:
    """A checkpoint's features of a dataset's query and gallery (``reidkit extract`` and ``eval --weights``).

    ``holdout``: embed the last ``holdout`` training identities instead, as a query/gallery split (a
    config's ``data.holdout_ids``). ``raw``: the model's outputs, not L2-normalised. INT8 calibrates on
    about 256 training images spread over the split. Bad input raises DatasetError, FileNotFoundError,
    ValueError, WeightsMismatchError, ImageError, or ExportError (an ONNX backend that cannot export it).
    """
    from reidkit.datasets import get_dataset
    from reidkit.datasets.base import holdout_query_gallery, holdout_split

    ds = get_dataset(dataset, root)
    if holdout:
        ds.query, ds.gallery = holdout_query_gallery(holdout_split(ds.train, holdout)[1])
    calib = [s.path for s in ds.train[:: max(1, len(ds.train) // 256)]] if backend == "onnx-int8" else None
    embedder, info = make_embedder(
        model,
        weights,
        backend,
        batch_size=batch_size,
        flip=flip,
        threads=threads,
        calibration=calib,
        normalize=not raw,
        resize=resize,
    )
    fs, stats = extract_dataset(embedder, ds, progress=progress)
    return fs, info, stats
