"""Multi-object tracking of person boxes: a compact ByteTrack (Zhang et al., ECCV 2022).

Why not a library: ``supervision``'s ``ByteTrack`` is deprecated since 0.28 and gone in 0.31; the
versions that still ship it (<= 0.29) require ``opencv-python``, the GUI build, which installs a
second ``cv2`` over our ``opencv-python-headless``; 0.30 only keeps a deprecated shim and pulls
``av``/``requests``/``tqdm``/``pydeprecate``. Its successor, Roboflow's ``trackers``, again requires
``opencv-python`` plus ``supervision``. ByteTrack itself is ~200 lines of numpy + scipy, so it lives here.

Algorithm per update: a constant-velocity Kalman filter on ``(cx, cy, aspect, h)`` predicts every
track (``dt`` = frames since the previous update, so ``stride`` and skipped frames are fine);
high-score detections are matched to tracked + lost tracks by IoU (Hungarian, scipy's
``linear_sum_assignment``); low-score detections then rescue still-unmatched tracked tracks (the
ByteTrack idea: occluded people get low scores); leftover high-score detections start tentative
tracks that get an id once seen ``min_hits`` times in a row. Lost tracks survive ``max_lost`` frames
(occlusion gaps), then are reported by :meth:`Tracker.finished`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.optimize import linear_sum_assignment

from reidkit.search.ingest.detect import Box, Detection


@dataclass(frozen=True, slots=True)
class TrackedBox:
    """A detection assigned to a track in the current frame (``box`` is the detection's box)."""

    track_id: int
    box: Box
    score: float
    detection_index: int


@dataclass(frozen=True, slots=True)
class FinishedTrack:
    """A confirmed track that ended (lost for too long, or flushed at the end of a source)."""

    track_id: int
    start_frame: int
    end_frame: int
    hits: int


class KalmanXYAH:
    """Constant-velocity Kalman filter on ``(cx, cy, w/h, h)`` with noise scaled by box height (as DeepSORT)."""

    std_pos = 1.0 / 20
    std_vel = 1.0 / 160

    def __init__(self) -> None:
        self.H = np.eye(4, 8)

    def initiate(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = np.r_[z, np.zeros(4)]
        h = z[3]
        std = np.array(
            [
                2 * self.std_pos * h,
                2 * self.std_pos * h,
                1e-2,
                2 * self.std_pos * h,
                10 * self.std_vel * h,
                10 * self.std_vel * h,
                1e-5,
                10 * self.std_vel * h,
            ]
        )
        return mean, np.diag(std**2)

    def predict(self, mean: np.ndarray, cov: np.ndarray, dt: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        F = np.eye(8)
        F[:4, 4:] = dt * np.eye(4)
        h = mean[3]
        std = np.array(
            [
                self.std_pos * h,
                self.std_pos * h,
                1e-2,
                self.std_pos * h,
                self.std_vel * h,
                self.std_vel * h,
                1e-5,
                self.std_vel * h,
            ]
        )
        return F @ mean, F @ cov @ F.T + dt * np.diag(std**2)

    def update(self, mean: np.ndarray, cov: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = mean[3]
        R = np.diag(np.array([self.std_pos * h, self.std_pos * h, 1e-1, self.std_pos * h]) ** 2)
        S = self.H @ cov @ self.H.T + R
        PHt = cov @ self.H.T
        K = cho_solve(cho_factor(S, lower=True, check_finite=False), PHt.T, check_finite=False).T
        return mean + K @ (z - self.H @ mean), cov - K @ S @ K.T


def xyxy_to_xyah(b: Sequence[float]) -> np.ndarray:
    w, h = b[2] - b[0], b[3] - b[1]
    return np.array([b[0] + w / 2, b[1] + h / 2, w / max(h, 1e-6), h], dtype=np.float64)


def xyah_to_xyxy(m: np.ndarray) -> Box:
    h = m[3]
    w = m[2] * h
    return (float(m[0] - w / 2), float(m[1] - h / 2), float(m[0] + w / 2), float(m[1] + h / 2))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between every row of ``a`` (N, 4) and ``b`` (M, 4), boxes xyxy."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _assign(cost: np.ndarray, max_cost: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Hungarian matching keeping pairs with ``cost <= max_cost``; returns matches, unmatched rows, cols."""
    if cost.size == 0:
        return [], list(range(cost.shape[0])), list(range(cost.shape[1]))
    rows, cols = linear_sum_assignment(np.where(cost > max_cost, max_cost + 1.0, cost))
    matches = [(r, c) for r, c in zip(rows.tolist(), cols.tolist(), strict=True) if cost[r, c] <= max_cost]
    mr, mc = {r for r, _ in matches}, {c for _, c in matches}
    return matches, [r for r in range(cost.shape[0]) if r not in mr], [c for c in range(cost.shape[1]) if c not in mc]


class TrackState(Enum):
    TENTATIVE = 0
    TRACKED = 1
    LOST = 2


@dataclass(eq=False)
class _Track:
    mean: np.ndarray
    cov: np.ndarray
    score: float
    start_frame: int
    last_frame: int
    state: TrackState = TrackState.TENTATIVE
    track_id: int = 0  # assigned on confirmation
    hits: int = 1

    @property
    def box(self) -> Box:
        return xyah_to_xyxy(self.mean)


class Tracker:
    """ByteTrack-style tracker for one camera; feed it every processed frame in order.

    ``high_threshold``/``low_threshold`` split detections into the two matching stages,
    ``new_track_threshold`` is the score needed to start a track, ``match_iou``/``low_match_iou``/
    ``tentative_match_iou`` are the minimum IoUs per stage, ``max_lost`` is in frame-index units.
    """

    def __init__(
        self,
        high_threshold: float = 0.5,
        low_threshold: float = 0.1,
        new_track_threshold: float = 0.6,
        match_iou: float = 0.2,
        low_match_iou: float = 0.5,
        tentative_match_iou: float = 0.3,
        max_lost: int = 30,
        min_hits: int = 2,
        fuse_score: bool = True,
    ) -> None:
        self.high_threshold, self.low_threshold = high_threshold, low_threshold
        self.new_track_threshold = new_track_threshold
        self.match_iou, self.low_match_iou, self.tentative_match_iou = match_iou, low_match_iou, tentative_match_iou
        self.max_lost, self.min_hits, self.fuse_score = max_lost, min_hits, fuse_score
        self.kf = KalmanXYAH()
        self.tracks: list[_Track] = []
        self._finished: list[FinishedTrack] = []
        self._next_id = 1
        self._last_frame: int | None = None

    @property
    def active_ids(self) -> set[int]:
        """Ids of confirmed tracks still alive (tracked or temporarily lost)."""
        return {t.track_id for t in self.tracks if t.state is not TrackState.TENTATIVE}

    def _confirm(self, t: _Track) -> None:
        t.state = TrackState.TRACKED
        t.track_id = self._next_id
        self._next_id += 1

    def _cost(self, tracks: list[_Track], dets: list[Detection], use_score: bool) -> np.ndarray:
        a = np.array([t.box for t in tracks]).reshape(-1, 4)
        iou = iou_matrix(a, np.array([d.box for d in dets]).reshape(-1, 4))
        if use_score and len(dets):
            iou = iou * np.array([d.score for d in dets])[None, :]
        return 1.0 - iou

    def _apply(self, t: _Track, det: Detection, frame_index: int) -> None:
        t.mean, t.cov = self.kf.update(t.mean, t.cov, xyxy_to_xyah(det.box))
        t.score, t.last_frame = det.score, frame_index
        t.hits += 1

    def update(self, detections: Sequence[Detection], frame_index: int) -> list[TrackedBox]:
        """Advance to ``frame_index`` with this frame's detections; returns the confirmed tracks seen in it."""
        first = self._last_frame is None
        dt = 1 if self._last_frame is None else max(1, frame_index - self._last_frame)
        self._last_frame = frame_index
        for t in self.tracks:
            if t.state is not TrackState.TRACKED:
                t.mean[7] = 0.0  # ByteTrack: do not extrapolate the height of a lost track
            t.mean, t.cov = self.kf.predict(t.mean, t.cov, dt)

        idx_high = [i for i, d in enumerate(detections) if d.score >= self.high_threshold]
        idx_low = [i for i, d in enumerate(detections) if self.low_threshold <= d.score < self.high_threshold]
        out: list[TrackedBox] = []

        def matched(t: _Track, i: int) -> None:
            self._apply(t, detections[i], frame_index)
            t.state = TrackState.TRACKED
            out.append(TrackedBox(t.track_id, detections[i].box, detections[i].score, i))

        # 1) high-score detections vs tracked + lost tracks
        pool = [t for t in self.tracks if t.state in (TrackState.TRACKED, TrackState.LOST)]
        high = [detections[i] for i in idx_high]
        m, u_pool, u_high = _assign(self._cost(pool, high, self.fuse_score), 1.0 - self.match_iou)
        for r, c in m:
            matched(pool[r], idx_high[c])
        # 2) low-score detections rescue tracks that were tracked in the previous frame
        rest = [pool[r] for r in u_pool if pool[r].state is TrackState.TRACKED]
        low = [detections[i] for i in idx_low]
        m, u_rest, _ = _assign(self._cost(rest, low, False), 1.0 - self.low_match_iou)
        for r, c in m:
            matched(rest[r], idx_low[c])
        for r in u_rest:
            rest[r].state = TrackState.LOST
        # 3) remaining high-score detections vs tentative tracks
        tentative = [t for t in self.tracks if t.state is TrackState.TENTATIVE]
        left = [idx_high[c] for c in u_high]
        m, u_tent, u_left = _assign(
            self._cost(tentative, [detections[i] for i in left], self.fuse_score), 1.0 - self.tentative_match_iou
        )
        for r, c in m:
            t = tentative[r]
            self._apply(t, detections[left[c]], frame_index)
            if t.hits >= self.min_hits:
                self._confirm(t)
                out.append(TrackedBox(t.track_id, detections[left[c]].box, detections[left[c]].score, left[c]))
        dead = {id(tentative[r]) for r in u_tent}
        # 4) new tracks
        for c in u_left:
            d = detections[left[c]]
            if d.score < self.new_track_threshold:
                continue
            mean, cov = self.kf.initiate(xyxy_to_xyah(d.box))
            t = _Track(mean, cov, d.score, frame_index, frame_index)
            self.tracks.append(t)
            if first or self.min_hits <= 1:
                self._confirm(t)
                out.append(TrackedBox(t.track_id, d.box, d.score, left[c]))
        # 5) retire tentative tracks that missed and lost tracks past max_lost
        keep = []
        for t in self.tracks:
            if id(t) in dead:
                continue
            if t.state is TrackState.LOST and frame_index - t.last_frame > self.max_lost:
                self._finished.append(FinishedTrack(t.track_id, t.start_frame, t.last_frame, t.hits))
                continue
            keep.append(t)
        self.tracks = keep
        return sorted(out, key=lambda b: b.track_id)

    def finished(self) -> list[FinishedTrack]:
        """Confirmed tracks that ended since the last call (each reported once)."""
        done, self._finished = self._finished, []
        return done

    def flush(self) -> list[FinishedTrack]:
        """End every track (end of the source) and return all finished tracks not yet reported."""
        for t in self.tracks:
            if t.state is not TrackState.TENTATIVE:
                self._finished.append(FinishedTrack(t.track_id, t.start_frame, t.last_frame, t.hits))
        self.tracks = []
        return self.finished()
