"""Album clustering: group person crops (or tracks) into identities, without labels.

Distances
    ``rerank=True`` (default): the k-reciprocal re-ranked distance of Zhong et al. (CVPR 2017) of every
    item against every other item of the *same* set, ``(1 - lambda) · jaccard + lambda · d / max_d``
    with ``d`` the squared Euclidean distance of the L2-normalised features (see
    :mod:`reidkit.evaluation.rerank`, whose building blocks are reused). It is computed on the set
    itself rather than as ``rerank(f, f)``: that call re-ranks the concatenation ``[f; f]``, where
    every item's nearest neighbour is its own copy, which halves the effective ``k1`` and doubles the
    work (``bench/cluster_market.py`` measures the difference). The original-distance term is
    normalised per row, which is asymmetric; it is symmetrised as ``(D + Dᵀ) / 2``. The default
    ``lambda_value=0`` (pure Jaccard distance, symmetric, in [0, 1]) is the usual choice for
    clustering re-ID features (SpCL, Cluster Contrast).
    ``rerank=False``: cosine distance ``1 - cos`` in [0, 2].

Backends and size limits (N items; ``backend="auto"`` picks sparse wherever it is exact, which is
always but for re-ranked ``eps >= 1 - lambda``; it is also the faster of the two)
    * ``"dense"``: the full N x N float32 distance matrix (N = 20,000: 1.6 GB), then its eps-graph;
      refused above :data:`DENSE_MAX` items. Needed by ``method="agglomerative"`` (scipy's linkage
      also takes an N(N-1)/2 float64 copy: 1.6 GB more at N = 20,000).
    * ``"sparse"``: only the pairs within ``eps``, O(N · neighbours) memory. With re-ranking, two
      items whose k-reciprocal encodings share no support have Jaccard distance exactly 1, so their
      distance is at least ``1 - lambda``; the pairs that share support are enumerated through an
      inverted index (in row chunks of bounded size) and the graph is *exact* for
      ``eps < 1 - lambda`` (larger ``eps`` is refused). Without re-ranking the cosine eps-graph is
      built block by block, exactly. Time stays O(N²·D) for the neighbour search (brute force): on 2
      cores, 100,000 512-d items take 157 s re-ranked (peak RSS 2.6 GB), the Market-1501 gallery
      (15,913) 11-16 s.

Clustering (all on the eps-neighbourhood graph; scikit-learn is not needed)
    * ``"dbscan"``: DBSCAN (Ester et al. 1996) with scikit-learn's conventions: neighbours are the
      items at distance ``<= eps``, an item is *core* if it has at least ``min_samples`` neighbours
      counting itself; clusters are the connected components of core items linked within ``eps``;
      a non-core item within ``eps`` of a core item joins the cluster of its nearest core neighbour
      (scikit-learn takes whichever its search reaches first); the rest is noise.
    * ``"mutual_knn"``: connected components of the mutual ``knn``-nearest-neighbour graph
      restricted to pairs within ``eps``.
    * ``"agglomerative"``: average-linkage agglomerative clustering cut at ``eps`` (dense only).

Every method returns labels ``0 .. C-1`` numbered by decreasing cluster size, and ``-1`` for noise;
clusters of one item are reported as noise too.

Metrics: :func:`nmi` and :func:`pairwise_f_score`, with noise items (label -1) in the prediction
counted as singleton clusters.
"""

from __future__ import annotations

import html
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from reidkit.evaluation.rerank import as_tensor, expanded_sets, jaccard_min_sum, neighbours, weights

if TYPE_CHECKING:
    from reidkit.search.storage.gallery import Gallery

log = logging.getLogger(__name__)

Method = Literal["dbscan", "mutual_knn", "agglomerative"]
Backend = Literal["auto", "dense", "sparse"]

DENSE_MAX = 20_000  # items: the dense backend (and agglomerative clustering) is refused above this
DEFAULT_EPS = {True: 0.45, False: 0.15}  # by rerank; from bench/cluster_market.py on Market-1501 (OSNet x0.25)
_PAIR_BUDGET = 4_000_000  # (item, item, shared column) triples expanded at once by the sparse Jaccard
_BLOCK = 1024


# -- distances -----------------------------------------------------------------------------------------
def _unit(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, dtype=np.float32)
    if f.ndim != 2:
        raise ValueError(f"features must be N x D, got shape {f.shape}")
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


@dataclass
class _Encoding:
    """The k-reciprocal encoding of a set: sparse rows V (after query expansion) and row maxima."""

    x: torch.Tensor
    x_sq: torch.Tensor
    row_max: torch.Tensor
    v: sp.csr_matrix
    v_csc: sp.csc_matrix

    @property
    def inv_max(self) -> np.ndarray:
        return 1.0 / self.row_max.double().numpy()


def _encode(f: np.ndarray, k1: int, k2: int) -> _Encoding:
    n = len(f)
    if k1 < 1 or k2 < 1:
        raise ValueError(f"need k1 >= 1 and k2 >= 1, got {k1}, {k2}")
    if k1 + 1 > n:
        raise ValueError(f"k1={k1} needs more than {k1} items, got {n}")
    x = as_tensor(f, torch.float32)
    x_sq = (x * x).sum(1)
    with torch.inference_mode():
        row_max, nn_idx = neighbours(x, x_sq, min(max(k1 + 1, k2), n), _BLOCK)
        row_max = row_max.clamp_min(torch.finfo(torch.float32).tiny)
        v = weights(x, x_sq, row_max, expanded_sets(nn_idx, k1))
    if k2 != 1:
        rows = np.repeat(np.arange(n), k2)
        qe = sp.csr_matrix((np.full(n * k2, 1.0 / k2), (rows, nn_idx[:, :k2].numpy().ravel())), shape=(n, n))
        v = (qe @ v).tocsr()
    v_csc = v.tocsc()
    v_csc.sort_indices()
    return _Encoding(x, x_sq, row_max, v, v_csc)


def _row_chunks(enc: _Encoding) -> list[tuple[int, int]]:
    """Row ranges whose inverted-index expansion stays under :data:`_PAIR_BUDGET` triples each."""
    budget = _PAIR_BUDGET
    col_count = np.diff(enc.v_csc.indptr)
    per_row = np.asarray(
        sp.csr_matrix((col_count[enc.v.indices].astype(np.float64), enc.v.indices, enc.v.indptr), enc.v.shape).sum(1)
    ).ravel()
    bounds, start, acc = [], 0, 0.0
    for i, c in enumerate(per_row):
        if acc + c > budget and i > start:
            bounds.append((start, i))
            start, acc = i, 0.0
        acc += c
    bounds.append((start, len(per_row)))
    return bounds


def reranked_distances(features: np.ndarray, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.0) -> np.ndarray:
    """Dense symmetric N x N (float32) re-ranked distances of a set against itself (zero diagonal).

    Memory: the N x N output (4·N² bytes) plus O(N·k) for the encoding.
    """
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"need 0 <= lambda <= 1, got {lambda_value}")
    f = _unit(features)
    n = len(f)
    enc = _encode(f, k1, k2)
    out = np.empty((n, n), dtype=np.float32)
    inv = enc.inv_max
    for s, e in _row_chunks(enc):
        for s2 in range(s, e, 256):  # also bound the chunk x N float64 block of the bincount
            e2 = min(e, s2 + 256)
            min_sum = jaccard_min_sum(enc.v[s2:e2], enc.v_csc)
            block = 1.0 - min_sum / (2.0 - min_sum)
            if lambda_value > 0:
                xb = enc.x[s2:e2]
                sq = (enc.x_sq[s2:e2, None] + enc.x_sq[None, :] - 2.0 * (xb @ enc.x.T)).clamp_min_(0).double().numpy()
                block = (1.0 - lambda_value) * block + lambda_value * sq * 0.5 * (inv[s2:e2, None] + inv[None, :])
            out[s2:e2] = block
    np.fill_diagonal(out, 0.0)
    return np.maximum(out, 0.0, out=out)  # rounding can leave -1e-7


def cosine_distances(features: np.ndarray) -> np.ndarray:
    """Dense N x N (float32) cosine distances ``1 - cos`` (zero diagonal)."""
    f = _unit(features)
    out = 1.0 - f @ f.T
    np.fill_diagonal(out, 0.0)
    return np.maximum(out, 0.0, out=out)


@dataclass
class EpsGraph:
    """The pairs of distinct items at distance ``<= eps``, both directions, as parallel arrays."""

    n: int
    rows: np.ndarray
    cols: np.ndarray
    dist: np.ndarray
    eps: float

    def within(self, eps: float) -> EpsGraph:
        """The subgraph of pairs within a smaller ``eps`` (for eps sweeps on one graph)."""
        if eps > self.eps:
            raise ValueError(f"graph holds pairs within {self.eps}; cannot widen it to {eps}")
        keep = self.dist <= eps
        return EpsGraph(self.n, self.rows[keep], self.cols[keep], self.dist[keep], eps)

    @property
    def n_edges(self) -> int:
        return len(self.rows) // 2


def _symmetric(n: int, rows: np.ndarray, cols: np.ndarray, dist: np.ndarray, eps: float) -> EpsGraph:
    """Union of the edges in both directions (the smaller distance where both exist), no self loops."""
    r = np.concatenate([rows, cols]).astype(np.int64)
    c = np.concatenate([cols, rows]).astype(np.int64)
    d = np.concatenate([dist, dist]).astype(np.float32)
    keep = r != c
    r, c, d = r[keep], c[keep], d[keep]
    order = np.lexsort((d, c, r))
    r, c, d = r[order], c[order], d[order]
    first = np.ones(len(r), bool)
    first[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
    return EpsGraph(n, r[first], c[first], d[first], eps)


def graph_from_dense(dist: np.ndarray, eps: float) -> EpsGraph:
    """The eps-graph of a dense distance matrix (read block by block)."""
    n = len(dist)
    parts_r, parts_c, parts_d = [], [], []
    for s in range(0, n, _BLOCK):
        r, c = np.nonzero(dist[s : s + _BLOCK] <= eps)
        parts_r.append(r + s)
        parts_c.append(c)
        parts_d.append(dist[s : s + _BLOCK][r, c])
    if n == 0:
        return EpsGraph(0, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), eps)
    return _symmetric(n, np.concatenate(parts_r), np.concatenate(parts_c), np.concatenate(parts_d), eps)


def reranked_graph(
    features: np.ndarray, eps: float, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.0
) -> EpsGraph:
    """The eps-graph of the re-ranked distances without the N x N matrix (exact for ``eps < 1 - lambda``)."""
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"need 0 <= lambda <= 1, got {lambda_value}")
    if eps >= 1.0 - lambda_value:
        raise ValueError(
            f"the sparse re-ranked graph is exact only for eps < 1 - lambda = {1 - lambda_value:g} (got eps={eps}): "
            "pairs whose k-reciprocal sets share nothing are that far apart; use the dense backend"
        )
    f = _unit(features)
    n = len(f)
    enc = _encode(f, k1, k2)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for s, e in _row_chunks(enc):
        coo = enc.v[s:e].tocoo()
        starts = enc.v_csc.indptr[coo.col]
        counts = enc.v_csc.indptr[coo.col + 1] - starts
        total = int(counts.sum())
        offsets = np.repeat(np.cumsum(counts) - counts, counts)
        pos = np.repeat(starts, counts) + (np.arange(total) - offsets)
        mins = np.minimum(np.repeat(coo.data, counts), enc.v_csc.data[pos])
        m = sp.csr_matrix((mins, (np.repeat(coo.row, counts), enc.v_csc.indices[pos])), shape=(e - s, n)).tocoo()
        rows, cols, min_sum = m.row.astype(np.int64) + s, m.col.astype(np.int64), m.data
        d = np.maximum(1.0 - min_sum / (2.0 - min_sum), 0.0)
        keep = (1.0 - lambda_value) * d <= eps  # the original-distance term only adds
        rows, cols, d = rows[keep], cols[keep], d[keep]
        if lambda_value > 0:
            d = (1.0 - lambda_value) * d
            inv = enc.inv_max
            for b in range(0, len(rows), 65536):
                r, c = rows[b : b + 65536], cols[b : b + 65536]
                xr, xc = enc.x[torch.from_numpy(r)], enc.x[torch.from_numpy(c)]
                sq = (enc.x_sq[r] + enc.x_sq[c] - 2.0 * (xr * xc).sum(1)).clamp_min_(0).double().numpy()
                d[b : b + 65536] += lambda_value * sq * 0.5 * (inv[r] + inv[c])  # symmetrised d / max_d
        keep = d <= eps
        parts.append((rows[keep], cols[keep], d[keep].astype(np.float32)))
    return _symmetric(n, *(np.concatenate(p) for p in zip(*parts, strict=True)), eps)


def cosine_graph(features: np.ndarray, eps: float) -> EpsGraph:
    """The eps-graph of cosine distances ``1 - cos``, block by block (no N x N matrix)."""
    f = _unit(features)
    parts_r, parts_c, parts_d = [], [], []
    for s in range(0, len(f), _BLOCK):
        d = 1.0 - f[s : s + _BLOCK] @ f.T  # as cosine_distances, so both backends agree to the last bit
        r, c = np.nonzero(d <= eps)
        parts_r.append(r + s)
        parts_c.append(c)
        parts_d.append(np.maximum(d[r, c], 0.0))
    return _symmetric(len(f), np.concatenate(parts_r), np.concatenate(parts_c), np.concatenate(parts_d), eps)


def distance_graph(
    features: np.ndarray,
    eps: float,
    *,
    rerank: bool = True,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.0,
    backend: Backend = "auto",
) -> EpsGraph:
    """The eps-graph of a feature set under the chosen distance and backend (see the module docstring)."""
    n = len(features)
    if backend == "auto":  # sparse wherever it is exact: it is also faster (Market-1501 gallery: 11 s vs 19 s)
        backend = "sparse" if not rerank or eps < 1.0 - lambda_value else "dense"
    if backend == "dense":
        _check_dense(n)
        return graph_from_dense(_dense(features, rerank, k1, k2, lambda_value), eps)
    if backend != "sparse":
        raise ValueError(f"backend must be auto, dense or sparse, got {backend!r}")
    if rerank:
        return reranked_graph(features, eps, k1=k1, k2=k2, lambda_value=lambda_value)
    return cosine_graph(features, eps)


def _check_dense(n: int) -> None:
    if n > DENSE_MAX:
        raise ValueError(
            f"{n:,} items: the dense backend is limited to {DENSE_MAX:,} (4·N² bytes, {4 * n * n / 1e9:.1f} GB here); "
            "use the sparse backend (method dbscan or mutual_knn)"
        )


def _dense(features: np.ndarray, rerank: bool, k1: int, k2: int, lambda_value: float) -> np.ndarray:
    if rerank:
        return reranked_distances(features, k1=k1, k2=k2, lambda_value=lambda_value)
    return cosine_distances(features)


# -- clustering ----------------------------------------------------------------------------------------
def _relabel(labels: np.ndarray) -> np.ndarray:
    """Labels 0..C-1 by decreasing size (ties: smallest member first); size-1 clusters become -1."""
    out = np.full(len(labels), -1, dtype=np.int64)
    ok = np.flatnonzero(labels >= 0)
    if len(ok) == 0:
        return out
    _, first, inv, counts = np.unique(labels[ok], return_index=True, return_inverse=True, return_counts=True)
    order = np.lexsort((ok[first], -counts))
    order = order[counts[order] >= 2]
    rank = np.full(len(counts), -1, dtype=np.int64)
    rank[order] = np.arange(len(order))
    out[ok] = rank[inv.ravel()]
    return out


def dbscan(graph: EpsGraph, min_samples: int = 2) -> np.ndarray:
    """DBSCAN labels on an eps-graph (see the module docstring; -1 is noise)."""
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}")
    n, r, c, d = graph.n, graph.rows, graph.cols, graph.dist
    core = np.bincount(r, minlength=n) + 1 >= min_samples
    link = core[r] & core[c]
    adj = sp.coo_matrix((np.ones(int(link.sum()), np.int8), (r[link], c[link])), shape=(n, n))
    _, comp = connected_components(adj, directed=False)
    labels = np.where(core, comp, -1)
    border = ~core[r] & core[c]
    br, bc, bd = r[border], c[border], d[border]
    if len(br):
        order = np.lexsort((bc, bd, br))  # per border item: nearest core neighbour first
        br, bc = br[order], bc[order]
        first = np.ones(len(br), bool)
        first[1:] = br[1:] != br[:-1]
        labels[br[first]] = labels[bc[first]]
    return _relabel(labels)


def mutual_knn(graph: EpsGraph, knn: int = 5) -> np.ndarray:
    """Connected components of the mutual ``knn``-NN graph within eps (-1: items in no mutual pair)."""
    n, r, c, d = graph.n, graph.rows, graph.cols, graph.dist
    order = np.lexsort((c, d, r))
    r, c = r[order], c[order]
    starts = np.searchsorted(r, r, side="left")
    rank = np.arange(len(r)) - starts  # position of the edge in its row's nearest-first list
    near = rank < knn
    pairs = sp.coo_matrix((np.ones(int(near.sum())), (r[near], c[near])), shape=(n, n)).tocsr()
    mutual = pairs.multiply(pairs.T)
    _, comp = connected_components(mutual, directed=False)
    return _relabel(comp)


def linkage_tree(dist: np.ndarray, linkage: str = "average") -> np.ndarray:
    """scipy's linkage matrix of a dense distance matrix (takes an N(N-1)/2 float64 copy)."""
    from scipy.cluster.hierarchy import linkage as build
    from scipy.spatial.distance import squareform

    return build(squareform(dist, checks=False).astype(np.float64), method=linkage)


def cut_tree(z: np.ndarray, eps: float) -> np.ndarray:
    """Labels from a linkage matrix cut where merges exceed ``eps`` (cheap: sweep eps on one tree)."""
    from scipy.cluster.hierarchy import fcluster

    return _relabel(fcluster(z, t=eps, criterion="distance").astype(np.int64))


def agglomerative(dist: np.ndarray, eps: float, linkage: str = "average") -> np.ndarray:
    """Agglomerative clustering of a dense distance matrix, cut where merges exceed ``eps``."""
    if len(dist) < 2:
        return np.full(len(dist), -1, dtype=np.int64)
    return cut_tree(linkage_tree(dist, linkage), eps)


def cluster_features(
    features: np.ndarray,
    *,
    method: Method = "dbscan",
    eps: float | None = None,
    min_samples: int = 2,
    rerank: bool = True,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.0,
    knn: int = 5,
    backend: Backend = "auto",
) -> np.ndarray:
    """Cluster N feature vectors (L2-normalised here if they are not) into identities.

    Returns labels (N,) ``0..C-1`` by decreasing cluster size, -1 for noise and singletons.
    ``eps`` defaults to :data:`DEFAULT_EPS` (0.45 re-ranked, 0.15 cosine). ``knn`` is for
    ``method="mutual_knn"``. See the module docstring for the distances, methods and size limits.

    Re-ranking assumes many more items than ``k1`` and identities of up to about ``k1`` items (Market-1501:
    ~17 images per identity, k1 = 20); on small albums (under ``10 · k1`` items, warned about) every
    k-reciprocal set spans several identities: use ``rerank=False`` there. ``k1`` (and ``k2``) shrink to
    fit sets of ``k1`` items or fewer.
    """
    f = _unit(features)
    n = len(f)
    eps = DEFAULT_EPS[bool(rerank)] if eps is None else float(eps)
    if n < 2:
        return np.full(n, -1, dtype=np.int64)
    if rerank and n < 10 * k1:
        log.warning(
            "re-ranking only %d items with k1=%d: neighbourhoods span identities and clusters mix people; "
            "cluster on cosine instead (reidkit cluster --no-rerank; rerank=False in Python)",
            n,
            k1,
        )
    k1 = min(k1, n - 1)
    k2 = min(k2, k1 + 1)
    if method == "agglomerative":
        _check_dense(n)
        return agglomerative(_dense(f, rerank, k1, k2, lambda_value), eps)
    graph = distance_graph(f, eps, rerank=rerank, k1=k1, k2=k2, lambda_value=lambda_value, backend=backend)
    if method == "dbscan":
        return dbscan(graph, min_samples)
    if method == "mutual_knn":
        return mutual_knn(graph, knn)
    raise ValueError(f"method must be dbscan, mutual_knn or agglomerative, got {method!r}")


# -- metrics -------------------------------------------------------------------------------------------
def _contingency(labels_true: Sequence[int] | np.ndarray, labels_pred: Sequence[int] | np.ndarray) -> sp.csr_matrix:
    """Contingency table (true classes x predicted clusters); each -1 prediction is its own cluster."""
    t = np.asarray(labels_true)
    p = np.asarray(labels_pred).astype(np.int64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"labels must be two 1-D arrays of equal length, got {t.shape} and {p.shape}")
    noise = p < 0
    p = p.copy()
    p[noise] = p.max(initial=0) + 1 + np.arange(int(noise.sum()))
    _, ti = np.unique(t, return_inverse=True)
    _, pi = np.unique(p, return_inverse=True)
    shape = (int(ti.max(initial=-1)) + 1, int(pi.max(initial=-1)) + 1)
    return sp.coo_matrix((np.ones(len(t), np.int64), (ti.ravel(), pi.ravel())), shape=shape).tocsr()


def _entropy(counts: np.ndarray, n: int) -> float:
    pr = counts[counts > 0] / n
    return float(-(pr * np.log(pr)).sum())


def nmi(labels_true: Sequence[int] | np.ndarray, labels_pred: Sequence[int] | np.ndarray) -> float:
    """Normalised mutual information, ``I(T; P) / mean(H(T), H(P))`` (scikit-learn's default).

    Each noise prediction (-1) is its own cluster. 1.0 when both labelings are a single class.
    """
    c = _contingency(labels_true, labels_pred)
    n = int(c.sum())
    if n == 0:
        return 1.0
    a = np.asarray(c.sum(1)).ravel()
    b = np.asarray(c.sum(0)).ravel()
    h_t, h_p = _entropy(a, n), _entropy(b, n)
    if h_t == 0.0 and h_p == 0.0:
        return 1.0
    coo = c.tocoo()
    nij = coo.data.astype(np.float64)
    mi = float((nij / n * (np.log(nij * n) - np.log(a[coo.row] * b[coo.col].astype(np.float64)))).sum())
    return max(0.0, min(1.0, mi / ((h_t + h_p) / 2.0)))


@dataclass(frozen=True)
class PairScore:
    """Pairwise precision / recall / F1 and the pair counts they come from."""

    precision: float
    recall: float
    f: float
    true_pairs: int  # pairs of the same identity
    pred_pairs: int  # pairs put in the same cluster
    correct_pairs: int  # both


def _pairs(counts: np.ndarray) -> int:
    c = counts.astype(np.int64)
    return int((c * (c - 1) // 2).sum())


def pairwise_f_score(labels_true: Sequence[int] | np.ndarray, labels_pred: Sequence[int] | np.ndarray) -> PairScore:
    """Precision and recall over pairs of items (same cluster vs same identity), and their F1.

    Each noise prediction (-1) is its own cluster. With no predicted pairs precision is 1 (nothing
    wrongly merged); with no true pairs recall is 1; F is 0 when both are 0.
    """
    c = _contingency(labels_true, labels_pred)
    correct = _pairs(c.data)
    true_pairs = _pairs(np.asarray(c.sum(1)).ravel())
    pred_pairs = _pairs(np.asarray(c.sum(0)).ravel())
    precision = correct / pred_pairs if pred_pairs else 1.0
    recall = correct / true_pairs if true_pairs else 1.0
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return PairScore(precision, recall, f, true_pairs, pred_pairs, correct)


# -- galleries -----------------------------------------------------------------------------------------
@dataclass
class Cluster:
    """One identity found in a gallery: its items (track or detection ids) and their detection ids."""

    id: int
    items: list[int]
    records: list[int]
    cameras: list[str]

    @property
    def size(self) -> int:
        return len(self.items)


@dataclass
class GalleryClusters:
    """The clusters of a gallery (largest first) and the items left as noise."""

    level: Literal["tracks", "sightings"]
    clusters: list[Cluster]
    noise: list[int] = field(default_factory=list)
    n_items: int = 0

    def to_dict(self) -> dict:
        return {
            "level": self.level,
            "n_items": self.n_items,
            "n_clusters": len(self.clusters),
            "n_noise": len(self.noise),
            "clusters": [
                {"id": c.id, "size": c.size, "cameras": c.cameras, "items": c.items, "records": c.records}
                for c in self.clusters
            ],
            "noise": self.noise,
        }


def cluster_gallery(
    gallery: Gallery,
    *,
    level: Literal["tracks", "sightings"] = "tracks",
    **options: object,
) -> GalleryClusters:
    """Cluster a gallery's tracks (their mean features) or its individual sightings into identities.

    ``level="tracks"`` falls back to sightings when the gallery has no tracks (the result's ``level``
    says which was used); sightings without a track are not clustered at track level. ``options``
    go to :func:`cluster_features` (method, eps, min_samples, rerank, k1, k2, ...).
    """
    if level not in ("tracks", "sightings"):
        raise ValueError(f"level must be tracks or sightings, got {level!r}")
    records = gallery.records()
    tracks = gallery.tracks() if level == "tracks" else []
    if tracks:
        by_track: dict[tuple[int, int], list[int]] = {}
        for rec in records:
            if rec.track_id is not None:
                by_track.setdefault((rec.source_id, rec.track_id), []).append(rec.id)
        items = [t.id for t in tracks]
        members = [by_track.get((t.source_id, t.track_id), []) for t in tracks]
        cams = [t.camera for t in tracks]
        feats = gallery.track_features(items) if items else np.zeros((0, 1), np.float32)
        used: Literal["tracks", "sightings"] = "tracks"
    else:
        items = [r.id for r in records]
        members = [[r.id] for r in records]
        cams = [r.camera for r in records]
        feats = gallery.features(items) if items else np.zeros((0, 1), np.float32)
        used = "sightings"
    labels = cluster_features(feats, **options) if items else np.zeros(0, np.int64)  # type: ignore[arg-type]
    clusters = []
    for k in range(int(labels.max(initial=-1)) + 1):
        idx = np.flatnonzero(labels == k)
        clusters.append(
            Cluster(
                id=k,
                items=[items[i] for i in idx],
                records=sorted(r for i in idx for r in members[i]),
                cameras=sorted({cams[i] for i in idx}),
            )
        )
    noise = [items[i] for i in np.flatnonzero(labels < 0)]
    return GalleryClusters(used, clusters, noise, len(items))


def _tile(path: Path | None, h: int, w: int, caption: str) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path is not None and path.is_file() else None
    if img is None:
        tile = np.full((h, w, 3), 200, np.uint8)
        cv2.putText(tile, "no crop", (4, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (60, 60, 60), 1, cv2.LINE_AA)
    else:
        tile = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    if caption:
        cv2.rectangle(tile, (0, h - 12), (w, h), (0, 0, 0), -1)
        cv2.putText(tile, caption[:12], (2, h - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def contact_sheets(
    clusters: GalleryClusters | Sequence[Cluster],
    gallery: Gallery,
    out_dir: str | os.PathLike[str],
    *,
    per_row: int = 8,
    thumb: tuple[int, int] = (128, 64),
    max_crops: int = 64,
    jpeg_quality: int = 85,
) -> list[Path]:
    """Write one JPEG grid per cluster (``cluster_0000.jpg`` ...) and an ``index.html`` linking them.

    Each sheet has a header (cluster id, items, crops, cameras) over up to ``max_crops`` crops, spread
    evenly over the cluster in time order, as ``thumb`` = (height, width) tiles ``per_row`` to a row,
    each captioned with its camera. Sheets left in ``out_dir`` by an earlier run are removed.
    Returns the sheet paths (in cluster order).
    """
    import cv2

    from reidkit.io import atomic_path

    level = clusters.level if isinstance(clusters, GalleryClusters) else "tracks"
    noise = len(clusters.noise) if isinstance(clusters, GalleryClusters) else 0
    items = list(clusters.clusters if isinstance(clusters, GalleryClusters) else clusters)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    h, w = thumb
    header = 30
    paths: list[Path] = []
    rows_html = []
    for cl in items:
        recs = sorted(gallery.get(cl.records), key=lambda r: (r.timestamp, r.id))
        if len(recs) > max_crops:
            recs = [recs[i] for i in np.linspace(0, len(recs) - 1, max_crops).round().astype(int)]
        n_rows = max(1, math.ceil(len(recs) / per_row))
        sheet = np.full((header + n_rows * h, per_row * w, 3), 255, np.uint8)
        n_cam = len(cl.cameras)
        title = f"cluster {cl.id}: {cl.size} {level}, {len(cl.records)} crops, {n_cam} camera{'s' * (n_cam != 1)}"
        cv2.putText(sheet, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        for i, rec in enumerate(recs):
            y, x = header + (i // per_row) * h, (i % per_row) * w
            sheet[y : y + h, x : x + w] = _tile(gallery.root / rec.crop if rec.crop else None, h, w, rec.camera)
        ok, buf = cv2.imencode(".jpg", sheet, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if not ok:  # pragma: no cover
            raise ValueError(f"could not encode the sheet of cluster {cl.id}")
        path = out / f"cluster_{cl.id:04d}.jpg"
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.tobytes())
        paths.append(path)
        cams = html.escape(", ".join(cl.cameras))
        rows_html.append(
            f'<tr><td><a href="{path.name}">cluster {cl.id}</a></td><td>{cl.size}</td><td>{len(cl.records)}</td>'
            f'<td>{cams}</td><td><a href="{path.name}"><img src="{path.name}" height="96"></a></td></tr>'
        )
    page = (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>reidkit clusters</title>\n"
        "<style>body{font-family:sans-serif} td{padding:4px 8px;vertical-align:top} img{border:1px solid #ccc}</style>"
        "</head><body>\n"
        f"<h1>{len(items)} clusters</h1>\n<p>Clustered {html.escape(level)}; {noise} left unclustered (noise).</p>\n"
        f"<table>\n<tr><th>cluster</th><th>{html.escape(level)}</th><th>crops</th><th>cameras</th><th>sheet</th></tr>\n"
        + "\n".join(rows_html)
        + "\n</table>\n</body></html>\n"
    )
    with atomic_path(out / "index.html") as tmp:
        tmp.write_text(page)
    for stale in set(out.glob("cluster_[0-9]*.jpg")) - set(paths):  # sheets of an earlier, larger run
        stale.unlink()
    return paths


# -- what ``reidkit cluster`` runs ----------------------------------------------------------------------
def cluster_gallery_folder(
    gallery_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    level: Literal["tracks", "sightings"] = "tracks",
    max_crops: int = 64,
    **options: object,
) -> tuple[GalleryClusters, list[Path], float]:
    """Cluster the gallery in ``gallery_dir`` (opened read-only; see :func:`cluster_gallery`) and write its
    contact sheets, ``index.html`` and ``clusters.json`` (with ``options`` and the time taken) into
    ``out_dir``. Returns the clusters, the sheet paths and the seconds the clustering took.
    Raises GalleryError (not a gallery) and ValueError (bad options)."""
    import time

    from reidkit.io import write_json
    from reidkit.search.storage import open_gallery

    with open_gallery(gallery_dir, create=False, read_only=True) as g:
        t0 = time.perf_counter()
        result = cluster_gallery(g, level=level, **options)
        seconds = time.perf_counter() - t0
        sheets = contact_sheets(result, g, out_dir, max_crops=max_crops)
    data = {"gallery": str(gallery_dir), "options": options, "seconds": seconds, **result.to_dict()}
    write_json(Path(out_dir) / "clusters.json", data)
    return result, sheets, seconds


def cluster_scores(truth: np.ndarray, labels: np.ndarray) -> dict:
    """How ``labels`` (-1: noise) cluster items of identities ``truth``: clusters, noise (items), NMI and
    pairwise precision / recall / F."""
    ps = pairwise_f_score(truth, labels)
    return {
        "clusters": int(labels.max(initial=-1)) + 1,
        "noise": int((labels < 0).sum()),
        "nmi": nmi(truth, labels),
        "pair_precision": ps.precision,
        "pair_recall": ps.recall,
        "pair_f": ps.f,
    }


def score_features_clustering(
    features: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    split: Literal["gallery", "all"] = "gallery",
    distractors: Literal["own", "exclude"] = "own",
    **options: object,
) -> dict:
    """Cluster the gallery of a features file (``split="all"``: query + gallery) with :func:`cluster_features`
    and score it against the pids: NMI and pairwise precision / recall / F. Junk (pid -1) is left out;
    each distractor (pid 0) is its own identity (``distractors="own"``) or left out (``"exclude"``).

    Returns (and with ``out_dir`` writes as ``clusters.json``) features, split, distractors, options,
    ``summary`` (items, identities, distractors, clusters, noise, nmi, pair_precision, pair_recall, pair_f,
    seconds), labels, pids and, when the file has them, paths. Raises FeatureFileError and ValueError.
    """
    import time

    from reidkit.io import load_features, write_json

    fs = load_features(features)
    f, pids, paths = fs.gf, fs.g_pids, fs.g_paths
    if split == "all":
        f, pids = np.concatenate([fs.qf, f]), np.concatenate([fs.q_pids, pids])
        paths = None if paths is None or fs.q_paths is None else np.concatenate([fs.q_paths, paths])
    keep = pids != -1  # junk
    if distractors == "exclude":
        keep &= pids != 0
    f, pids = f[keep], pids[keep]
    paths = None if paths is None else paths[keep]
    truth = np.where(pids == 0, -1 - np.arange(len(pids)), pids)  # each distractor its own identity
    t0 = time.perf_counter()
    labels = cluster_features(f, **options)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    summary = {
        "items": len(f),
        "identities": len(np.unique(pids[pids > 0])),
        "distractors": int((pids == 0).sum()),
        **cluster_scores(truth, labels),
        "seconds": seconds,
    }
    result = {
        "features": str(features),
        "split": split,
        "distractors": distractors,
        "options": options,
        "summary": summary,
        "labels": labels.tolist(),
        "pids": pids.tolist(),
    }
    if paths is not None:
        result["paths"] = [str(p) for p in paths]
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        write_json(Path(out_dir) / "clusters.json", result)
    return result
