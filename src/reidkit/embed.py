"""The Embedder: the one place where pixels become features (evaluation and search alike).

Images in: file paths, PIL images, numpy arrays (H x W x 3 uint8, RGB unless ``bgr=True``, e.g.
OpenCV frames) or tensors (3 x H x W, uint8 or float in [0, 1], RGB). Features out: float32,
L2-normalised rows. Decoding and resizing run in worker threads one batch ahead of inference.
Backends: torch (channels-last, ``inference_mode``) or ONNX Runtime.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

ImageInput = str | os.PathLike[str] | Image.Image | np.ndarray | torch.Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageError(ValueError):
    """An input image is missing, unreadable or of an unexpected shape (the message names it)."""


def to_pil(image: ImageInput, bgr: bool = False) -> Image.Image:
    """Any supported input as an RGB PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, str | os.PathLike):
        try:
            with Image.open(image) as im:
                return im.convert("RGB")
        except FileNotFoundError:
            raise ImageError(f"{image}: no such image file") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise ImageError(f"{image}: not a readable image ({exc})") from None
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim != 3 or t.shape[0] != 3:
            raise ImageError(f"tensor image must be 3 x H x W (RGB), got shape {tuple(t.shape)}")
        if t.is_floating_point():
            t = (t.clamp(0, 1) * 255).round()
        return Image.fromarray(t.to(torch.uint8).permute(1, 2, 0).numpy())
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ImageError(f"array image must be H x W x 3 uint8, got {image.dtype} {image.shape}")
        return Image.fromarray(image[:, :, ::-1] if bgr else image)
    raise ImageError(f"unsupported image type {type(image).__name__}")


class Preprocess:
    """Resize (bilinear, as torchreid and fast-reid), scale to [0, 1], normalise.

    ``resize`` (per image, in worker threads) gives H x W x 3 uint8; ``normalize_batch`` turns a
    stacked N x H x W x 3 uint8 batch into an N x 3 x H x W float32 tensor in one vectorised step,
    laid out channels-last (no copy is needed for a channels-last model). ``__call__`` does both for
    one image and returns a 3 x H x W float32 array.
    """

    def __init__(
        self,
        height: int = 256,
        width: int = 128,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.size = (height, width)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)

    def resize(self, image: ImageInput, bgr: bool = False) -> np.ndarray:
        im = to_pil(image, bgr)
        h, w = self.size
        if im.size != (w, h):
            im = im.resize((w, h), Image.Resampling.BILINEAR)
        return np.array(im)  # writable, so torch can wrap it without a warning

    def normalize_batch(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
        return x.sub_(self.mean).mul_(self.inv_std)

    def __call__(self, image: ImageInput, bgr: bool = False) -> np.ndarray:
        return self.normalize_batch(self.resize(image, bgr)[None])[0].contiguous().numpy()


class Backend(Protocol):
    """Runs a normalised (N, 3, H, W) float32 batch through a model; returns (N, D) features."""

    def __call__(self, batch: torch.Tensor) -> np.ndarray: ...


class TorchBackend:
    """A torch module on a device; channels-last and ``inference_mode`` on CPU."""

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
    """An ONNX file run by ONNX Runtime on the CPU (input ``images``, output features)."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        import onnxruntime as ort

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"ONNX model not found: {p}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch.contiguous().numpy()})[0]


class Embedder:
    """Batched, prefetching feature extraction with optional flip test-time augmentation.

    ``normalize=False`` returns the raw model outputs (for protocols defined on them, e.g.
    torchreid's published Euclidean results); everything else in reidkit expects unit rows.
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
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.backend = backend
        self.preprocess = Preprocess(height, width)
        self.batch_size = batch_size
        self.flip = flip
        self.workers = max(1, workers)
        self.normalize = normalize

    @classmethod
    def from_model(
        cls, model: torch.nn.Module, *, device: str = "cpu", threads: int | None = None, **kw: object
    ) -> Embedder:
        return cls(TorchBackend(model, device=device, threads=threads), **kw)  # type: ignore[arg-type]

    @classmethod
    def from_onnx(cls, path: str | os.PathLike[str], *, threads: int | None = None, **kw: object) -> Embedder:
        return cls(OnnxBackend(path, threads=threads), **kw)  # type: ignore[arg-type]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        x = self.preprocess.normalize_batch(batch)
        feats = self.backend(x)
        if self.flip:
            feats = feats + self.backend(torch.flip(x, dims=[3]))
        feats = np.asarray(feats, dtype=np.float32)
        if not self.normalize:
            return feats
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)

    def _prepared_batches(self, images: Sequence[ImageInput], bgr: bool) -> Iterator[np.ndarray]:
        """Batches of resized uint8 images (N, H, W, 3), decoded by worker threads two batches ahead."""
        starts = range(0, len(images), self.batch_size)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="reidkit-decode") as pool:
            pending: deque[list[Future[np.ndarray]]] = deque()

            def submit(start: int) -> None:
                chunk = images[start : start + self.batch_size]
                pending.append([pool.submit(self.preprocess.resize, im, bgr) for im in chunk])

            it = iter(starts)
            for start in it:
                submit(start)
                if len(pending) >= 2:
                    break
            while pending:
                futures = pending.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    submit(nxt)
                yield np.stack([f.result() for f in futures])

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
                for batch in self._prepared_batches(images, bgr):
                    out.append(self._run(batch))
                    speed = bar.tasks[0].speed
                    bar.update(task, advance=len(batch), rate=f"{speed:6.1f} img/s" if speed else "")
        else:
            for batch in self._prepared_batches(images, bgr):
                out.append(self._run(batch))
                if callable(progress):
                    progress(len(batch))
        return np.concatenate(out)

    def __call__(self, images: Sequence[ImageInput], bgr: bool = False) -> np.ndarray:
        return self.embed(images, bgr=bgr)
