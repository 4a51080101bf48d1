"""HOReID's body graph: 13 keypoints from the 17 COCO ones, plus a global node, and their heatmaps.

Nodes (HOReID, Wang et al. CVPR 2020): ``head`` (from nose, eyes and ears), shoulders, elbows,
wrists, hips, knees and ankles (left / right), then the ``global`` node (index 13). The head is the
confidence-weighted mean position of the five COCO head points, with their best score as its
confidence (any visible head point places the head).

Heatmaps are Gaussians at feature-map resolution centred on each keypoint (``sigma`` in feature
cells), normalised to sum 1 so that pooling with them is a weighted average, and the confidences
are the pose model's scores (HOReID weights its per-node losses and test-time similarities by them).
"""

from __future__ import annotations

import numpy as np
import torch

NODES = (
    "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
NUM_LOCAL = len(NODES)  # 13
GLOBAL = NUM_LOCAL  # index of the global node
HEAD_COCO = (0, 1, 2, 3, 4)
BODY_COCO = tuple(range(5, 17))  # COCO 5..16 are the 12 body nodes, in NODES' order
# skeleton edges between local nodes (the global node is linked to all of them)
EDGES = (
    (0, 1), (0, 2), (1, 2), (1, 3), (3, 5), (2, 4), (4, 6),
    (1, 7), (2, 8), (7, 8), (7, 9), (9, 11), (8, 10), (10, 12),
)  # fmt: skip


def coco_to_horeid(kp: np.ndarray) -> np.ndarray:
    """``(..., 17, 3)`` COCO ``x, y, score`` -> ``(..., 13, 3)`` HOReID nodes (see the module docstring)."""
    kp = np.asarray(kp, np.float32)
    if kp.shape[-2:] != (17, 3):
        raise ValueError(f"want (..., 17, 3) COCO keypoints, got shape {kp.shape}")
    head = kp[..., HEAD_COCO, :]
    w = np.clip(head[..., 2:3], 1e-6, None)
    pos = (head[..., :2] * w).sum(-2) / w.sum(-2)
    score = head[..., 2].max(-1, keepdims=True)
    out = np.concatenate([np.concatenate([pos, score], -1)[..., None, :], kp[..., BODY_COCO, :]], -2)
    return out


def adjacency(self_loops: bool = True) -> np.ndarray:
    """The ``(14, 14)`` skeleton adjacency (0/1): skeleton edges, the global node linked to every node."""
    a = np.zeros((NUM_LOCAL + 1, NUM_LOCAL + 1), np.float32)
    for i, j in EDGES:
        a[i, j] = a[j, i] = 1.0
    a[GLOBAL, :] = a[:, GLOBAL] = 1.0
    if self_loops:
        np.fill_diagonal(a, 1.0)
    else:
        np.fill_diagonal(a, 0.0)
    return a


def heatmaps(
    nodes: torch.Tensor, image_size: tuple[int, int], map_size: tuple[int, int], sigma: float = 1.0
) -> torch.Tensor:
    """Gaussian heatmaps ``(N, 13, h, w)`` for node positions ``(N, 13, 3)`` given in pixels of an
    ``image_size = (H, W)`` image, at ``map_size = (h, w)``; each map sums to 1."""
    if nodes.ndim != 3 or nodes.shape[-1] < 2:
        raise ValueError(f"want (N, K, 3) keypoints, got shape {tuple(nodes.shape)}")
    big_h, big_w = image_size
    h, w = map_size
    # pixel -> cell-centre coordinates: a pixel at x maps to (x + 0.5) * w / W - 0.5
    cx = (nodes[..., 0] + 0.5) * (w / big_w) - 0.5
    cy = (nodes[..., 1] + 0.5) * (h / big_h) - 0.5
    ys = torch.arange(h, dtype=nodes.dtype, device=nodes.device)
    xs = torch.arange(w, dtype=nodes.dtype, device=nodes.device)
    dy = (ys[None, None, :] - cy[..., None]) ** 2  # (N, K, h)
    dx = (xs[None, None, :] - cx[..., None]) ** 2  # (N, K, w)
    g = torch.exp(-(dy[..., :, None] + dx[..., None, :]) / (2 * sigma**2))
    return g / g.sum((-2, -1), keepdim=True).clamp_min(1e-12)


# a horizontally flipped person: left and right nodes swap (the head stays)
FLIP_NODES = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11)


def render_nodes(nodes: np.ndarray, image_size: tuple[int, int], out_size: tuple[int, int], sigma: float) -> np.ndarray:
    """``(13, H, W)`` float32 maps for HOReID nodes ``(13, 3)`` (``x, y, score`` in pixels of an
    ``image_size = (h, w)`` image) drawn at ``out_size = (H, W)``: a Gaussian of ``sigma`` output
    pixels per node whose peak is the node's score. These are the keypoint channels a HOReID model
    reads beside the RGB channels (its heatmaps are them pooled to the feature map, its confidences
    their maxima), so keypoints travel through resizing, flips, crops and ONNX as image channels do."""
    h, w = image_size
    big_h, big_w = out_size
    x = (nodes[:, 0] + 0.5) * (big_w / w) - 0.5
    y = (nodes[:, 1] + 0.5) * (big_h / h) - 0.5
    ys = np.arange(big_h, dtype=np.float32)[None, :, None]
    xs = np.arange(big_w, dtype=np.float32)[None, None, :]
    g = np.exp(-((ys - y[:, None, None]) ** 2 + (xs - x[:, None, None]) ** 2) / (2 * sigma**2))
    return (g * np.clip(nodes[:, 2], 0, 1)[:, None, None]).astype(np.float32)
