"""Sliced detection for large frames: a detector run on the whole frame and on overlapping square tiles.

A 300x300 detector that sees a 1920x1080 picture squeezed into its input sees a walking person as
about 9x40 pixels, and misses most of them. :class:`TiledDetector` runs its base detector (one
network call for all tiles where the base batches, as SSD does) on the whole frame, for people too
big for a tile, and on square tiles that overlap, so every person small enough to be missed whole
is seen at several times the size by at least one tile. Tile boxes that touch a tile's inner edge are
cut-off parts of someone and are dropped (the tile beside it, or the whole frame, sees that person
whole); the rest are merged by non-maximum suppression and by dropping a lower-scored box lying
almost entirely inside a better one (a half-body detection beside the whole body).

Frames whose longer side is under ``min_side`` are passed through untiled, so ordinary video costs
what it did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from reidkit.search.ingest.detect import BoxFilter, Detection, Detector, detect_batch, nms

__all__ = ["TiledDetector", "contained_suppression", "tile_grid"]

Tile = tuple[int, int, int, int]


def _starts(length: int, tile: int, overlap: float) -> list[int]:
    """Tile origins covering ``[0, length)`` with at least ``overlap`` of a tile shared by neighbours."""
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / (tile * (1.0 - overlap))) + 1
    step = (length - tile) / (n - 1)
    return [round(i * step) for i in range(n)]


def tile_grid(width: int, height: int, tile: int, overlap: float = 0.25) -> list[Tile]:
    """Square ``tile`` x ``tile`` windows ``(x1, y1, x2, y2)`` covering a ``width`` x ``height`` frame,
    evenly spread so that neighbours overlap by at least ``overlap`` (a fraction of ``tile``); a side
    shorter than ``tile`` gets one window of its whole length."""
    if tile < 16:
        raise ValueError(f"tile must be at least 16 pixels, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    tw, th = min(tile, width), min(tile, height)
    return [(x, y, x + tw, y + th) for y in _starts(height, th, overlap) for x in _starts(width, tw, overlap)]


def _area(b: Sequence[float]) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def contained_suppression(detections: Sequence[Detection], threshold: float = 0.8) -> list[Detection]:
    """Best score first, drop a box whose area lies at least ``threshold`` inside a kept better box
    of similar height or taller (a part of the same person, found again by another tile)."""
    kept: list[Detection] = []
    for d in sorted(detections, key=lambda d: -d.score):
        a = _area(d.box)
        inside = False
        for k in kept:
            ix = max(0.0, min(d.box[2], k.box[2]) - max(d.box[0], k.box[0]))
            iy = max(0.0, min(d.box[3], k.box[3]) - max(d.box[1], k.box[1]))
            if a > 0 and ix * iy / a >= threshold and k.height >= 0.7 * d.height:
                inside = True
                break
        if not inside:
            kept.append(d)
    return kept


class TiledDetector:
    """``base`` run on the whole frame and on overlapping square tiles of frames at least ``min_side``
    pixels on their longer side (see the module docstring). ``tile``: the tile side in pixels (default:
    the frame's shorter side / 1.5, at least 320); ``overlap``: the fraction neighbours share."""

    def __init__(
        self,
        base: Detector,
        tile: int | None = None,
        overlap: float = 0.25,
        min_side: int = 1000,
        nms_iou: float = 0.5,
        contained: float = 0.8,
        edge_margin: int = 4,
        box_filter: BoxFilter | None = None,
    ) -> None:
        self.base = base
        self.tile, self.overlap, self.min_side = tile, overlap, min_side
        self.nms_iou, self.contained, self.edge_margin = nms_iou, contained, edge_margin
        self.box_filter = box_filter or getattr(base, "box_filter", None) or BoxFilter()

    def tiles(self, shape: tuple[int, ...]) -> list[Tile]:
        """The tiles of a frame of this shape ([] when it is small enough to run whole)."""
        h, w = shape[:2]
        if max(h, w) < self.min_side:
            return []
        side = self.tile or max(320, round(min(h, w) / 1.5))
        grid = tile_grid(w, h, side, self.overlap)
        return [] if len(grid) == 1 and grid[0] == (0, 0, w, h) else grid

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        return self.detect_many([frame_bgr])[0]

    def detect_many(self, frames_bgr: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Every frame and all their tiles in one call of the base detector."""
        views: list[np.ndarray] = []
        owners: list[tuple[int, Tile | None]] = []
        for i, frame in enumerate(frames_bgr):
            views.append(frame)
            owners.append((i, None))
            for t in self.tiles(frame.shape):
                views.append(np.ascontiguousarray(frame[t[1] : t[3], t[0] : t[2]]))
                owners.append((i, t))
        found: list[list[Detection]] = [[] for _ in frames_bgr]
        for (i, t), dets in zip(owners, detect_batch(self.base, views), strict=True):
            if t is None:
                found[i].extend(dets)
                continue
            h, w = frames_bgr[i].shape[:2]
            found[i].extend(self._from_tile(dets, t, w, h))
        out = []
        for frame, dets in zip(frames_bgr, found, strict=True):
            merged = contained_suppression(nms(dets, self.nms_iou), self.contained)
            out.append(self.box_filter(merged, frame.shape))
        return out

    def _from_tile(self, dets: Sequence[Detection], t: Tile, w: int, h: int) -> list[Detection]:
        """A tile's boxes in frame pixels, without those cut by an inner edge of the tile."""
        m = self.edge_margin
        kept = []
        for d in dets:
            x1, y1, x2, y2 = d.box
            cut = (
                (x1 <= m and t[0] > 0)
                or (y1 <= m and t[1] > 0)
                or (x2 >= t[2] - t[0] - m and t[2] < w)
                or (y2 >= t[3] - t[1] - m and t[3] < h)
            )
            if not cut:
                kept.append(Detection((x1 + t[0], y1 + t[1], x2 + t[0], y2 + t[1]), d.score))
        return kept
