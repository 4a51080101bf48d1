"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) in O((Q+G)·k) memory.

Input convention: the features themselves. Distances are **squared Euclidean** between them, as in
the authors' MATLAB/Python code; for L2-normalised features that is ``2 - 2·cos``. (Some ports, e.g.
torchreid's ``re_ranking``, square the distance matrix they are given, so feeding them squared
distances squares twice; give them plain Euclidean distances to match this function.)

Steps, as in the paper's code, without any dense (Q+G)² matrix:
1. block-wise distances to all N = Q+G items give each row's maximum (the per-row normalisation
   ``d(i, j) / max_j d(i, j)``) and its k1+1 nearest neighbours. The distance matrix is symmetric, so
   only blocks on and above the diagonal are computed (half the matmul work). Each block (a torch
   matmul) updates the running maxima and nearest-neighbour lists of its rows and, transposed, of its
   columns: a vectorised compiled pass (numba) turns the dot products into distances and marks the
   entries that beat their row's or column's current k-th distance, and only those few enter the
   lists. Every list meets its candidates in ascending index order and a tie never displaces an
   earlier entry, so the lists are the first k of a stable sort (the item itself first), as in the
   reference code. The Q x G part of each block is kept in the output, which step 5 finishes in place;
2. k-reciprocal sets R(i, k1) from the neighbour lists, expanded by the R(c, k1/2) of members c
   that overlap R(i, k1) by more than 2/3;
3. sparse rows ``V[i, j] = softmax(-d(i, j))`` over the expanded set, then local query expansion
   (mean of V over the k2 nearest neighbours);
4. Jaccard distance between each query row and every gallery row, accumulated over the shared
   support through an inverted index (only Q x G numbers are ever dense, the output itself);
5. ``final = (1 - lambda) · jaccard + lambda · normalised original distance``, one query row at a
   time in a compiled loop (steps 4 and 5 together), written over the distances step 1 left there.

The building blocks (:func:`as_tensor`, :func:`neighbours`, :func:`expanded_sets`, :func:`weights`,
:func:`jaccard_min_sum`) are public for callers that re-rank a set against itself
(``reidkit.search`` clustering). numba is imported, and the kernels compiled or loaded from its
on-disk cache, on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse as sp
import torch

Array = np.ndarray | torch.Tensor

__all__ = ["as_tensor", "expanded_sets", "jaccard_min_sum", "neighbours", "rerank", "rerank_blocks", "weights"]


def as_tensor(x: Array, dtype: torch.dtype) -> torch.Tensor:
    """``x`` (array or tensor) as a contiguous CPU tensor of ``dtype`` (no copy when it already is one)."""
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return t.to(dtype).contiguous()


# --- compiled kernels (plain Python here; numba compiles them on first use) ---------------------------


def _block_dist(dot, sq_i, sq_j, zero, row_tau, col_tau, col_max, mask):
    """Distances of one block in place of its dot products, ``max(sq_i[a] + sq_j[b] - 2 dot[a, b], 0)``
    (rounded as the torch code rounds them), the columns' running maxima, and ``mask``: the entries
    that beat their row's or their column's current k-th distance (candidates for the lists).
    Element-wise, so it vectorises; ``zero`` has the features' dtype."""
    bi, bj = dot.shape
    for a in range(bi):
        sa = sq_i[a]
        ta = row_tau[a]
        row = dot[a]
        m = mask[a]
        for b in range(bj):
            v = (sa + sq_j[b]) - (row[b] + row[b])
            v = v if v > zero else zero
            row[b] = v
            cm = col_max[b]
            col_max[b] = v if v > cm else cm
            ct = col_tau[b]
            m[b] = v < (ct if ct > ta else ta)


def _block_insert(dist, mask, words, i0, j0, cols_too, best_d, best_i):
    """Insert a block's candidates (``mask``, flat, row-major; ``words``: the same bytes 8 at a time,
    to skip empty stretches) into the k-nearest lists of their rows (``i0 + a`` gets ``(d, j0 + b)``)
    and, with ``cols_too``, of their columns. Each list meets its candidates in ascending index order
    and a new entry goes after any equal distance, so a list holds the first k of a stable sort."""
    bj = dist.shape[1]
    k = best_d.shape[1]
    total = dist.shape[0] * bj
    for w in range((total + 7) // 8):
        if words[w] == 0:
            continue
        for f in range(8 * w, min(8 * w + 8, total)):
            if not mask[f]:
                continue
            a = f // bj
            b = f - a * bj
            v = dist[a, b]
            for r, c in ((i0 + a, j0 + b), (j0 + b, i0 + a)):
                if v < best_d[r, k - 1]:
                    p = k - 1
                    while p > 0 and best_d[r, p - 1] > v:
                        best_d[r, p] = best_d[r, p - 1]
                        best_i[r, p] = best_i[r, p - 1]
                        p -= 1
                    best_d[r, p] = v
                    best_i[r, p] = c
                if not cols_too:
                    break


def _rows_kernel(vq_ptr, vq_idx, vq_val, vg_ptr, vg_idx, vg_val, s, e, orig, orig_row0, row_max, lam, out):
    """Steps 4 and 5 for query rows s..e-1: Jaccard through the inverted index, then the blend.

    ``sum_k min(vq[i, k], vg[j, k])`` is accumulated in the order of ``jaccard_min_sum`` (query entries
    by column, then the column's gallery entries), so the sums are the same to the bit.
    """
    ng = out.shape[1]
    acc = np.zeros(ng)
    for i in range(s, e):
        acc[:] = 0.0
        for t in range(vq_ptr[i], vq_ptr[i + 1]):
            c = vq_idx[t]
            a = vq_val[t]
            for u in range(vg_ptr[c], vg_ptr[c + 1]):
                b = vg_val[u]
                acc[vg_idx[u]] += a if a < b else b
        rm = row_max[i]
        r = i - orig_row0
        for j in range(ng):
            m = acc[j]
            o = orig[r, j] / rm
            out[i, j] = (1.0 - lam) * (1.0 - m / (2.0 - m)) + lam * np.float64(o)


_KERNELS: dict[str, Callable] = {}


def _kernel(name: str) -> Callable:
    if name not in _KERNELS:
        import numba

        # No reassociation or contraction (the distances round as in the torch code); ignoring NaN,
        # inf and signed zeros lets the element-wise max and compare vectorise.
        _KERNELS["block_dist"] = numba.njit(cache=True, nogil=True, fastmath={"nnan", "ninf", "nsz"})(_block_dist)
        _KERNELS["block_insert"] = numba.njit(cache=True, nogil=True)(_block_insert)
        _KERNELS["rows"] = numba.njit(cache=True, nogil=True)(_rows_kernel)
        _KERNELS["weights"] = numba.njit(cache=True, nogil=True)(_weights_kernel)
    return _KERNELS[name]


def _sq_norms(x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """``(x * x).sum(1)``, ``chunk`` rows at a time (the same sums without an N x D temporary)."""
    return torch.cat([(c * c).sum(1) for c in x.split(chunk)]) if len(x) else x.new_zeros(0)


def _sq_dist(a: torch.Tensor, a_sq: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between the rows of ``a`` and ``b`` (clamped at 0)."""
    return (a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)).clamp_min_(0)


def _neighbours_parts(
    parts: list[tuple[torch.Tensor, torch.Tensor]],
    k: int,
    block: int,
    out: np.ndarray | None = None,
    nq: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`neighbours` of the rows of several feature matrices taken as one (no concatenated copy).

    ``parts``: ``(x, x_sq)`` pairs. With ``out`` (``nq`` x the rest, float32), the distances between the
    first ``nq`` items and the others are stored in it as they come.
    """
    blocks = []  # (rows, their squared norms, index of the first row)
    offset = 0
    for x, x_sq in parts:
        for s in range(0, x.shape[0], block):
            blocks.append((x[s : s + block], x_sq[s : s + block].numpy(), offset + s))
        offset += x.shape[0]
    n = offset
    dtype = parts[0][0].dtype
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    best_d = np.full((n, k), np.inf, dtype=np_dtype)
    best_i = np.full((n, k), -1, dtype=np.int64)
    row_max = np.zeros(n, dtype=np_dtype)
    buf = torch.empty(block * block, dtype=dtype)
    mask_buf = np.zeros(-(-block * block // 8) * 8, dtype=np.bool_)  # whole 8-byte words
    mask_words = mask_buf.view(np.uint64)
    dist_kernel, insert_kernel = _kernel("block_dist"), _kernel("block_insert")
    zero = np_dtype(0)
    no_cols = np.full(block, -np.inf, dtype=np_dtype)
    with torch.inference_mode():
        for bi, (xi, sq_i, i0) in enumerate(blocks):
            for xj, sq_j, j0 in blocks[bi:]:
                ni, nj = xi.shape[0], xj.shape[0]
                diag = i0 == j0
                dot = buf[: ni * nj].view(ni, nj)
                torch.mm(xi, xj.T, out=dot)
                d = dot.numpy()
                mask = mask_buf[: ni * nj].reshape(ni, nj)
                col_max = np.zeros(nj, dtype=np_dtype)
                col_tau = no_cols[:nj] if diag else best_d[j0 : j0 + nj, k - 1].copy()
                dist_kernel(d, sq_i, sq_j, zero, best_d[i0 : i0 + ni, k - 1].copy(), col_tau, col_max, mask)
                np.maximum(row_max[i0 : i0 + ni], d.max(1), out=row_max[i0 : i0 + ni])
                if diag:  # the item itself first, whatever rounding left
                    np.fill_diagonal(d, -1)
                    np.fill_diagonal(mask, True)
                else:
                    np.maximum(row_max[j0 : j0 + nj], col_max, out=row_max[j0 : j0 + nj])
                if out is not None and i0 < nq <= j0:
                    out[i0 : i0 + ni, j0 - nq : j0 - nq + nj] = d
                insert_kernel(d, mask_buf, mask_words, i0, j0, not diag, best_d, best_i)
    return torch.from_numpy(row_max), torch.from_numpy(best_i)


def neighbours(x: torch.Tensor, x_sq: torch.Tensor, k: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row maximum squared distance and the indices of the k nearest items (self first), sorted.

    ``x``: N x D features (float32 or float64 tensor), ``x_sq`` their squared norms. Ties keep the
    lower index first (a stable sort's order). ``block``: rows per block; only the blocks on and
    above the diagonal are computed. Memory: O(N·k) plus one ``block`` x ``block`` matrix.
    """
    return _neighbours_parts([(x.contiguous(), x_sq.contiguous())], k, block)


def _reciprocal(nn: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Mask over ``nn`` (N x k): is row i among the neighbours of its neighbour nn[i, j]?

    ``chunk`` rows at a time, so the N x k x k lookup never exists whole."""
    out = torch.empty(nn.shape, dtype=torch.bool)
    for s in range(0, nn.shape[0], chunk):
        rows = torch.arange(s, min(s + chunk, nn.shape[0]))[:, None, None]
        out[s : s + chunk] = (nn[nn[s : s + chunk]] == rows).any(2)
    return out


def expanded_sets(nn_idx: torch.Tensor, k1: int, chunk: int = 2048) -> torch.Tensor:
    """Expanded k-reciprocal set of every item, as rows of indices padded with -1 (sorted, unique).

    ``nn_idx``: N x k nearest-neighbour indices from :func:`neighbours` (k >= k1 + 1).
    """
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
        merged = merged.sort(1).values  # -1 first, the set at the end of each row
        out.append(merged[:, -max(int((merged >= 0).sum(1).max()), 1) :].clone())  # no 250-wide rows kept
    width = max(m.shape[1] for m in out)
    return torch.cat([torch.nn.functional.pad(m, (width - m.shape[1], 0), value=-1) for m in out])


def _weights_kernel(xq, xg, nq, x_sq, row_max, sets, zero, vals):
    """``vals[i, t] = softmax over t of -d(i, sets[i, t]) / row_max[i]`` (0 where ``sets`` is -1)."""
    n, w = sets.shape
    for i in range(n):
        xi = xq[i] if i < nq else xg[i - nq]
        total = zero
        for t in range(w):
            j = sets[i, t]
            if j < 0:
                vals[i, t] = zero
                continue
            xj = xq[j] if j < nq else xg[j - nq]
            dot = np.dot(xi, xj)
            d = (x_sq[i] + x_sq[j]) - (dot + dot)
            if d < zero:
                d = zero
            e = np.exp(-(d / row_max[i]))
            vals[i, t] = e
            total += e
        for t in range(w):
            vals[i, t] = vals[i, t] / total


def _weights_parts(
    xq: torch.Tensor, xg: torch.Tensor, x_sq: torch.Tensor, row_max: torch.Tensor, sets: torch.Tensor
) -> sp.csr_matrix:
    """:func:`weights` for the items of ``xq`` followed by those of ``xg`` (no concatenated copy)."""
    n = sets.shape[0]
    xq_np, xg_np = xq.contiguous().numpy(), xg.contiguous().numpy()
    vals = np.empty(tuple(sets.shape), dtype=xq_np.dtype)
    sets_np = sets.numpy()
    _kernel("weights")(xq_np, xg_np, xq_np.shape[0], x_sq.numpy(), row_max.numpy(), sets_np, xq_np.dtype.type(0), vals)
    mask = sets_np >= 0
    rows = np.broadcast_to(np.arange(n)[:, None], mask.shape)[mask]
    return sp.csr_matrix((vals[mask], (rows, sets_np[mask])), shape=(n, n), dtype=np.float64)


def weights(
    x: torch.Tensor, x_sq: torch.Tensor, row_max: torch.Tensor, sets: torch.Tensor, chunk: int = 256
) -> sp.csr_matrix:
    """Sparse N x N V (float64 CSR): ``softmax(-d(i, j) / row_max[i])`` over each item's expanded set.

    ``sets``: rows of indices padded with -1, from :func:`expanded_sets`. ``chunk`` is accepted for
    compatibility and unused (the compiled loop needs no chunking).
    """
    del chunk
    return _weights_parts(x, x[:0], x_sq, row_max, sets)


def jaccard_min_sum(vq: sp.csr_matrix, vg_csc: sp.csc_matrix) -> np.ndarray:
    """``out[i, j] = sum_k min(vq[i, k], vg[j, k])`` (float64, dense) through the inverted index of vg's
    columns (``vg_csc``: vg in CSC form with sorted indices)."""
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


def _check(
    qf: Array, gf: Array, k1: int, k2: int, lambda_value: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"need k1 >= 1, k2 >= 1 and 0 <= lambda <= 1, got {k1}, {k2}, {lambda_value}")
    q = as_tensor(qf, dtype)
    g = as_tensor(gf, dtype)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"features must be 2-D with equal width, got {tuple(q.shape)} and {tuple(g.shape)}")
    n = q.shape[0] + g.shape[0]
    if k1 + 1 > n:
        raise ValueError(f"k1={k1} needs more than {k1} items, got {n}")
    return q, g


def _sparse_parts(
    q: torch.Tensor,
    g: torch.Tensor,
    k1: int,
    k2: int,
    block: int,
    out: np.ndarray | None,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, sp.csr_matrix, sp.csc_matrix]:
    """Steps 1-3: squared norms of the queries and gallery, each item's row maximum, and the sparse
    query rows and (column-major) gallery rows of ``V``. ``out``: where step 1 leaves the Q x G distances."""
    nq, n = q.shape[0], q.shape[0] + g.shape[0]
    k = min(max(k1 + 1, k2), n)
    q_sq, g_sq = _sq_norms(q), _sq_norms(g)
    x_sq = torch.cat([q_sq, g_sq])
    with torch.inference_mode():
        row_max, nn_idx = _neighbours_parts([(q, q_sq), (g, g_sq)], k, block, out, nq)
        row_max = row_max.clamp_min(torch.finfo(q.dtype).tiny)
        sets = expanded_sets(nn_idx, k1)
        v = _weights_parts(q, g, x_sq, row_max, sets)
    del sets
    if k2 != 1:
        qe_rows = np.repeat(np.arange(n), k2)
        qe = sp.csr_matrix((np.full(n * k2, 1.0 / k2), (qe_rows, nn_idx[:, :k2].numpy().ravel())), shape=(n, n))
        v = (qe @ v).tocsr()
        del qe, qe_rows
    vq = v[:nq]
    vg_csc = v[nq:].tocsc()
    vg_csc.sort_indices()
    return q_sq, g_sq, row_max.numpy(), vq, vg_csc


def rerank(
    qf: Array,
    gf: Array,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    block: int = 2048,
    query_chunk: int = 64,
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """Re-ranked Q x G distance matrix (float32) for query features ``qf`` and gallery ``gf``.

    Distances are squared Euclidean between the given features (see the module docstring).
    Memory: the Q x G output plus O((Q+G)·k1) and one ``block`` x ``block`` matrix; the features are
    not copied when they are already contiguous arrays of ``dtype``. ``query_chunk``: query rows per
    recomputed distance block on the float64 path. :func:`rerank_blocks` gives the same matrix a block
    of rows at a time, without holding all of it.
    """
    q, g = _check(qf, gf, k1, k2, lambda_value, dtype)
    nq = q.shape[0]
    out = np.empty((nq, g.shape[0]), dtype=np.float32)
    # In float32 the block pass leaves the query x gallery distances in ``out`` (step 5 reads them back);
    # in float64 they are recomputed at full precision instead.
    keep = dtype == torch.float32
    q_sq, g_sq, rm, vq, vg_csc = _sparse_parts(q, g, k1, k2, block, out if keep else None)
    if keep:
        sparse = (vq.indptr, vq.indices, vq.data, vg_csc.indptr, vg_csc.indices, vg_csc.data)
        _kernel("rows")(*sparse, 0, nq, out, 0, rm, float(lambda_value), out)
    else:
        for s, part in _row_blocks(q, g, q_sq, g_sq, rm, vq, vg_csc, lambda_value, query_chunk):
            out[s : s + len(part)] = part
    return out


def _row_blocks(
    q: torch.Tensor,
    g: torch.Tensor,
    q_sq: torch.Tensor,
    g_sq: torch.Tensor,
    rm: np.ndarray,
    vq: sp.csr_matrix,
    vg_csc: sp.csc_matrix,
    lambda_value: float,
    rows: int,
) -> Iterator[tuple[int, np.ndarray]]:
    """Steps 4 and 5 for ``rows`` query rows at a time, their original distances computed again."""
    kernel = _kernel("rows")
    vg = (vg_csc.indptr, vg_csc.indices, vg_csc.data)
    nq, ng = q.shape[0], g.shape[0]
    for s in range(0, nq, rows):
        e = min(s + rows, nq)
        part = vq[s:e]
        with torch.inference_mode():
            orig = _sq_dist(q[s:e], q_sq[s:e], g, g_sq).numpy()
        out = np.empty((e - s, ng), dtype=np.float32)
        kernel(part.indptr, part.indices, part.data, *vg, 0, e - s, orig, 0, rm[s:e], float(lambda_value), out)
        yield s, out


def rerank_blocks(
    qf: Array,
    gf: Array,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    block: int = 2048,
    rows: int = 512,
    dtype: torch.dtype = torch.float32,
) -> Iterator[tuple[int, np.ndarray]]:
    """The re-ranked matrix of :func:`rerank`, ``rows`` query rows at a time: yields ``(first_row,
    (r, G) float32)``. Nothing Q x G is ever held: memory is O((Q+G)·k1) plus one block of rows, whose
    original distances are computed again (a matmul) instead of kept. Evaluation at MSMT17 size
    (11,659 x 82,161: 3.6 GB as a float32 matrix) thus fits in a fraction of that. The values equal
    :func:`rerank`'s up to the last bits of a float32 matmul done in other blocks."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    q, g = _check(qf, gf, k1, k2, lambda_value, dtype)
    q_sq, g_sq, rm, vq, vg_csc = _sparse_parts(q, g, k1, k2, block, None)
    yield from _row_blocks(q, g, q_sq, g_sq, rm, vq, vg_csc, lambda_value, rows)


# The names the building blocks had before they were public (``reidkit.search`` imported these).
_as_tensor = as_tensor
_neighbours = neighbours
_expanded_sets = expanded_sets
_weights = weights
_jaccard_min_sum = jaccard_min_sum
