"""Draw HOReID's nodes and skeleton on crops, and lay crops out as a contact sheet (to look at them)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from reidkit.pose.skeleton import EDGES, coco_to_horeid

SCALE = 2  # crops are drawn at twice their size so the points are visible


def _colour(score: float) -> tuple[int, int, int]:
    """BGR from red (score 0) through yellow to green (score 1)."""
    s = float(np.clip(score, 0.0, 1.0))
    return (0, int(255 * min(1.0, 2 * s)), int(255 * min(1.0, 2 * (1 - s))))


def draw_keypoints(bgr: np.ndarray, coco: np.ndarray, min_score: float = 0.2) -> np.ndarray:
    """``bgr`` (scaled by :data:`SCALE`) with the 13 nodes (colour = confidence; hollow below
    ``min_score``) and the skeleton edges between confident nodes."""
    img = cv2.resize(bgr, (bgr.shape[1] * SCALE, bgr.shape[0] * SCALE), interpolation=cv2.INTER_LINEAR)
    nodes = coco_to_horeid(coco)
    pts = [(round(float(x + 0.5) * SCALE), round(float(y + 0.5) * SCALE)) for x, y, _ in nodes]
    for i, j in EDGES:
        if nodes[i, 2] >= min_score and nodes[j, 2] >= min_score:
            cv2.line(img, pts[i], pts[j], (255, 200, 0), 1, cv2.LINE_AA)
    for (x, y), s in zip(pts, nodes[:, 2], strict=True):
        cv2.circle(img, (x, y), 3, _colour(s), -1 if s >= min_score else 1, cv2.LINE_AA)
    return img


def contact_sheet(
    images: Sequence[np.ndarray], captions: Sequence[str] | None = None, columns: int = 10
) -> np.ndarray:
    """Images (BGR, any sizes) on a grid of equal cells with optional captions below each."""
    if not images:
        raise ValueError("no images for a contact sheet")
    ch = max(im.shape[0] for im in images) + (14 if captions else 0)
    cw = max(im.shape[1] for im in images)
    rows = -(-len(images) // columns)
    sheet = np.full((rows * ch, min(columns, len(images)) * cw, 3), 255, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, columns)
        y, x = r * ch, c * cw
        sheet[y : y + im.shape[0], x : x + im.shape[1]] = im
        if captions:
            cv2.putText(sheet, captions[k][:14], (x + 2, y + ch - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1)
    return sheet


def keypoint_sheet(
    paths: Sequence[str | os.PathLike[str]], coco: np.ndarray, out: str | os.PathLike[str], columns: int = 10
) -> Path:
    """Write a contact sheet of crops with their keypoints drawn (JPEG or PNG by suffix)."""
    from reidkit.imaging import to_rgb_array
    from reidkit.io import atomic_path

    tiles = [
        draw_keypoints(np.ascontiguousarray(to_rgb_array(p)[:, :, ::-1]), k) for p, k in zip(paths, coco, strict=True)
    ]
    sheet = contact_sheet(tiles, [Path(p).stem for p in paths], columns)
    out = Path(out)
    ok, buf = cv2.imencode(out.suffix or ".jpg", sheet)
    if not ok:
        raise ValueError(f"{out}: cannot encode a contact sheet as {out.suffix or '.jpg'}")
    with atomic_path(out) as tmp:
        tmp.write_bytes(buf.tobytes())
    return out
