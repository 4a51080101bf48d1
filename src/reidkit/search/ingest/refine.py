"""Second looks at a detector's boxes: splitting group boxes and dropping boxes that are not people.

* :class:`GroupSplitter`: a box wider than a standing person (height / width under ``max_aspect``)
  is often two or three people side by side. The box's region, with a margin, is cut out, enlarged
  and given to the base detector again; when it finds two or more people there, they replace the
  group box.
* :class:`PersonVerifier`: MoveNet (the pose model reidkit already ships for HOReID) reads each box;
  a sign, a bicycle or a lamp post gives no confident body keypoints, a person does. A box is kept
  when at least ``min_keypoints`` keypoints score ``min_score`` or more.

Both wrap any :class:`~reidkit.search.ingest.detect.Detector` and keep its protocol. The registered
detector ``ssd-tiled`` is SSD with all three: tiles for large frames (:mod:`.tiles`), group boxes
split, and the keypoint check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from reidkit.search.ingest.crops import clip_box
from reidkit.search.ingest.detect import (
    BoxFilter,
    Detection,
    Detector,
    SSDDetector,
    detect_batch,
    nms,
    register_detector,
)
from reidkit.search.ingest.tiles import TiledDetector

__all__ = ["GroupSplitter", "PersonVerifier", "sliced_ssd"]


def _crop(frame: np.ndarray, box: Sequence[float], margin: float) -> tuple[np.ndarray, int, int]:
    """The box grown by ``margin`` of its size on each side, clipped; returns (pixels, x0, y0)."""
    x0, y0, x1, y1 = clip_box(tuple(box), frame.shape, margin)  # type: ignore[arg-type]
    return np.ascontiguousarray(frame[y0:y1, x0:x1]), x0, y0


class GroupSplitter:
    """``detector``'s boxes, with group boxes (height / width < ``max_aspect``) re-detected by ``base``
    on the enlarged region (its height scaled to ``look_height`` pixels); see the module docstring."""

    def __init__(
        self,
        detector: Detector,
        base: Detector | None = None,
        max_aspect: float = 1.6,
        look_height: int = 300,
        margin: float = 0.15,
        min_parts: int = 2,
    ) -> None:
        self.detector, self.base = detector, base or detector
        self.max_aspect, self.look_height, self.margin, self.min_parts = max_aspect, look_height, margin, min_parts
        self.box_filter = getattr(detector, "box_filter", None)

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        return self.detect_many([frame_bgr])[0]

    def detect_many(self, frames_bgr: Sequence[np.ndarray]) -> list[list[Detection]]:
        found = detect_batch(self.detector, frames_bgr)
        looks: list[np.ndarray] = []
        where: list[tuple[int, int, float, int, int]] = []  # frame, detection, scale, x0, y0
        for i, (frame, dets) in enumerate(zip(frames_bgr, found, strict=True)):
            for j, d in enumerate(dets):
                if d.width > 0 and d.height / d.width < self.max_aspect:
                    region, x0, y0 = _crop(frame, d.box, self.margin)
                    if region.size == 0:
                        continue
                    scale = max(1.0, self.look_height / region.shape[0])
                    if scale > 1.0:
                        region = cv2.resize(region, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
                    looks.append(region)
                    where.append((i, j, scale, x0, y0))
        if not looks:
            return found
        replaced: dict[tuple[int, int], list[Detection]] = {}
        for (i, j, scale, x0, y0), parts in zip(where, detect_batch(self.base, looks), strict=True):
            people = [p for p in parts if p.width > 0 and p.height / p.width >= self.max_aspect]
            if len(people) >= self.min_parts:
                replaced[(i, j)] = [
                    Detection(
                        (x0 + p.box[0] / scale, y0 + p.box[1] / scale, x0 + p.box[2] / scale, y0 + p.box[3] / scale),
                        min(p.score, found[i][j].score),
                    )
                    for p in people
                ]
        out = []
        for i, dets in enumerate(found):
            new: list[Detection] = []
            for j, d in enumerate(dets):
                new.extend(replaced.get((i, j), [d]))
            out.append(nms(new) if any((i, j) in replaced for j in range(len(dets))) else new)
        return out


class PersonVerifier:
    """``detector``'s boxes that MoveNet reads as a body (see the module docstring). ``pose`` is a
    :class:`reidkit.pose.movenet.MoveNet` (built from the installed model when not given); ``when``:
    check only the frames it accepts (the others' boxes pass)."""

    def __init__(
        self,
        detector: Detector,
        pose: object | None = None,
        min_keypoints: int = 4,
        min_score: float = 0.3,
        margin: float = 0.1,
        when: Callable[[np.ndarray], bool] | None = None,
    ) -> None:
        if pose is None:
            from reidkit.pose.movenet import MoveNet

            pose = MoveNet()
        self.detector, self.pose = detector, pose
        self.min_keypoints, self.min_score, self.margin = min_keypoints, min_score, margin
        self.when = when
        self.box_filter = getattr(detector, "box_filter", None)

    def keypoint_counts(self, frame_bgr: np.ndarray, detections: Sequence[Detection]) -> list[int]:
        """How many of each box's 17 keypoints score at least ``min_score`` inside the box."""
        counts = []
        for d in detections:
            region, x0, y0 = _crop(frame_bgr, d.box, self.margin)
            if region.size == 0:
                counts.append(0)
                continue
            kp = self.pose.predict_one(cv2.cvtColor(region, cv2.COLOR_BGR2RGB))  # type: ignore[attr-defined]
            x, y = kp[:, 0] + x0, kp[:, 1] + y0
            inside = (x >= d.box[0]) & (x <= d.box[2]) & (y >= d.box[1]) & (y <= d.box[3])
            counts.append(int(((kp[:, 2] >= self.min_score) & inside).sum()))
        return counts

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        return self.detect_many([frame_bgr])[0]

    def detect_many(self, frames_bgr: Sequence[np.ndarray]) -> list[list[Detection]]:
        out = []
        for frame, dets in zip(frames_bgr, detect_batch(self.detector, frames_bgr), strict=True):
            if self.when is not None and not self.when(frame):
                out.append(dets)
                continue
            counts = self.keypoint_counts(frame, dets)
            out.append([d for d, c in zip(dets, counts, strict=True) if c >= self.min_keypoints])
        return out


@register_detector("ssd-tiled")
def sliced_ssd(
    model_path: str | None = None,
    score_threshold: float = 0.4,
    tile: int | None = None,
    overlap: float = 0.25,
    min_side: int = 1000,
    split_groups: bool = True,
    verify: bool = True,
    min_keypoints: int = 4,
    box_filter: BoxFilter | None = None,
) -> Detector:
    """SSD-MobileNetV2 on the whole frame and on tiles of frames at least ``min_side`` pixels on their
    longer side, group boxes split, and in tiled frames boxes without a body dropped (see the module
    docstring). Frames under ``min_side`` cost what plain ``ssd`` costs, plus a closer look at wide boxes."""
    ssd = SSDDetector(model_path, score_threshold=score_threshold, box_filter=box_filter)
    tiled = TiledDetector(ssd, tile=tile, overlap=overlap, min_side=min_side, box_filter=box_filter)
    det: Detector = tiled
    if split_groups:
        det = GroupSplitter(det, base=ssd)
    if verify:  # where tiles find the small people they also find small signs; whole frames keep SSD's cost
        det = PersonVerifier(det, min_keypoints=min_keypoints, when=lambda frame: bool(tiled.tiles(frame.shape)))
    return det
