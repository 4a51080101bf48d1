"""k-reciprocal re-ranking against a dense float64 reference written from the paper's code."""

from __future__ import annotations

import numpy as np
import pytest

from reidkit.evaluation.rerank import rerank


def dense_reference(qf, gf, k1=20, k2=6, lam=0.3):
    """Zhong et al.'s algorithm, dense and loop by loop, in float64."""
    x = np.concatenate([qf, gf]).astype(np.float64)
    nq, n = len(qf), len(x)
    dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)  # squared Euclidean, not squared again
    dist = dist / dist.max(axis=1, keepdims=True)
    rank = np.argsort(dist, axis=1, kind="stable")
    v = np.zeros((n, n))
    kh = int(np.around(k1 / 2))
    for i in range(n):
        fwd = rank[i, : k1 + 1]
        back = rank[fwd, : k1 + 1]
        recip = fwd[np.where(back == i)[0]]
        expansion = recip
        for c in recip:
            c_fwd = rank[c, : kh + 1]
            c_back = rank[c_fwd, : kh + 1]
            c_recip = c_fwd[np.where(c_back == c)[0]]
            if len(np.intersect1d(c_recip, recip)) > 2 / 3 * len(c_recip):
                expansion = np.append(expansion, c_recip)
        expansion = np.unique(expansion)
        w = np.exp(-dist[i, expansion])
        v[i, expansion] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    out = np.zeros((nq, n - nq))
    for i in range(nq):
        for j in range(nq, n):
            m = np.minimum(v[i], v[j]).sum()
            out[i, j - nq] = 1 - m / (2 - m)
    return (1 - lam) * out + lam * dist[:nq, nq:]


def _features(seed: int, nq: int, ng: int, d: int = 16, ids: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Clustered, L2-normalised features: several items per identity, like real embeddings."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((ids, d))
    f = centers[rng.integers(0, ids, nq + ng)] + 0.6 * rng.standard_normal((nq + ng, d))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    return f[:nq].astype(np.float32), f[nq:].astype(np.float32)


@pytest.mark.parametrize(("seed", "k1", "k2", "lam"), [(0, 20, 6, 0.3), (1, 8, 3, 0.5), (2, 5, 1, 0.0)])
def test_matches_dense_reference(seed: int, k1: int, k2: int, lam: float) -> None:
    qf, gf = _features(seed, 25, 110)
    want = dense_reference(qf, gf, k1, k2, lam)
    got = rerank(qf, gf, k1=k1, k2=k2, lambda_value=lam, block=37, query_chunk=7)
    assert got.shape == (25, 110) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-4


def test_float64_path_is_exact() -> None:
    import torch

    qf, gf = _features(5, 20, 80)
    want = dense_reference(qf, gf)
    got = rerank(qf, gf, dtype=torch.float64)
    assert np.abs(got - want).max() <= 1e-6


def test_rerank_improves_retrieval_on_clusters() -> None:
    from reidkit.evaluation.metrics import evaluate

    rng = np.random.default_rng(7)
    ids = rng.integers(0, 40, 600)
    centers = rng.standard_normal((40, 32))
    f = centers[ids] + 1.2 * rng.standard_normal((600, 32))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    qf, gf, qp, gp = f[:100], f[100:], ids[:100], ids[100:]
    cams_q, cams_g = np.zeros(100, int), np.ones(500, int)
    base = evaluate(2 - 2 * qf @ gf.T, qp, gp, cams_q, cams_g)
    rr = evaluate(rerank(qf, gf), qp, gp, cams_q, cams_g)
    assert rr.mAP > base.mAP


def test_bad_arguments() -> None:
    qf, gf = _features(0, 3, 5)
    with pytest.raises(ValueError, match="k1"):
        rerank(qf, gf, k1=20)
    with pytest.raises(ValueError, match="equal width"):
        rerank(qf, gf[:, :4])


# --- the blocked, symmetric neighbour pass and the public building blocks ---


def _integer_features(seed: int, n: int, d: int = 6) -> np.ndarray:
    """Small-integer features: every distance is an exact integer in any summation order, so exact
    ties between different items are everywhere and the same whatever the blocking."""
    return np.random.default_rng(seed).integers(-2, 3, (n, d)).astype(np.float32)


@pytest.mark.parametrize("block", [1, 7, 32, 1000])
def test_neighbours_are_a_stable_sort(block: int) -> None:
    import torch

    from reidkit.evaluation.rerank import neighbours

    f = _integer_features(0, 90)
    x = torch.from_numpy(f)
    dist = ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(dist, -1)  # the item itself first, whatever its duplicates
    row_max, nn = neighbours(x, (x * x).sum(1), 12, block)
    want = np.argsort(dist, axis=1, kind="stable")[:, :12]
    assert np.array_equal(nn.numpy(), want)
    np.fill_diagonal(dist, 0)
    assert np.array_equal(row_max.numpy(), dist.max(1))


def test_ties_follow_the_reference_order() -> None:
    # Exact ties everywhere (integer features): the neighbour lists, hence the result, must follow the
    # dense reference's stable sort; any other tie order moves whole k-reciprocal sets.
    f = _integer_features(1, 140, d=5)
    qf, gf = f[:30], f[30:]
    want = dense_reference(qf, gf, k1=8, k2=3, lam=0.3)
    got = rerank(qf, gf, k1=8, k2=3, lambda_value=0.3, block=16)
    assert np.abs(got - want).max() <= 1e-5


def test_block_size_does_not_change_the_result() -> None:
    qf, gf = _features(3, 40, 150)
    a = rerank(qf, gf, block=2048)
    b = rerank(qf, gf, block=13)
    assert np.abs(a - b).max() <= 1e-6


def test_public_building_blocks() -> None:
    import torch

    from reidkit.evaluation import rerank as _  # noqa: F401  (the package re-exports the function)
    from reidkit.evaluation.rerank import (
        _as_tensor,
        _expanded_sets,
        _jaccard_min_sum,
        _neighbours,
        _weights,
        as_tensor,
        expanded_sets,
        jaccard_min_sum,
        neighbours,
        weights,
    )

    assert (_as_tensor, _neighbours, _expanded_sets, _weights, _jaccard_min_sum) == (
        as_tensor, neighbours, expanded_sets, weights, jaccard_min_sum,
    )
    qf, gf = _features(4, 10, 40)
    x = as_tensor(np.concatenate([qf, gf]), torch.float64)
    x_sq = (x * x).sum(1)
    row_max, nn = neighbours(x, x_sq, 9, 16)
    sets = expanded_sets(nn, 8)
    v = weights(x, x_sq, row_max, sets)
    # V rows: softmax of -d / row_max over each expanded set, as the dense reference builds them.
    xd = x.numpy()
    dist = ((xd[:, None] - xd[None]) ** 2).sum(-1)
    dist /= dist.max(1, keepdims=True)
    dense = v.toarray()
    for i in range(len(xd)):
        members = sets[i][sets[i] >= 0].numpy()
        w = np.exp(-dist[i, members])
        assert np.allclose(dense[i, members], w / w.sum(), atol=1e-12)
        assert np.count_nonzero(dense[i]) == len(members)
    vg = v[10:].tocsc()
    vg.sort_indices()
    ms = jaccard_min_sum(v[:10], vg)
    assert np.allclose(ms, np.minimum(dense[:10, None, :], dense[None, 10:, :]).sum(-1))


@pytest.mark.parametrize("rows", [1, 7, 500])
def test_blocks_give_the_whole_matrix(rows: int) -> None:
    import torch

    from reidkit.evaluation.rerank import rerank_blocks

    qf, gf = _features(6, 23, 90)
    whole = rerank(qf, gf, k1=8, k2=3, block=29)
    starts, parts = zip(*rerank_blocks(qf, gf, k1=8, k2=3, block=29, rows=rows), strict=True)
    assert list(starts) == list(range(0, 23, rows)) and all(p.dtype == np.float32 for p in parts)
    assert np.abs(np.concatenate(parts) - whole).max() <= 1e-6
    exact = np.concatenate([p for _, p in rerank_blocks(qf, gf, k1=8, k2=3, rows=rows, dtype=torch.float64)])
    assert np.abs(exact - dense_reference(qf, gf, 8, 3)).max() <= 1e-6
    with pytest.raises(ValueError, match="rows"):
        next(rerank_blocks(qf, gf, rows=0))


def test_streamed_evaluation_equals_the_whole_matrix_evaluated() -> None:
    from reidkit.evaluation import evaluate, evaluate_reranked

    rng = np.random.default_rng(3)
    qf, gf = _features(7, 40, 150, ids=12)
    # identities from the same clusters _features drew (recover them by nearest centre is overkill:
    # random labels with real structure are enough for the equality being tested)
    q_pids, g_pids = rng.integers(0, 6, 40), rng.integers(0, 6, 150)
    q_cams, g_cams = rng.integers(0, 3, 40), rng.integers(0, 3, 150)
    q_pids[:3] = 99  # three queries without any positive: skipped in whichever block they fall
    whole = evaluate(rerank(qf, gf), q_pids, g_pids, q_cams, g_cams)
    for rows in (1, 3, 16, 64):
        got = evaluate_reranked(qf, gf, q_pids, g_pids, q_cams, g_cams, rows=rows)
        assert got.num_valid == whole.num_valid == 37 and got.num_skipped == 3
        np.testing.assert_allclose(got.cmc, whole.cmc, atol=1e-12)
        assert abs(got.mAP - whole.mAP) < 1e-9 and abs(got.mINP - whole.mINP) < 1e-9
