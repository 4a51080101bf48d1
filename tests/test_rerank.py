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
