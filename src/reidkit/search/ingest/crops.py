"""Pick the few best person crops of each track for embedding.

A crop's quality (0..1) mixes its box height (people shorter than ``target_height`` px carry
little identity), sharpness (variance of the Laplacian at a fixed height, squashed to 0..1) and the
detector's score; boxes touching the frame border (cut-off people) are penalised. Per track,
:class:`TrackCropper` keeps at most ``max_crops`` crops, at least ``min_gap_s`` seconds apart, so
a track that lingers contributes different poses rather than near-duplicate frames.

:func:`iter_track_crops` wires a frame source, a detector and one tracker + cropper per camera
together and yields each track's crops once it ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from reidkit.search.ingest.detect import Box, Detector
from reidkit.search.ingest.sources import Frame
from reidkit.search.ingest.track import Tracker


@dataclass(frozen=True, slots=True, eq=False)
class Crop:
    """A padded person crop; ``box`` is the padded, clipped crop rectangle in frame pixels."""

    image_bgr: np.ndarray
    box: tuple[int, int, int, int]
    score: float
    quality: float
    timestamp: float
    frame_index: int


@dataclass(slots=True, eq=False)
class TrackCrops:
    """The chosen crops of one finished track (in time order) and the track's time span."""

    track_id: int
    crops: list[Crop]
    camera: str = ""
    first_timestamp: float = 0.0
    last_timestamp: float = 0.0
    first_frame: int = 0
    last_frame: int = 0
    num_boxes: int = 0


@dataclass(frozen=True)
class CropQuality:
    """Weights and scales of the crop quality score."""

    target_height: float = 256.0  # box height (px) that scores full marks for size
    sharpness_ref: float = 150.0  # Laplacian variance that scores 0.5
    sharpness_height: int = 128  # crops are resized to this height before measuring sharpness
    border_margin: int = 2  # px: a box this close to the frame edge is "touching" it
    border_penalty: float = 0.5  # quality multiplier for border-touching boxes
    w_size: float = 0.4
    w_sharpness: float = 0.35
    w_score: float = 0.25

    def sharpness(self, image_bgr: np.ndarray) -> float:
        """Variance of the Laplacian of the grey crop at ``sharpness_height`` px tall."""
        if image_bgr.size == 0:
            return 0.0
        grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
        h, w = grey.shape[:2]
        s = self.sharpness_height / h
        grey = cv2.resize(grey, (max(1, round(w * s)), self.sharpness_height), interpolation=cv2.INTER_AREA)
        return float(cv2.Laplacian(grey, cv2.CV_64F).var())

    def touches_border(self, box: Box, frame_shape: tuple[int, ...]) -> bool:
        h, w = frame_shape[:2]
        m = self.border_margin
        return box[0] <= m or box[1] <= m or box[2] >= w - m or box[3] >= h - m

    def __call__(self, frame_bgr: np.ndarray, box: Box, score: float) -> float:
        x1, y1, x2, y2 = clip_box(box, frame_bgr.shape)
        if x2 <= x1 or y2 <= y1:
            return 0.0
        size = min(1.0, (y2 - y1) / self.target_height)
        sharp = self.sharpness(frame_bgr[y1:y2, x1:x2])
        sharp = sharp / (sharp + self.sharpness_ref)
        q = self.w_size * size + self.w_sharpness * sharp + self.w_score * float(np.clip(score, 0.0, 1.0))
        q /= self.w_size + self.w_sharpness + self.w_score
        return q * (self.border_penalty if self.touches_border(box, frame_bgr.shape) else 1.0)


def clip_box(box: Box, frame_shape: tuple[int, ...], pad: float = 0.0) -> tuple[int, int, int, int]:
    """``box`` grown by ``pad`` x its width/height on each side, rounded and clipped to the frame."""
    h, w = frame_shape[:2]
    bw, bh = box[2] - box[0], box[3] - box[1]
    x1 = int(np.floor(box[0] - pad * bw))
    y1 = int(np.floor(box[1] - pad * bh))
    x2 = int(np.ceil(box[2] + pad * bw))
    y2 = int(np.ceil(box[3] + pad * bh))
    return max(0, x1), max(0, y1), min(w, x2), min(h, y2)


@dataclass
class _TrackState:
    crops: list[Crop] = field(default_factory=list)
    first_timestamp: float = 0.0
    last_timestamp: float = 0.0
    first_frame: int = 0
    last_frame: int = 0
    num_boxes: int = 0


class TrackCropper:
    """Keeps the best ``max_crops`` crops per track, spread at least ``min_gap_s`` seconds apart.

    A new crop within ``min_gap_s`` of kept ones replaces them only if it beats them all; otherwise
    it fills a free slot or replaces the worst kept crop when better. Crops are padded by ``pad``.
    """

    def __init__(
        self,
        max_crops: int = 4,
        min_gap_s: float = 0.5,
        pad: float = 0.05,
        min_quality: float = 0.0,
        quality: CropQuality | None = None,
        camera: str = "",
    ) -> None:
        if max_crops < 1:
            raise ValueError(f"max_crops must be >= 1, got {max_crops}")
        self.max_crops, self.min_gap_s, self.pad, self.min_quality = max_crops, min_gap_s, pad, min_quality
        self.quality = quality or CropQuality()
        self.camera = camera
        self._tracks: dict[int, _TrackState] = {}

    @property
    def track_ids(self) -> set[int]:
        return set(self._tracks)

    def add(
        self, track_id: int, frame: np.ndarray, box: Box, score: float, timestamp: float, frame_index: int
    ) -> float:
        """Offer one tracked box of ``frame`` (BGR); returns its quality (whether kept or not)."""
        st = self._tracks.get(track_id)
        if st is None:
            st = self._tracks[track_id] = _TrackState(first_timestamp=timestamp, first_frame=frame_index)
        st.last_timestamp, st.last_frame = timestamp, frame_index
        st.num_boxes += 1
        q = self.quality(frame, box, score)
        if q < self.min_quality:
            return q
        near = [c for c in st.crops if abs(c.timestamp - timestamp) < self.min_gap_s]
        if near:
            if q <= max(c.quality for c in near):
                return q
            st.crops = [c for c in st.crops if all(c is not n for n in near)]
        elif len(st.crops) >= self.max_crops:
            worst = min(st.crops, key=lambda c: c.quality)
            if q <= worst.quality:
                return q
            st.crops = [c for c in st.crops if c is not worst]
        x1, y1, x2, y2 = clip_box(box, frame.shape, self.pad)
        st.crops.append(Crop(frame[y1:y2, x1:x2].copy(), (x1, y1, x2, y2), float(score), q, timestamp, frame_index))
        return q

    def _pop(self, track_id: int) -> TrackCrops:
        st = self._tracks.pop(track_id)
        crops = sorted(st.crops, key=lambda c: c.frame_index)
        return TrackCrops(
            track_id,
            crops,
            self.camera,
            st.first_timestamp,
            st.last_timestamp,
            st.first_frame,
            st.last_frame,
            st.num_boxes,
        )

    def pop_finished(self, active_ids: Iterable[int]) -> list[TrackCrops]:
        """Remove and return the tracks not in ``active_ids`` (e.g. ``Tracker.active_ids``)."""
        active = set(active_ids)
        return [self._pop(t) for t in sorted(self._tracks) if t not in active]

    def flush(self) -> list[TrackCrops]:
        """Remove and return every track (end of the source)."""
        return self.pop_finished(())


def iter_track_crops(
    frames: Iterable[Frame],
    detector: Detector,
    tracker_factory: Callable[[], Tracker] = Tracker,
    cropper_factory: Callable[[str], TrackCropper] = lambda camera: TrackCropper(camera=camera),
) -> Iterator[TrackCrops]:
    """Detect, track per camera and yield each track's best crops as soon as the track ends.

    A camera whose frame index goes backwards (a new file under the same camera id) starts over.
    """
    state: dict[str, tuple[Tracker, TrackCropper, int]] = {}
    for frame in frames:
        cam = frame.camera
        if cam in state and frame.frame_index <= state[cam][2]:
            tracker, cropper, _ = state.pop(cam)
            tracker.flush()
            yield from cropper.flush()
        if cam not in state:
            state[cam] = (tracker_factory(), cropper_factory(cam), -1)
        tracker, cropper, _ = state[cam]
        for tb in tracker.update(detector.detect(frame.image_bgr), frame.frame_index):
            cropper.add(tb.track_id, frame.image_bgr, tb.box, tb.score, frame.timestamp, frame.frame_index)
        state[cam] = (tracker, cropper, frame.frame_index)
        tracker.finished()
        yield from cropper.pop_finished(tracker.active_ids)
    for tracker, cropper, _ in state.values():
        tracker.flush()
        yield from cropper.flush()
