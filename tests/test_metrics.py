"""Evaluation metrics: hand-worked cases and parity with a plain per-query reference."""

from __future__ import annotations

import numpy as np
import pytest

from reidkit.evaluation.metrics import ap_from_ranks, evaluate


def reference(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=50, ap="standard"):
    """Straightforward per-query evaluation: stable sort, protocol filter, loop over ranks."""
    cmc_all, aps, inps = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        keep = [
            g for g in order
            if g_pids[g] != -1 and not (g_pids[g] == q_pids[i] and g_cams[g] == q_cams[i])
        ]
        matches = [int(g_pids[g] == q_pids[i]) for g in keep]
        if not any(matches):
            continue
        cmc = np.cumsum(matches)
        cmc = (cmc >= 1).astype(float)[:max_rank]
        cmc_all.append(np.pad(cmc, (0, max_rank - len(cmc)), constant_values=1.0))
        hits, total, prev_p = 0, 0.0, 1.0
        for r, m in enumerate(matches, start=1):
            if m:
                hits += 1
                p = hits / r
                if ap == "standard":
                    total += p
                else:
                    before = (hits - 1) / (r - 1) if r > 1 else 1.0
                    total += (before + p) / 2
        aps.append(total / sum(matches))
        last = max(r for r, m in enumerate(matches, start=1) if m)
        inps.append(sum(matches) / last)
        del prev_p
    return np.mean(cmc_all, axis=0), float(np.mean(aps)), float(np.mean(inps)), len(aps)


def test_hand_worked_ap() -> None:
    assert ap_from_ranks([1, 3, 6, 9, 10]) == pytest.approx(0.6222, abs=1e-4)
    assert ap_from_ranks([2, 5, 7]) == pytest.approx(0.4429, abs=1e-4)
    # The same two queries through evaluate(): mAP 0.53, rank-1 0.5.
    dist = np.tile(np.arange(10, dtype=np.float32), (2, 1))
    g_pids = np.zeros((2, 10), dtype=int)
    g_pids[0, [0, 2, 5, 8, 9]] = 1
    g_pids[1, [1, 4, 6]] = 1
    # Two queries need one shared gallery: stack them side by side, each blind to the other half.
    big = np.full((2, 20), 100.0, dtype=np.float32)
    big[0, :10] = dist[0]
    big[1, 10:] = dist[1]
    gp = np.concatenate([np.where(g_pids[0] == 1, 1, 3), np.where(g_pids[1] == 1, 2, 3)])
    res = evaluate(big, [1, 2], gp, [0, 0], np.ones(20, dtype=int))
    assert res.ap == pytest.approx([0.6222, 0.4429], abs=1e-4)
    assert res.mAP == pytest.approx(0.5325, abs=1e-4)
    assert res.rank(1) == 0.5
    assert res.rank(2) == 1.0
    # mINP: positives / rank of the last one.
    assert res.inp == pytest.approx([5 / 10, 3 / 7])


def test_market_ap_is_trapezoid() -> None:
    # Hits at ranks 1 and 3 of 2 positives: precision 1, 2/3; before-hit precision 1 and 1/2.
    assert ap_from_ranks([1, 3], mode="market") == pytest.approx(((1 + 1) / 2 + (0.5 + 2 / 3) / 2) / 2)


def test_protocol_removes_junk_and_same_camera() -> None:
    # Gallery: a same-camera copy of the query at distance 0 (removed), junk at 0.1 (removed),
    # a distractor (pid 0) at 0.2, the true match from another camera at 0.3.
    dist = np.array([[0.0, 0.1, 0.2, 0.3]])
    res = evaluate(dist, [7], [7, -1, 0, 7], [1], [1, 2, 2, 3])
    assert res.rank(1) == 0.0 and res.rank(2) == 1.0
    assert res.mAP == pytest.approx(0.5)


def test_queries_without_match_are_skipped() -> None:
    dist = np.random.default_rng(0).random((3, 5))
    res = evaluate(dist, [1, 2, 9], [1, 2, 3, 4, 5], [0, 0, 0], [1, 1, 1, 1, 1])
    assert res.num_valid == 2 and res.num_skipped == 1
    with pytest.raises(ValueError, match="no query"):
        evaluate(dist, [8, 8, 9], [1, 2, 3, 4, 5], [0, 0, 0], [1] * 5)


def test_shape_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="query pids"):
        evaluate(np.zeros((2, 3)), [1], [1, 2, 3], [0, 0], [1, 1, 1])


@pytest.mark.parametrize("ap", ["standard", "market"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parity_with_reference(seed: int, ap: str) -> None:
    rng = np.random.default_rng(seed)
    nq, ng = 60, 400
    q_pids = rng.integers(0, 30, nq)
    g_pids = rng.integers(-1, 30, ng)  # includes junk (-1) and distractors (0)
    q_cams = rng.integers(0, 3, nq)
    g_cams = rng.integers(0, 3, ng)
    dist = rng.random((nq, ng)).astype(np.float32)
    # Quantise some rows so that exact ties between positives and negatives occur.
    dist[::5] = np.round(dist[::5] * 8) / 8
    cmc, mAP, mINP, nvalid = reference(dist, q_pids, g_pids, q_cams, g_cams, ap=ap)
    res = evaluate(dist, q_pids, g_pids, q_cams, g_cams, ap=ap, chunk_size=17)
    assert res.num_valid == nvalid
    assert np.abs(res.cmc - cmc).max() <= 1e-9
    assert abs(res.mAP - mAP) <= 1e-9
    assert abs(res.mINP - mINP) <= 1e-9


def test_accepts_torch_and_float64() -> None:
    import torch

    rng = np.random.default_rng(3)
    dist = rng.random((20, 50))
    args = (rng.integers(0, 5, 20), rng.integers(0, 5, 50), rng.integers(0, 2, 20), rng.integers(0, 2, 50))
    a = evaluate(dist, *args)
    b = evaluate(torch.from_numpy(dist), *(torch.from_numpy(x) for x in args))
    assert a.mAP == b.mAP and np.array_equal(a.cmc, b.cmc)
