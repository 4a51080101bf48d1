"""The Embedder: the one place where pixels become features (evaluation and search alike).

Images in: file paths, PIL images, numpy arrays (H x W x 3 uint8, RGB unless ``bgr=True``, e.g.
OpenCV frames) or tensors (3 x H x W, uint8 or float in [0, 1], RGB). Features out: float32,
L2-normalised rows. Backends: torch (channels-last, ``inference_mode``), ONNX Runtime or OpenVINO (the
same exported ONNX file, fp32 or QDQ INT8).

Scheduling on a CPU: with torch, decoding and resizing run in worker threads two batches ahead of
inference (torch parallelises each batch over its intra-op threads). ONNX Runtime instead runs
``threads`` single-threaded sessions side by side, each worker decoding, normalising and running a
batch of its own: a small model scales poorly across threads within one batch, and this keeps every
core busy without thread hand-offs (osnet_x0_25, 2 cores, batch 16: 1,302 vs 1,151 img/s
model-only; `bench/extract_speed.py` has the end-to-end figures).

Resizing is PIL's bilinear (``resize="pil"``, the default: the exact pixels of torchvision's
transforms, which reidkit and torchreid train with, and of torchreid's extractor) or OpenCV's
(``resize="cv2"``: decode + resize 3x faster on Market-1501's JPEGs, 0.10 vs 0.29 ms per image).
They differ by at most one grey level. On Market-1501, torchreid's osnet_x0_25 gives rank-1 / mAP
91.18 / 74.94 with either; the shipped model (trained on PIL's pixels) 86.10 / 67.41 with PIL and
86.10 / 67.34 with OpenCV, so OpenCV is an opt-in for speed.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import cv2
import numpy as np
import torch
from PIL import Image

from reidkit.imaging import ImageInput, to_pil, to_rgb_array
from reidkit.runtime import flush_denormals, tune_malloc

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Resize = Literal["cv2", "pil"]


class FeatureExtractor(Protocol):
    """What ingest and search need of an :class:`Embedder`: pictures in, (N, D) features out."""

    def embed(self, images: Sequence[Any], bgr: bool = False) -> np.ndarray: ...


class Preprocess:
    """Resize (bilinear, as torchreid and fast-reid), scale to [0, 1], normalise.

    ``resize`` (per image, in worker threads) gives H x W x 3 uint8, by OpenCV or PIL (``method``,
    see the module docstring); ``normalize_batch`` turns a stacked N x H x W x 3 uint8 batch into an
    N x 3 x H x W float32 tensor in one vectorised step, laid out channels-last (no copy for a
    channels-last model) or contiguous (``channels_last=False``, for ONNX Runtime). ``__call__``
    does both for one image and returns a 3 x H x W float32 array.
    """

    def __init__(
        self,
        height: int = 256,
        width: int = 128,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        method: Resize = "pil",
    ) -> None:
        if method not in ("cv2", "pil"):
            raise ValueError(f"resize method must be 'cv2' or 'pil', got {method!r}")
        self.size = (height, width)
        self.method = method
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)

    def resize(self, image: ImageInput, bgr: bool = False) -> np.ndarray:
        h, w = self.size
        if self.method == "pil":
            im = to_pil(image, bgr)
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            return np.array(im)  # writable, so torch can wrap it without a warning
        arr = to_rgb_array(image, bgr)
        if arr.shape[:2] != (h, w):
            return cv2.resize(np.ascontiguousarray(arr), (w, h), interpolation=cv2.INTER_LINEAR)
        return np.array(arr)

    def normalize_batch(self, batch: np.ndarray, channels_last: bool = True) -> torch.Tensor:
        x = torch.from_numpy(batch).permute(0, 3, 1, 2)
        if not channels_last:
            x = x.contiguous()  # transposing uint8 is 4x less memory traffic than float32
        return x.float().sub_(self.mean).mul_(self.inv_std)

    def __call__(self, image: ImageInput, bgr: bool = False) -> np.ndarray:
        return self.normalize_batch(self.resize(image, bgr)[None])[0].contiguous().numpy()


class Backend(Protocol):
    """Runs a normalised (N, 3, H, W) float32 batch through a model; returns (N, D) features.

    ``channels_last``: the layout it wants its input in. ``concurrency``: how many calls may run at
    once from different threads (1: one at a time, the backend parallelises inside a call).
    """

    channels_last: bool
    concurrency: int

    def __call__(self, batch: torch.Tensor) -> np.ndarray: ...


class TorchBackend:
    """A torch module on a device; channels-last and ``inference_mode`` on CPU."""

    concurrency = 1

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device = "cpu",
        channels_last: bool = True,
        threads: int | None = None,
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        if self.device.type == "cpu":
            flush_denormals()  # this thread and torch's pool, if it starts later (reidkit.runtime)
        self.channels_last = channels_last
        self.model = model.eval().to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        x = batch.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = self.model(x)
        if isinstance(out, dict):
            out = out["features"]
        return out.float().cpu().numpy()


class OnnxBackend:
    """An ONNX file run by ONNX Runtime on the CPU (input ``images``, output features).

    ``parallel=True`` (default): single-threaded runs, ``threads`` of them at once from the
    Embedder's workers (see the module docstring); ``False``: one run at a time over ``threads``
    intra-op threads.
    """

    channels_last = False

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None, parallel: bool = True) -> None:
        import onnxruntime as ort

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"ONNX model not found: {p}")
        threads = threads or os.cpu_count() or 1
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = 1 if parallel else threads
        opts.inter_op_num_threads = 1
        self.concurrency = threads if parallel else 1
        self.session = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.path = p
        shape = self.session.get_inputs()[0].shape
        self.in_channels = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else 3

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch.contiguous().numpy()})[0]


class OpenVinoBackend:
    """An ONNX file compiled by OpenVINO for the CPU (fp32, or INT8 where the file is a QDQ-quantised one:
    OpenVINO runs its quantised layers with its own INT8 kernels).

    Like :class:`OnnxBackend` in parallel mode: ``threads`` single-threaded streams, one batch each from the
    Embedder's workers at once, each worker thread with its own inference request.

    ``precision``: OpenVINO's inference precision for float layers; None (default) leaves OpenVINO's own
    choice, bf16 on a CPU that has it (AVX512-BF16, AMX), else f32. On this project's EPYC bf16 was 1.29x
    f32 for OSNet x0.25 at min cosine 0.998 to torch (BENCHMARKS.md, "int8_backends"); ``"f32"`` keeps
    torch's features to 1e-4.
    """

    channels_last = False

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None, precision: str | None = None) -> None:
        import openvino as ov

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"ONNX model not found: {p}")
        threads = threads or os.cpu_count() or 1
        core = ov.Core()
        model = core.read_model(str(p))
        shape = model.inputs[0].get_partial_shape()
        self.in_channels = shape[1].get_length() if shape.rank.get_length() == 4 and shape[1].is_static else 3
        config: dict[str, object] = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": threads,
            "PERFORMANCE_HINT": "THROUGHPUT",
        }
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        self.compiled = core.compile_model(model, "CPU", config)
        self.concurrency = threads
        self.path = p
        self._local = threading.local()

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        out = req.infer({0: batch.contiguous().numpy()})
        return np.array(next(iter(out.values())), dtype=np.float32)  # a copy: the request reuses its buffer


T = TypeVar("T")


def _ahead(starts: Iterable[int], submit: Callable[[int], T], depth: int) -> Iterator[T]:
    """``submit(start)`` for each start, in order, yielding each result while ``depth`` later ones
    are already submitted (bounded look-ahead: work overlaps, memory stays bounded)."""
    pending: deque[T] = deque()
    for start in starts:
        pending.append(submit(start))
        if len(pending) > depth:
            yield pending.popleft()
    while pending:
        yield pending.popleft()


PARALLEL_BATCH = 16  # batch size per worker when a backend runs several batches at once (L2-cache sized)


class Embedder:
    """Batched, prefetching feature extraction with optional flip test-time augmentation.

    ``normalize=False`` returns the raw model outputs (for protocols defined on them, e.g.
    torchreid's published Euclidean results); everything else in reidkit expects unit rows.
    ``resize``: ``"pil"`` (exact, default) or ``"cv2"`` (faster), see the module docstring.
    """

    def __init__(
        self,
        backend: Backend,
        height: int = 256,
        width: int = 128,
        batch_size: int = 32,
        flip: bool = False,
        workers: int = 2,
        normalize: bool = True,
        resize: Resize = "pil",
        keypoints: Any = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        tune_malloc()
        self.backend = backend
        self.preprocess = Preprocess(height, width, method=resize)
        self.batch_size = batch_size
        self.flip = flip
        self.workers = max(1, workers)
        self.normalize = normalize
        self.keypoints = keypoints  # a reidkit.pose.KeypointSource for models that read keypoint maps (HOReID)

    @classmethod
    def from_model(
        cls, model: torch.nn.Module, *, device: str = "cpu", threads: int | None = None, **kw: object
    ) -> Embedder:
        return cls(TorchBackend(model, device=device, threads=threads), **kw)  # type: ignore[arg-type]

    @classmethod
    def from_onnx(cls, path: str | os.PathLike[str], *, threads: int | None = None, **kw: object) -> Embedder:
        return cls(OnnxBackend(path, threads=threads), **kw)  # type: ignore[arg-type]

    @classmethod
    def from_openvino(cls, path: str | os.PathLike[str], *, threads: int | None = None, **kw: object) -> Embedder:
        return cls(OpenVinoBackend(path, threads=threads), **kw)  # type: ignore[arg-type]

    def _maps(self, images: Sequence[ImageInput], bgr: bool) -> np.ndarray | None:
        return None if self.keypoints is None else self.keypoints.maps(images, bgr, self.preprocess.size)

    def _run(self, batch: np.ndarray, maps: np.ndarray | None = None) -> np.ndarray:
        x = self.preprocess.normalize_batch(batch, getattr(self.backend, "channels_last", True))
        if maps is not None:  # keypoint channels after RGB (HOReID)
            x = torch.cat([x, torch.from_numpy(maps)], 1)
        elif getattr(self.backend, "in_channels", 3) != 3:
            raise ValueError(
                f"{self.backend.path}: this model takes {self.backend.in_channels} input channels (RGB + keypoint "
                "maps); give the Embedder its keypoint source (keypoints=reidkit.pose.KeypointSource())"
            )
        feats = self.backend(x)
        if self.flip:
            xf = torch.flip(x, dims=[3])
            if maps is not None:  # a mirrored person's left is its right
                from reidkit.pose.skeleton import FLIP_NODES

                xf = torch.cat([xf[:, :3], xf[:, 3:][:, list(FLIP_NODES)]], 1)
            feats = feats + self.backend(xf)
        feats = np.asarray(feats, dtype=np.float32)
        if not self.normalize:
            return feats
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)

    def _prepared_batches(
        self, images: Sequence[ImageInput], bgr: bool
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Batches of resized uint8 images (N, H, W, 3) (and keypoint maps, for HOReID), decoded by
        worker threads two batches ahead."""
        size = self.batch_size
        with ThreadPoolExecutor(self.workers, thread_name_prefix="reidkit-decode") as pool:

            def submit(start: int) -> tuple[list[Future[np.ndarray]], Future[np.ndarray | None]]:
                chunk = images[start : start + size]
                resized = [pool.submit(self.preprocess.resize, im, bgr) for im in chunk]
                return resized, pool.submit(self._maps, chunk, bgr)

            for futures, maps in _ahead(range(0, len(images), size), submit, 2):
                yield np.stack([f.result() for f in futures]), maps.result()

    def _prepare_and_run(self, chunk: Sequence[ImageInput], bgr: bool) -> np.ndarray:
        return self._run(np.stack([self.preprocess.resize(im, bgr) for im in chunk]), self._maps(chunk, bgr))

    def _feature_batches(self, images: Sequence[ImageInput], bgr: bool) -> Iterator[np.ndarray]:
        """Features batch by batch, in input order (scheduling: see the module docstring)."""
        n_par = int(getattr(self.backend, "concurrency", 1))
        if n_par <= 1:
            for batch, maps in self._prepared_batches(images, bgr):
                yield self._run(batch, maps)
            return
        size = min(self.batch_size, PARALLEL_BATCH)
        # each worker flushes denormals for itself only (reidkit.runtime): the caller's thread is left alone
        with ThreadPoolExecutor(n_par, thread_name_prefix="reidkit-embed", initializer=flush_denormals) as pool:

            def submit(start: int) -> Future[np.ndarray]:
                return pool.submit(self._prepare_and_run, images[start : start + size], bgr)

            for future in _ahead(range(0, len(images), size), submit, 2 * n_par):
                yield future.result()

    def embed(
        self,
        images: Sequence[ImageInput],
        bgr: bool = False,
        progress: bool | Callable[[int], None] = False,
    ) -> np.ndarray:
        """(N, D) float32 L2-normalised features, in input order.

        ``progress``: True for a progress bar (rate, ETA), or a callback given the number of images
        just finished.
        """
        if len(images) == 0:
            raise ValueError("no images to embed")
        out: list[np.ndarray] = []
        if progress is True:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            columns = (
                TextColumn("embedding"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
            )
            with Progress(*columns, transient=False) as bar:
                task = bar.add_task("embed", total=len(images), rate="")
                for feats in self._feature_batches(images, bgr):
                    out.append(feats)
                    speed = bar.tasks[0].speed
                    bar.update(task, advance=len(feats), rate=f"{speed:6.1f} img/s" if speed else "")
        else:
            for feats in self._feature_batches(images, bgr):
                out.append(feats)
                if callable(progress):
                    progress(len(feats))
        return np.concatenate(out)

    def __call__(self, images: Sequence[ImageInput], bgr: bool = False) -> np.ndarray:
        return self.embed(images, bgr=bgr)
