"""CMC, mAP and mINP for person re-identification, without sorting the rows.

Protocol (applied here, whatever the loader kept): for each query, gallery items with pid ``-1``
(junk) and items with the query's pid *and* camera are removed; positives are the remaining items
with the query's pid. Ranking is a stable ascending sort of the distances (ties: lower gallery index
first). Queries with no positive are counted in ``num_skipped`` and left out of every average.

How it avoids sorting every row: a positive's rank only needs the number of valid negatives ranked
before it. Every figure (CMC, AP in both modes, INP) is a function of the positives' ranks alone.

* Compiled kernel (numba, the default when it is installed): per query, the positives are found
  through the gallery grouped by pid, sorted by (distance, gallery index) (a few dozen), and one pass
  over the row counts the valid negatives ranked before each of them: a negative at ``(d, j)``
  precedes the positive at ``(d_p, j_p)`` when ``d < d_p`` or ``d == d_p and j < j_p`` (the stable
  sort's tie rule, exact, no fallback). Items ranked after the last positive are skipped with one
  comparison, so most of the row costs a load and a compare. One thread: at Market size the kernel
  takes a few tens of milliseconds, and threads gained nothing on two cores. numba is imported, and
  the kernel compiled (or loaded from numba's on-disk cache), on the first call only.
* Vectorised fallback (numpy/torch only): every gallery distance is binned among the row's sorted
  positive distances with one batched ``searchsorted`` and a per-row histogram's cumulative sum
  gives each positive's rank; rows where a negative ties a positive exactly are re-done with a
  stable per-row sort.

Both give the same ranks, hence the same figures, as the per-query stable-sort definition.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

ApMode = Literal["standard", "market"]
Backend = Literal["auto", "numba", "numpy"]


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


def combine_results(parts: Sequence[EvalResult]) -> EvalResult:
    """One result for disjoint sets of queries evaluated separately against the same gallery (e.g. a
    re-ranked matrix evaluated a block of rows at a time): the same figures as evaluating all the rows
    at once, because every figure is a mean over valid queries."""
    if not parts:
        raise ValueError("no results to combine")
    skipped = sum(r.num_skipped for r in parts)
    parts = [r for r in parts if r.num_valid > 0]
    num_valid = sum(r.num_valid for r in parts)
    if num_valid == 0:
        raise ValueError("no query has a valid positive in the gallery (check pids and cameras)")
    cmc = sum(np.rint(r.cmc * r.num_valid) for r in parts) / num_valid
    ap_all = np.concatenate([r.ap for r in parts])
    inp_all = np.concatenate([r.inp for r in parts])
    return EvalResult(
        cmc=cmc,
        mAP=float(ap_all.mean()),
        mINP=float(inp_all.mean()),
        num_valid=num_valid,
        num_skipped=skipped,
        ap=ap_all,
        inp=inp_all,
    )


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


def _positive_ranks_exact(dist: np.ndarray, valid: np.ndarray, positive: np.ndarray) -> np.ndarray:
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
    thresholds = torch.topk(torch.where(torch.from_numpy(positive), dist, inf), width, dim=1, largest=False).values
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


def _ranks_kernel(dist, g_pids, g_cams, q_pids, q_cams, grp_pid, grp_start, grp_members, width, ranks, num_pos, bad):
    """Per query row i (in parallel): 1-based ranks of its positives in ``ranks[i, :num_pos[i]]``.

    ``grp_*`` group the gallery by pid (``grp_members`` gallery indices, ascending within a group;
    group ``k`` is ``grp_members[grp_start[k]:grp_start[k + 1]]`` and has pid ``grp_pid[k]``).
    ``bad[i]`` is set when row i holds a NaN. Plain Python: ``_compiled_kernel`` compiles it.
    """
    nq, ng = dist.shape
    for i in range(nq):
        row = dist[i]
        qp, qc = q_pids[i], q_cams[i]
        pos_d = np.empty(width, dtype=dist.dtype)
        pos_j = np.empty(width, dtype=np.int64)
        n = 0
        k = np.searchsorted(grp_pid, qp)
        if qp != -1 and k < grp_pid.shape[0] and grp_pid[k] == qp:
            for t in range(grp_start[k], grp_start[k + 1]):
                j = grp_members[t]
                if g_cams[j] != qc:
                    pos_d[n] = row[j]
                    pos_j[n] = j
                    n += 1
        num_pos[i] = n
        if n == 0:
            for j in range(ng):
                if row[j] != row[j]:
                    bad[i] = True
            continue
        # Stable insertion sort of the positives by distance (their indices are ascending already).
        for a in range(1, n):
            dv, jv = pos_d[a], pos_j[a]
            b = a - 1
            while b >= 0 and pos_d[b] > dv:
                pos_d[b + 1] = pos_d[b]
                pos_j[b + 1] = pos_j[b]
                b -= 1
            pos_d[b + 1] = dv
            pos_j[b + 1] = jv
        for a in range(n):
            if pos_d[a] != pos_d[a]:
                bad[i] = True
        # before[a] = valid negatives ranked before positive a but after positive a - 1.
        before = np.zeros(n + 1, dtype=np.int64)
        last_d, last_j = pos_d[n - 1], pos_j[n - 1]
        for j in range(ng):
            v = row[j]
            if v > last_d:  # ranked after every positive (the common case)
                continue
            if v == last_d and j > last_j:
                continue
            if v != v:
                bad[i] = True
                continue
            p = g_pids[j]
            if p == qp or p == -1:  # a positive, a same-camera match, or junk
                continue
            # First positive ranked after (v, j): binary search on (distance, index).
            lo, hi = 0, n - 1
            while lo < hi:
                mid = (lo + hi) >> 1
                if pos_d[mid] < v or (pos_d[mid] == v and pos_j[mid] < j):
                    lo = mid + 1
                else:
                    hi = mid
            before[lo] += 1
        acc = 0
        for a in range(n):
            acc += before[a]
            ranks[i, a] = a + 1 + acc


_KERNEL: list[Callable] = []


def _have_numba() -> bool:
    return importlib.util.find_spec("numba") is not None


def _compiled_kernel() -> Callable:
    """``_ranks_kernel`` compiled by numba (imported here, so importing reidkit does not pay for it)."""
    if not _KERNEL:
        import numba

        _KERNEL.append(numba.njit(cache=True, nogil=True)(_ranks_kernel))
    return _KERNEL[0]


def _ranks_numba(
    dist: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_cams: np.ndarray, g_cams: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """All rows' positive ranks through the compiled kernel: ``(ranks, num_pos)`` as ``_chunk_ranks``."""
    order = np.argsort(g_pids, kind="stable")
    grp_pid, grp_first = np.unique(g_pids[order], return_index=True)
    grp_start = np.append(grp_first, len(order)).astype(np.int64)
    q_groups = np.searchsorted(grp_pid, q_pids)
    sizes = np.diff(grp_start)
    found = (q_groups < len(grp_pid)) & (grp_pid[np.minimum(q_groups, len(grp_pid) - 1)] == q_pids)
    width = max(int(sizes[q_groups[found]].max()) if found.any() else 1, 1)
    ranks = np.full((dist.shape[0], width), np.inf)
    num_pos = np.zeros(dist.shape[0], dtype=np.int64)
    bad = np.zeros(dist.shape[0], dtype=np.bool_)
    _compiled_kernel()(
        dist, g_pids, g_cams, q_pids, q_cams, grp_pid, grp_start, order.astype(np.int64), width, ranks, num_pos, bad
    )
    if bad.any():
        raise ValueError("distmat contains NaN")
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
    backend: Backend = "auto",
    allow_empty: bool = False,
) -> EvalResult:
    """CMC (up to ``max_rank``), mAP and mINP of a query x gallery distance matrix (smaller = closer).

    ``ap="standard"`` is non-interpolated AP (torchreid, fast-reid); ``ap="market"`` the official
    Market-1501 trapezoid AP. mINP follows Ye et al. (TPAMI 2021): positives / rank of the hardest.
    ``backend``: ``"numba"`` the compiled kernel, ``"numpy"`` the vectorised path (``chunk_size`` rows
    at a time), ``"auto"`` the kernel when numba is installed. Both give the same figures.
    ``allow_empty``: rows without any valid query give a result with ``num_valid == 0`` (and NaN
    figures; :func:`combine_results` leaves it out) instead of an error.
    """
    if ap not in ("standard", "market"):
        raise ValueError(f"ap must be 'standard' or 'market', got {ap!r}")
    if backend not in ("auto", "numba", "numpy"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'numpy', got {backend!r}")
    if backend == "numba" and not _have_numba():
        raise ValueError("backend='numba' needs numba installed")
    use_numba = backend == "numba" or (backend == "auto" and _have_numba())
    dist = _as_distance(distmat)
    qp, gp, qc, gc = (_as_int(x) for x in (q_pids, g_pids, q_camids, g_camids))
    nq, ng = dist.shape
    if len(qp) != nq or len(qc) != nq or len(gp) != ng or len(gc) != ng:
        raise ValueError(
            f"distmat is {nq}x{ng} but got {len(qp)} query pids, {len(qc)} query cameras, "
            f"{len(gp)} gallery pids, {len(gc)} gallery cameras"
        )

    if use_numba:
        parts = [_ranks_numba(np.ascontiguousarray(dist.numpy()), qp, gp, qc, gc)]
    else:
        if torch.isnan(dist).any():
            raise ValueError("distmat contains NaN")
        parts = (
            _chunk_ranks(dist[s : s + chunk_size], qp[s : s + chunk_size], gp, qc[s : s + chunk_size], gc)
            for s in range(0, nq, chunk_size)
        )
    cmc_sum = np.zeros(max_rank, dtype=np.float64)
    aps: list[np.ndarray] = []
    inps: list[np.ndarray] = []
    for ranks, num_pos in parts:
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
    if num_valid == 0 and allow_empty:
        return EvalResult(np.full(max_rank, np.nan), float("nan"), float("nan"), 0, nq, ap_all, ap_all.copy())
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
