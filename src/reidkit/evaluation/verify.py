"""Stage 2 of HOReID: re-order each query's top candidates by a pairwise verifier.

Stage 1 ranks the gallery by a distance on embeddings. :func:`rescore_top_k` takes each query's
``k`` nearest gallery entries, asks ``verify(query_rows, gallery_rows)`` for the probability that
they show the same person, and re-orders those ``k`` by ``similarity + sign * weight * prob``
(``similarity = 1 - distance``). The re-ordered candidates keep the stage-1 distances of the top
``k`` in sorted order, so they stay ahead of the rest and nothing outside the top ``k`` moves.

``sign``: HOReID's verifier is trained towards 1 for the same person, so ``+1`` is the consistent
choice; the official code adds ``1 - prob`` instead (``sign = -1`` up to a constant), which is why
both are offered and should be compared on held-out identities before one is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def rescore_top_k(
    dist: np.ndarray,
    qf: np.ndarray,
    gf: np.ndarray,
    verify: Callable[[np.ndarray, np.ndarray], np.ndarray],
    k: int = 8,
    sign: float = 1.0,
    weight: float = 1.0,
    batch: int = 1024,
) -> np.ndarray:
    """A copy of ``dist`` (queries x gallery, smaller is closer) with every row's ``k`` nearest
    entries re-ordered by the verifier (see the module docstring). ``verify`` maps two ``(M, D)``
    arrays of paired rows to ``M`` probabilities."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, dist.shape[1])
    out = dist.copy()
    top = np.argpartition(dist, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(top, np.argsort(np.take_along_axis(dist, top, 1), axis=1, kind="stable"), 1)
    qi = np.repeat(np.arange(len(dist)), k)
    gi = top.ravel()
    prob = np.empty(len(qi), np.float32)
    for s in range(0, len(qi), batch):
        prob[s : s + batch] = np.asarray(verify(qf[qi[s : s + batch]], gf[gi[s : s + batch]]), np.float32)
    prob = prob.reshape(len(dist), k)
    d_top = np.take_along_axis(dist, top, 1)
    score = (1.0 - d_top) + sign * weight * prob
    order = np.argsort(-score, axis=1, kind="stable")
    np.put_along_axis(out, np.take_along_axis(top, order, 1), d_top, 1)  # sorted stage-1 distances, new order
    return out


def model_verifier(model: Any, nodes: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``verify`` for :func:`rescore_top_k` from a HOReID model (eval mode): rows as ``(nodes, C)``."""
    import torch

    model.eval()

    def verify(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ta = torch.from_numpy(np.ascontiguousarray(a, np.float32)).view(len(a), nodes, -1)
        tb = torch.from_numpy(np.ascontiguousarray(b, np.float32)).view(len(b), nodes, -1)
        with torch.inference_mode():
            return torch.sigmoid(model.verify(ta, tb)).numpy()

    return verify
