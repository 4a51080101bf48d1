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


# --- the compiled kernel (numba) and the vectorised path, against the reference and each other ---

BACKENDS = ["numba", "numpy"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_worked_ties_follow_gallery_order(backend: str) -> None:
    # Query pid 1, camera 0. Gallery (all camera 1): a negative, the positive and a negative all at
    # 0.5, and a negative at 0.2. Stable order: g3 (0.2), g0, g1 (the positive), g2 -> rank 3.
    res = evaluate([[0.5, 0.5, 0.5, 0.2]], [1], [2, 1, 3, 4], [0], [1, 1, 1, 1], max_rank=4, backend=backend)
    assert res.ap == pytest.approx([1 / 3]) and res.inp == pytest.approx([1 / 3])
    assert list(res.cmc) == [0, 0, 1, 1]
    # The positive first in gallery order wins the tie: rank 2.
    res = evaluate([[0.5, 0.5, 0.5, 0.2]], [1], [1, 2, 3, 4], [0], [1, 1, 1, 1], max_rank=4, backend=backend)
    assert res.ap == pytest.approx([1 / 2])
    # Two positives tied with each other and with negatives on both sides of them in index order:
    # order g0 (neg), g1 (pos), g2 (neg), g3 (pos) -> ranks 2 and 4; AP (1/2 + 2/4) / 2, INP 2/4.
    res = evaluate([[0.3, 0.3, 0.3, 0.3]], [1], [5, 1, 5, 1], [0], [1, 1, 1, 1], backend=backend)
    assert res.ap == pytest.approx([0.5]) and res.inp == pytest.approx([0.5])
    res = evaluate([[0.3, 0.3, 0.3, 0.3]], [1], [5, 1, 5, 1], [0], [1, 1, 1, 1], ap="market", backend=backend)
    # market: ((0/1 + 1/2) / 2 + (1/3 + 2/4) / 2) / 2
    assert res.ap == pytest.approx([((0 + 0.5) / 2 + (1 / 3 + 0.5) / 2) / 2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_worked_protocol(backend: str) -> None:
    # Query 0 (pid 7, camera 1): junk at 0.0 and a same-camera copy at 0.05 are removed, even though
    # both tie or beat the positives; a distractor (pid 0) at 0.1; positives at 0.2 (camera 2) and
    # 0.4 (camera 3); a negative at 0.3. Ranks 2 and 4. Query 1 (pid 9) has only a same-camera match:
    # skipped. Query 2 (pid -1) is never matched: skipped.
    g_pids = [-1, 7, 0, 7, 5, 7, 9]
    g_cams = [2, 1, 2, 2, 2, 3, 4]
    dist = np.array(
        [
            [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.9],
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.1],
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
        ]
    )
    res = evaluate(dist, [7, 9, -1], g_pids, [1, 4, 3], g_cams, max_rank=5, backend=backend)
    assert res.num_valid == 1 and res.num_skipped == 2
    assert res.ap == pytest.approx([(1 / 2 + 2 / 4) / 2])
    assert res.inp == pytest.approx([2 / 4])
    assert list(res.cmc) == [0, 1, 1, 1, 1]
    res = evaluate(dist, [7, 9, -1], g_pids, [1, 4, 3], g_cams, ap="market", backend=backend)
    assert res.ap == pytest.approx([((0 + 1 / 2) / 2 + (1 / 3 + 2 / 4) / 2) / 2])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ap", ["standard", "market"])
@pytest.mark.parametrize("seed", [10, 11])
def test_backends_match_reference_with_heavy_ties(seed: int, ap: str, backend: str) -> None:
    rng = np.random.default_rng(seed)
    nq, ng = 80, 300
    q_pids = rng.integers(-1, 25, nq)  # some junk queries too
    g_pids = rng.integers(-1, 25, ng)
    q_cams = rng.integers(0, 3, nq)
    g_cams = rng.integers(0, 3, ng)
    dist = (np.round(rng.random((nq, ng)) * 6) / 6).astype(np.float64)  # 7 values: ties everywhere
    cmc, mAP, mINP, nvalid = reference(dist, q_pids, g_pids, q_cams, g_cams, ap=ap)
    res = evaluate(dist, q_pids, g_pids, q_cams, g_cams, ap=ap, backend=backend)
    assert res.num_valid == nvalid and res.num_skipped == nq - nvalid
    assert np.abs(res.cmc - cmc).max() <= 1e-9
    assert abs(res.mAP - mAP) <= 1e-9
    assert abs(res.mINP - mINP) <= 1e-9


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_and_vectorised_ranks_are_identical(dtype: type) -> None:
    from reidkit.evaluation.metrics import _chunk_ranks, _ranks_numba

    rng = np.random.default_rng(4)
    nq, ng = 200, 2500
    q_pids = rng.integers(-1, 60, nq)
    g_pids = rng.integers(-1, 60, ng)
    q_cams = rng.integers(0, 4, nq)
    g_cams = rng.integers(0, 4, ng)
    dist = rng.random((nq, ng)).astype(dtype)
    dist[::3] = np.round(dist[::3] * 20) / 20
    import torch

    want, want_n = _chunk_ranks(torch.from_numpy(dist), q_pids, g_pids, q_cams, g_cams)
    got, got_n = _ranks_numba(dist, q_pids, g_pids, q_cams, g_cams)
    assert np.array_equal(want_n, got_n)
    assert np.array_equal(want[:, : got.shape[1]], got[:, : want.shape[1]])
    a = evaluate(dist, q_pids, g_pids, q_cams, g_cams, backend="numba")
    b = evaluate(dist, q_pids, g_pids, q_cams, g_cams, backend="numpy")
    # Same ranks; AP sums may associate differently (the rows are padded to different widths).
    assert np.abs(a.ap - b.ap).max() <= 1e-15 and np.array_equal(a.inp, b.inp) and np.array_equal(a.cmc, b.cmc)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_accepts_torch_views_and_rejects_nan(backend: str) -> None:
    import torch

    rng = np.random.default_rng(5)
    dist = rng.random((40, 30))
    args = (rng.integers(0, 5, 30), rng.integers(0, 5, 40), rng.integers(0, 2, 30), rng.integers(0, 2, 40))
    # A transposed (non-contiguous) torch view must give the figures of its contiguous copy.
    a = evaluate(torch.from_numpy(dist).T, *args, backend=backend)
    b = evaluate(np.ascontiguousarray(dist.T), *args, backend="numpy")
    assert a.mAP == b.mAP and np.array_equal(a.cmc, b.cmc)
    bad = np.ascontiguousarray(dist.T)
    bad[0, 0] = np.nan  # wherever it lies: before, among or after the positives
    with pytest.raises(ValueError, match="NaN"):
        evaluate(bad, *args, backend=backend)
    bad = np.ascontiguousarray(dist.T)
    q_pids = args[0].copy()
    q_pids[3] = 99  # a query without positives still has its row checked
    bad[3, 7] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate(bad, q_pids, *args[1:], backend=backend)


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="backend"):
        evaluate(np.zeros((1, 2)), [1], [1, 2], [0], [1, 1], backend="cuda")  # type: ignore[arg-type]
