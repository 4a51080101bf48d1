"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) in O((Q+G)·k) memory.

Input convention: the features themselves. Distances are **squared Euclidean** between them, as in
the authors' MATLAB/Python code; for L2-normalised features that is ``2 - 2·cos``. (Some ports, e.g.
torchreid's ``re_ranking``, square the distance matrix they are given, so feeding them squared
distances squares twice; give them plain Euclidean distances to match this function.)

Steps, as in the paper's code, without any dense (Q+G)² matrix:
1. block-wise distances to all N = Q+G items give each row's maximum (the per-row normalisation
   ``d(i, j) / max_j d(i, j)``) and its k1+1 nearest neighbours;
2. k-reciprocal sets R(i, k1) from the neighbour lists, expanded by the R(c, k1/2) of members c
   that overlap R(i, k1) by more than 2/3;
3. sparse rows ``V[i, j] = softmax(-d(i, j))`` over the expanded set, then local query expansion
   (mean of V over the k2 nearest neighbours);
4. Jaccard distance between each query row and every gallery row, accumulated over the shared
   support through an inverted index (only Q x G numbers are ever dense, the output itself);
5. ``final = (1 - lambda) · jaccard + lambda · normalised original distance``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

Array = np.ndarray | torch.Tensor


def _as_tensor(x: Array, dtype: torch.dtype) -> torch.Tensor:
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return t.to(dtype).contiguous()


def _sq_dist(a: torch.Tensor, a_sq: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between the rows of ``a`` and ``b`` (clamped at 0)."""
    return (a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)).clamp_min_(0)


def _neighbours(
    x: torch.Tensor, x_sq: torch.Tensor, k: int, block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row maximum distance and the indices of the k nearest items (self included)."""
    n = x.shape[0]
    row_max = torch.empty(n, dtype=x.dtype)
    nn_idx = torch.empty(n, k, dtype=torch.int64)
    for s in range(0, n, block):
        d = _sq_dist(x[s : s + block], x_sq[s : s + block], x, x_sq)
        row_max[s : s + block] = d.max(1).values
        # The item itself must come first even if rounding leaves a tiny positive self-distance.
        rows = torch.arange(d.shape[0])
        d[rows, rows + s] = -1.0
        nn_idx[s : s + block] = torch.topk(d, k, dim=1, largest=False, sorted=True).indices
    return row_max, nn_idx


def _reciprocal(nn: torch.Tensor) -> torch.Tensor:
    """Mask over ``nn`` (N x k): is row i among the neighbours of its neighbour nn[i, j]?"""
    rows = torch.arange(nn.shape[0])[:, None, None]
    return (nn[nn] == rows).any(2)


def _expanded_sets(nn_idx: torch.Tensor, k1: int, chunk: int = 2048) -> torch.Tensor:
    """Expanded k-reciprocal set of every item, as rows of indices padded with -1 (sorted, unique)."""
    kh = int(np.around(k1 / 2.0))
    full = nn_idx[:, : k1 + 1]
    half = nn_idx[:, : kh + 1]
    full_mask = _reciprocal(full)
    half_mask = _reciprocal(half)
    half_sets = torch.where(half_mask, half, -1)  # R(c, k1/2) of every c
    half_size = half_mask.sum(1)
    own = torch.where(full_mask, full, -1)  # R(i, k1)
    out = []
    for s in range(0, full.shape[0], chunk):
        r = own[s : s + chunk]  # (n, k1+1)
        cand = full[s : s + chunk]  # candidates c (valid where full_mask)
        c_sets = half_sets[cand]  # (n, k1+1, kh+1)
        inside = (c_sets[..., None] == r[:, None, None, :]) & (c_sets[..., None] >= 0)
        overlap = inside.any(3).sum(2)  # |R(c, k1/2) ∩ R(i, k1)|
        keep = full_mask[s : s + chunk] & (overlap > (2.0 / 3.0) * half_size[cand])
        extra = torch.where(keep[..., None], c_sets, -1).flatten(1)
        merged = torch.cat([r, extra], 1).sort(1).values
        dup = torch.zeros_like(merged, dtype=torch.bool)
        dup[:, 1:] = merged[:, 1:] == merged[:, :-1]
        merged[dup] = -1
        out.append(merged.sort(1).values)
    width = max(int((m >= 0).sum(1).max()) for m in out)
    return torch.cat([m[:, -width:] for m in out])


def _weights(
    x: torch.Tensor, x_sq: torch.Tensor, row_max: torch.Tensor, sets: torch.Tensor, chunk: int = 256
) -> sp.csr_matrix:
    """Sparse V: ``softmax(-d(i, j) / max_i)`` over each item's expanded set."""
    n = x.shape[0]
    vals = torch.zeros(sets.shape, dtype=x.dtype)
    for s in range(0, n, chunk):
        idx = sets[s : s + chunk]
        safe = idx.clamp_min(0)
        dot = torch.einsum("nd,nkd->nk", x[s : s + chunk], x[safe])
        d = (x_sq[s : s + chunk, None] + x_sq[safe] - 2.0 * dot).clamp_min_(0)
        d = d / row_max[s : s + chunk, None]
        w = torch.where(idx >= 0, torch.exp(-d), torch.zeros((), dtype=x.dtype))
        vals[s : s + chunk] = w / w.sum(1, keepdim=True)
    mask = (sets >= 0).numpy()
    rows = np.broadcast_to(np.arange(n)[:, None], mask.shape)[mask]
    return sp.csr_matrix(
        (vals.numpy()[mask], (rows, sets.numpy()[mask])), shape=(n, n), dtype=np.float64
    )


def _jaccard_min_sum(vq: sp.csr_matrix, vg_csc: sp.csc_matrix) -> np.ndarray:
    """``out[i, j] = sum_k min(vq[i, k], vg[j, k])`` through the inverted index of vg's columns."""
    coo = vq.tocoo()
    n_q, n_g = vq.shape[0], vg_csc.shape[0]
    starts = vg_csc.indptr[coo.col]
    counts = vg_csc.indptr[coo.col + 1] - starts
    total = int(counts.sum())
    # Positions of every (query entry, gallery entry) pair sharing a column k.
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    pos = np.repeat(starts, counts) + (np.arange(total) - offsets)
    a = np.repeat(coo.data, counts)
    b = vg_csc.data[pos]
    key = np.repeat(coo.row.astype(np.int64), counts) * n_g + vg_csc.indices[pos]
    return np.bincount(key, weights=np.minimum(a, b), minlength=n_q * n_g).reshape(n_q, n_g)


def rerank(
    qf: Array,
    gf: Array,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    block: int = 1024,
    query_chunk: int = 64,
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """Re-ranked Q x G distance matrix (float32) for query features ``qf`` and gallery ``gf``.

    Distances are squared Euclidean between the given features (see the module docstring).
    Memory: O((Q+G)·(k1 + d)) plus the Q x G output; ``block`` rows at a time for the N x N pass.
    """
    if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"need k1 >= 1, k2 >= 1 and 0 <= lambda <= 1, got {k1}, {k2}, {lambda_value}")
    q = _as_tensor(qf, dtype)
    g = _as_tensor(gf, dtype)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"features must be 2-D with equal width, got {tuple(q.shape)} and {tuple(g.shape)}")
    nq, n = q.shape[0], q.shape[0] + g.shape[0]
    k = min(max(k1 + 1, k2), n)
    if k1 + 1 > n:
        raise ValueError(f"k1={k1} needs more than {k1} items, got {n}")
    x = torch.cat([q, g])
    x_sq = (x * x).sum(1)

    with torch.inference_mode():
        row_max, nn_idx = _neighbours(x, x_sq, k, block)
        row_max = row_max.clamp_min(torch.finfo(dtype).tiny)
        sets = _expanded_sets(nn_idx, k1)
        v = _weights(x, x_sq, row_max, sets)
    if k2 != 1:
        qe_rows = np.repeat(np.arange(n), k2)
        qe = sp.csr_matrix(
            (np.full(n * k2, 1.0 / k2), (qe_rows, nn_idx[:, :k2].numpy().ravel())), shape=(n, n)
        )
        v = (qe @ v).tocsr()
    vg_csc = v[nq:].tocsc()
    vg_csc.sort_indices()

    out = np.empty((nq, n - nq), dtype=np.float32)
    with torch.inference_mode():
        for s in range(0, nq, query_chunk):
            e = min(s + query_chunk, nq)
            min_sum = _jaccard_min_sum(v[s:e], vg_csc)
            jaccard = 1.0 - min_sum / (2.0 - min_sum)
            orig = _sq_dist(q[s:e], x_sq[s:e], g, x_sq[nq:]) / row_max[s:e, None]
            out[s:e] = (1.0 - lambda_value) * jaccard + lambda_value * orig.double().numpy()
    return out
