"""CMC, mAP and mINP for person re-identification, vectorised.

Protocol (applied here, whatever the loader kept): for each query, gallery items with pid ``-1``
(junk) and items with the query's pid *and* camera are removed; positives are the remaining items
with the query's pid. Ranking is a stable ascending sort of the distances (ties: lower gallery index
first). Queries with no positive are counted in ``num_skipped`` and left out of every average.

How it avoids sorting every row: a positive's rank only needs the number of valid negatives closer
to the query than it. Per query the positives' distances are sorted (a few dozen), every gallery
distance is binned among them with one batched ``searchsorted``, and a per-row histogram's cumulative
sum gives each positive's rank. Rows where a negative ties a positive exactly fall back to a stable
per-row sort so the result is identical to the reference definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

ApMode = Literal["standard", "market"]


@dataclass
class EvalResult:
    """Evaluation figures. ``cmc[k]`` is the rank-(k+1) matching rate; all rates are in [0, 1]."""

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid: int
    num_skipped: int
    ap: np.ndarray = field(repr=False)
    inp: np.ndarray = field(repr=False)

    def rank(self, k: int) -> float:
        """Rank-k matching rate (k is 1-based)."""
        return float(self.cmc[min(k, len(self.cmc)) - 1])

    def summary(self, ranks: tuple[int, ...] = (1, 5, 10, 20)) -> dict[str, float]:
        """Percentages, as the literature reports them."""
        out = {f"rank{k}": 100.0 * self.rank(k) for k in ranks}
        out["mAP"] = 100.0 * self.mAP
        out["mINP"] = 100.0 * self.mINP
        return out


def _as_int(a: np.ndarray | torch.Tensor | list[int]) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.cpu().numpy()
    return np.asarray(a).astype(np.int64, copy=False).reshape(-1)


def _as_distance(d: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = d.detach().cpu() if isinstance(d, torch.Tensor) else torch.from_numpy(np.asarray(d))
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    if t.ndim != 2:
        raise ValueError(f"distmat must be 2-D (queries x gallery), got shape {tuple(t.shape)}")
    return t


def _ap_padded(ranks: np.ndarray, num_pos: np.ndarray, mode: ApMode) -> np.ndarray:
    """AP per row from 1-based positive ranks (rows padded with +inf past ``num_pos``).

    ``standard``: mean of precision at each positive (non-interpolated).
    ``market``: the official Market-1501 code's trapezoid rule between consecutive positives.
    """
    hits = np.arange(1, ranks.shape[1] + 1, dtype=np.float64)[None, :]
    mask = hits <= num_pos[:, None]
    precision = np.where(mask, hits / ranks, 0.0)
    if mode == "market":
        safe = np.where(mask, ranks, 2.0)
        before = np.where(safe > 1, (hits - 1) / np.maximum(safe - 1, 1), 1.0)
        precision = np.where(mask, (before + precision) / 2, 0.0)
    return precision.sum(1) / np.maximum(num_pos, 1)


def ap_from_ranks(ranks: np.ndarray, mode: ApMode = "standard") -> float:
    """AP of one query from the sorted 1-based ranks of all its positives."""
    r = np.asarray(ranks, dtype=np.float64)[None, :]
    return float(_ap_padded(r, np.array([r.shape[1]]), mode)[0])


def _positive_ranks_exact(
    dist: np.ndarray, valid: np.ndarray, positive: np.ndarray
) -> np.ndarray:
    """Reference ranks for one query: stable sort of the valid items, 1-based positive positions."""
    order = np.argsort(dist[valid], kind="stable")
    return np.flatnonzero(positive[valid][order]) + 1


def _chunk_ranks(
    dist: torch.Tensor,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_cams: np.ndarray,
    g_cams: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of the positives of each query in a chunk of rows.

    Returns ``(ranks, num_pos)``: ``ranks[i, :num_pos[i]]`` are row i's 1-based positive ranks,
    ascending; the rest of the row is +inf.
    """
    same_pid = q_pids[:, None] == g_pids[None, :]
    valid = ~((same_pid & (q_cams[:, None] == g_cams[None, :])) | (g_pids[None, :] == -1))
    positive = same_pid & valid
    negative = valid & ~same_pid

    num_pos = positive.sum(1)
    width = max(int(num_pos.max()), 1) if len(num_pos) else 1
    # Each row's positive distances, sorted, padded with +inf.
    inf = torch.tensor(float("inf"), dtype=dist.dtype)
    thresholds = torch.topk(
        torch.where(torch.from_numpy(positive), dist, inf), width, dim=1, largest=False
    ).values
    # bins[i, g] = number of positive thresholds strictly below dist[i, g] (batched, in C).
    bins = torch.searchsorted(thresholds, dist.contiguous(), side="left", out_int32=True).numpy()

    # Per-row histogram of the negatives over the bins; everything else goes to a dump bin.
    n, m2 = dist.shape[0], width + 2
    flat = np.where(negative, bins, width + 1).astype(np.int64)
    flat += np.arange(n, dtype=np.int64)[:, None] * m2
    counts = np.bincount(flat.ravel(), minlength=n * m2).reshape(n, m2)
    neg_before = counts.cumsum(1)[:, :width]  # negatives at or below each threshold

    ranks = (neg_before + np.arange(1, width + 1)[None, :]).astype(np.float64)
    ranks[np.arange(width)[None, :] >= num_pos[:, None]] = np.inf
    # A negative exactly equal to a positive's distance is a tie: resolve those rows exactly.
    th = thresholds.numpy()
    at = np.take_along_axis(th, np.minimum(bins, width - 1), axis=1)
    d = dist.numpy()
    for i in np.flatnonzero(((d == at) & negative).any(1)):
        ranks[i, : num_pos[i]] = _positive_ranks_exact(d[i], valid[i], positive[i])
    return ranks, num_pos


def evaluate(
    distmat: np.ndarray | torch.Tensor,
    q_pids: np.ndarray | torch.Tensor | list[int],
    g_pids: np.ndarray | torch.Tensor | list[int],
    q_camids: np.ndarray | torch.Tensor | list[int],
    g_camids: np.ndarray | torch.Tensor | list[int],
    max_rank: int = 50,
    ap: ApMode = "standard",
    chunk_size: int = 512,
) -> EvalResult:
    """CMC (up to ``max_rank``), mAP and mINP of a query x gallery distance matrix (smaller = closer).

    ``ap="standard"`` is non-interpolated AP (torchreid, fast-reid); ``ap="market"`` the official
    Market-1501 trapezoid AP. mINP follows Ye et al. (TPAMI 2021): positives / rank of the hardest.
    """
    if ap not in ("standard", "market"):
        raise ValueError(f"ap must be 'standard' or 'market', got {ap!r}")
    dist = _as_distance(distmat)
    qp, gp, qc, gc = (_as_int(x) for x in (q_pids, g_pids, q_camids, g_camids))
    nq, ng = dist.shape
    if len(qp) != nq or len(qc) != nq or len(gp) != ng or len(gc) != ng:
        raise ValueError(
            f"distmat is {nq}x{ng} but got {len(qp)} query pids, {len(qc)} query cameras, "
            f"{len(gp)} gallery pids, {len(gc)} gallery cameras"
        )
    if torch.isnan(dist).any():
        raise ValueError("distmat contains NaN")

    cmc_sum = np.zeros(max_rank, dtype=np.float64)
    aps: list[np.ndarray] = []
    inps: list[np.ndarray] = []
    for start in range(0, nq, chunk_size):
        sl = slice(start, start + chunk_size)
        ranks, num_pos = _chunk_ranks(dist[sl], qp[sl], gp, qc[sl], gc)
        ok = num_pos > 0
        ranks, num_pos = ranks[ok], num_pos[ok]
        first = ranks[:, 0]
        hits = np.arange(1, max_rank + 1)[None, :] >= first[:, None]
        cmc_sum += hits.sum(0)
        aps.append(_ap_padded(ranks, num_pos, ap))
        last = ranks[np.arange(len(ranks)), num_pos - 1]
        inps.append(num_pos / last)
    ap_all = np.concatenate(aps) if aps else np.zeros(0)
    num_valid = len(ap_all)
    if num_valid == 0:
        raise ValueError("no query has a valid positive in the gallery (check pids and cameras)")
    inp_all = np.concatenate(inps)
    return EvalResult(
        cmc=cmc_sum / num_valid,
        mAP=float(ap_all.mean()),
        mINP=float(inp_all.mean()),
        num_valid=num_valid,
        num_skipped=nq - num_valid,
        ap=ap_all,
        inp=inp_all,
    )
