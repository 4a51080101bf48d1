"""Dataset -> features file: the query and gallery of a dataset through one :class:`Embedder`."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

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

    For the ONNX backends the model is exported to ``onnx_path`` (a temporary file if omitted);
    INT8 needs ``calibration`` image paths.
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
    if backend == "torch":
        return Embedder.from_model(net, threads=threads, **kw), info  # type: ignore[arg-type]
    from reidkit.export import export_onnx, quantize_int8

    out = Path(onnx_path) if onnx_path else Path(tempfile.mkdtemp(prefix="reidkit-")) / f"{info.name}.onnx"
    export_onnx(net, out, height=info.height, width=info.width)
    if backend == "onnx-int8":
        if not calibration:
            raise ValueError("backend onnx-int8 needs calibration images")
        q = out.with_name(out.stem + ".int8.onnx")
        quantize_int8(out, q, calibration, height=info.height, width=info.width)
        out = q
    elif backend != "onnx":
        raise ValueError(f"backend must be torch, onnx or onnx-int8, got {backend!r}")
    return Embedder.from_onnx(out, threads=threads, **kw), info  # type: ignore[arg-type]


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
