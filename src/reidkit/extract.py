"""Dataset -> features file: the query and gallery of a dataset through one :class:`Embedder`."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from reidkit.datasets.base import ReIDDataset, Sample
from reidkit.embed import Embedder, Resize
from reidkit.io import FeatureSet
from reidkit.models.zoo import ModelInfo, load_model

Backend = Literal["torch", "onnx", "onnx-int8", "openvino", "openvino-int8"]
BACKEND_NAMES: tuple[str, ...] = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8")


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
    """An :class:`Embedder` for a checkpoint, on torch, ONNX Runtime or OpenVINO (fp32 or static INT8).

    For the ONNX and OpenVINO backends the model is exported to ``onnx_path``, or, if omitted, into the
    cache (:func:`onnx_cache_path`: exported once per weights file content, then reused). INT8 is a QDQ
    file (:func:`reidkit.export.quantize_int8`, calibrated on ``calibration`` image paths; its cached file
    is keyed on them too). ``openvino-int8`` (and ``onnx-int8`` on a CPU with VNNI) runs the QDQ file shipped
    beside the weights where there is one (:func:`shipped_int8_path`: the default model has one), else
    quantises on ``calibration``.
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
    from reidkit.export import DEFAULT_CALIBRATION, cpu_has_vnni, export_onnx, quantize_int8

    if backend not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {', '.join(BACKEND_NAMES)}, got {backend!r}")
    run = Embedder.from_openvino if backend.startswith("openvino") else Embedder.from_onnx
    # ONNX Runtime's INT8 path saturates with 8-bit weights on CPUs without VNNI (quantize_int8): there it
    # quantises its own file with 7-bit weights
    use_shipped = backend == "openvino-int8" or (backend == "onnx-int8" and cpu_has_vnni())
    shipped = shipped_int8_path(info, weights) if use_shipped else None
    if shipped is not None:
        return run(shipped, threads=threads, **kw), info  # type: ignore[arg-type]
    if backend == "openvino-int8" and not calibration:
        raise ValueError(
            f"backend openvino-int8 needs calibration images, or a QDQ file beside the weights "
            f"({_int8_name(info, weights)}: reidkit export --weights W --onnx M.onnx --int8 that file)"
        )
    if backend.endswith("-int8") and not calibration:
        raise ValueError(f"backend {backend} needs calibration images")
    cached = onnx_path is None
    out = Path(onnx_path) if onnx_path else onnx_cache_path(info, weights)
    if not (cached and out.is_file()):
        export_onnx(net, out, height=info.height, width=info.width)
    if backend.endswith("-int8"):
        # the 7-bit-weight choice depends on this CPU (quantize_int8): part of the cached file's key
        key_text = "\n".join(map(str, calibration or ())) + f"\nvnni={cpu_has_vnni()}\n{DEFAULT_CALIBRATION}"
        key = hashlib.sha256(key_text.encode()).hexdigest()[:12]
        q = out.with_name(f"{out.stem}.int8-{key}.onnx")
        if not (cached and q.is_file()):
            quantize_int8(out, q, calibration or [], height=info.height, width=info.width)
        out = q
    return run(out, threads=threads, **kw), info  # type: ignore[arg-type]


def _weights_file(info: ModelInfo, weights: str | os.PathLike[str] | None) -> Path:
    from reidkit.models.zoo import default_model_path

    return Path(weights) if weights is not None else Path(info.source) if info.source else default_model_path()


def _int8_name(info: ModelInfo, weights: str | os.PathLike[str] | None) -> Path:
    w = _weights_file(info, weights)
    return w.with_name(f"{w.name.removesuffix('.pth')}.int8.onnx")


def shipped_int8_path(info: ModelInfo, weights: str | os.PathLike[str] | None) -> Path | None:
    """The QDQ INT8 file beside a weights file (``NAME.pth`` -> ``NAME.int8.onnx``), if there is one."""
    p = _int8_name(info, weights)
    return p if p.is_file() else None


def onnx_cache_path(info: ModelInfo, weights: str | os.PathLike[str] | None) -> Path:
    """The cached ONNX file of a checkpoint: named by architecture, input size and a digest of the
    weights file's bytes plus the torch and reidkit versions (any change: a new export). Without a
    weights file (the shipped default model) the digest is of the default model's file."""
    from reidkit import __version__
    from reidkit.paths import cache_root

    src = _weights_file(info, weights)
    digest = hashlib.sha256(src.read_bytes())
    digest.update(f"{torch.__version__} {__version__} {info.height}x{info.width}".encode())
    return cache_root() / "onnx" / f"{info.name}-{info.height}x{info.width}-{digest.hexdigest()[:16]}.onnx"


def _arrays(samples: list[Sample]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.array([s.pid for s in samples], dtype=np.int64),
        np.array([s.camid for s in samples], dtype=np.int64),
        np.array([s.path for s in samples]),
    )


class _ShardWorker:
    """A Ray worker of :func:`embed_on_ray`: one embedder, built once, embedding shard after shard."""

    def __init__(self, args: tuple, kwargs: dict) -> None:
        self.embedder, _ = make_embedder(*args, **kwargs)

    def embed(self, paths: list[str]) -> np.ndarray:
        return self.embedder.embed(paths)


def embed_on_ray(
    paths: list[str],
    args: tuple,
    kwargs: dict,
    *,
    address: str | None = None,
    workers: int | None = None,
    shard: int = 1024,
    cpus_per_worker: float = 1.0,
    progress: bool = False,
) -> np.ndarray:
    """Features of ``paths`` computed on a Ray cluster by ``workers`` actors (default: its CPUs), each with the
    embedder ``make_embedder(*args, **kwargs)``, in input order. Shards are whole numbers of batches, so every
    image meets the same batch companions as on one machine: with the same threads, the same features.
    Every node must read ``paths`` (a shared folder). RayUnavailable when the cluster cannot be reached."""
    from reidkit.raycluster import connect, worker_threads

    ray = connect(address)
    kwargs = {**kwargs, "threads": worker_threads(kwargs.get("threads"), cpus_per_worker)}
    batch = int(kwargs.get("batch_size", 32))
    shard = max(batch, shard // batch * batch)
    shards = [paths[i : i + shard] for i in range(0, len(paths), shard)]
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker))
    actor_cls = ray.remote(num_cpus=cpus_per_worker, max_restarts=2, max_task_retries=2)(_ShardWorker)
    actors = [actor_cls.remote(args, kwargs) for _ in range(max(1, min(workers, len(shards))))]
    try:
        from ray.util import ActorPool
        from rich.progress import Progress

        out: list[np.ndarray] = []
        with Progress(disable=not progress, transient=False) as bar:
            task = bar.add_task(f"embedding on {len(actors)} Ray workers", total=len(paths))
            for feats in ActorPool(actors).map(lambda a, s: a.embed.remote(s), shards):
                out.append(feats)
                bar.update(task, advance=len(feats))
        return np.concatenate(out)
    finally:
        for a in actors:
            ray.kill(a)


def extract_dataset(
    embedder: Embedder | None, dataset: ReIDDataset, progress: bool = False, embed: Any = None
) -> tuple[FeatureSet, ExtractStats]:
    """Features of the dataset's query and (raw, junk included) gallery, with ids, cameras, paths
    (``embed``: a function of the paths that replaces ``embedder.embed``, e.g. on Ray)."""
    q_pids, q_cams, q_paths = _arrays(dataset.query)
    g_pids, g_cams, g_paths = _arrays(dataset.gallery)
    t0 = time.perf_counter()
    paths = [*q_paths, *g_paths]
    feats = embed(paths) if embed is not None else embedder.embed(paths, progress=progress)  # type: ignore[union-attr]
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
    distractors: bool = False,
    progress: bool = False,
    ray: str | None = None,
    workers: int | None = None,
) -> tuple[FeatureSet, ModelInfo, ExtractStats]:
    """A checkpoint's features of a dataset's query and gallery (``reidkit extract`` and ``eval --weights``).

    ``holdout``: embed the last ``holdout`` training identities instead, as a query/gallery split (a
    config's ``data.holdout_ids``); ``distractors``: with it, every image of the other (trained) identities
    joins that gallery, a held-out test about as crowded as Market's test split. ``raw``: the model's outputs,
    not L2-normalised. INT8 calibrates on about 256 training images spread over the split. Bad input raises
    DatasetError, FileNotFoundError, ValueError, WeightsMismatchError, ImageError, or ExportError (an ONNX
    backend that cannot export it).
    ``ray``: embed on the Ray cluster at that address (:func:`embed_on_ray`, ``workers`` actors) instead, with
    the same features; RayUnavailable when it cannot be reached.
    """
    from reidkit.datasets import get_dataset
    from reidkit.datasets.base import holdout_query_gallery, holdout_split

    ds = get_dataset(dataset, root)
    if distractors and not holdout:
        raise ValueError("distractors (the trained identities' images) need a held-out split: holdout > 0")
    if holdout:
        kept, held = holdout_split(ds.train, holdout)
        ds.query, ds.gallery = holdout_query_gallery(held, kept if distractors else ())
    calib = [s.path for s in ds.train[:: max(1, len(ds.train) // 256)]] if backend.endswith("-int8") else None
    args = (model, weights, backend)
    kwargs = dict(batch_size=batch_size, flip=flip, threads=threads, calibration=calib, normalize=not raw,
                  resize=resize)  # fmt: skip
    if ray is None:
        embedder, info = make_embedder(*args, **kwargs)  # type: ignore[arg-type]
        fs, stats = extract_dataset(embedder, ds, progress=progress)
        return fs, info, stats
    # On Ray: the ONNX file is exported here once (each node's workers then find it in the cache).
    info = make_embedder(*args, **kwargs)[1] if backend != "torch" else load_model(model, weights)[1]  # type: ignore[arg-type]
    fs, stats = extract_dataset(None, ds, embed=lambda paths: embed_on_ray(
        paths, args, kwargs, address=ray, workers=workers, progress=progress))  # fmt: skip
    return fs, info, stats
