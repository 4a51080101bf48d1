"""Distances between feature sets. Smaller means more similar."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Metric = Literal["cosine", "euclidean"]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pairwise_distance(qf: np.ndarray, gf: np.ndarray, metric: Metric = "cosine") -> np.ndarray:
    """Q x G float32 distances.

    ``cosine``: ``1 - cos`` between the rows. ``euclidean``: **squared** Euclidean distance (the
    same ranking as Euclidean; torchreid's convention).
    """
    q = torch.from_numpy(np.ascontiguousarray(qf, dtype=np.float32))
    g = torch.from_numpy(np.ascontiguousarray(gf, dtype=np.float32))
    with torch.inference_mode():
        if metric == "cosine":
            q = torch.nn.functional.normalize(q, dim=1)
            g = torch.nn.functional.normalize(g, dim=1)
            return (1.0 - q @ g.T).numpy()
        if metric == "euclidean":
            d = (q * q).sum(1)[:, None] + (g * g).sum(1)[None, :] - 2.0 * (q @ g.T)
            return d.clamp_min_(0).numpy()
    raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
