"""Album clustering: metrics on hand-worked cases, DBSCAN (dense and sparse), galleries, contact sheets, CLI."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from reidkit.evaluation.rerank import rerank
from reidkit.search.query import cluster as C
from reidkit.search.storage import Gallery, Sighting


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def blobs(
    n_ids: int = 12, per_id: int = 8, dim: int = 32, noise: float = 0.3, outliers: int = 0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated identities (random directions + small noise) and optional lone outliers (label -1)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids + outliers, dim))
    y = np.concatenate([np.repeat(np.arange(n_ids), per_id), -1 - np.arange(outliers)])
    c = np.where(y >= 0, y, n_ids - 1 - y)
    f = unit(centres[c] + noise * rng.standard_normal((len(y), dim)))
    perm = rng.permutation(len(y))
    return f[perm], y[perm]


# -- metrics ---------------------------------------------------------------------------------------------------
def brute_pairs(t: np.ndarray, p: np.ndarray) -> tuple[int, int, int]:
    """(true pairs, predicted pairs, correct pairs) by looping over all pairs; -1 predictions never pair."""
    tp = pp = cp = 0
    for i, j in itertools.combinations(range(len(t)), 2):
        same_t = t[i] == t[j]
        same_p = p[i] == p[j] and p[i] >= 0
        tp += same_t
        pp += same_p
        cp += same_t and same_p
    return tp, pp, cp


def test_metrics_perfect_and_permuted() -> None:
    t = np.array([3, 3, 7, 7, 7, 9])
    p = np.array([1, 1, 0, 0, 0, 2])  # same partition, other names
    assert C.nmi(t, p) == pytest.approx(1.0)
    s = C.pairwise_f_score(t, p)
    assert (s.precision, s.recall, s.f) == (1.0, 1.0, 1.0) and s.true_pairs == s.pred_pairs == s.correct_pairs == 4


def test_metrics_worked_example() -> None:
    # truth  : 0 0 0 1 1 2      predicted: 0 0 1 1 1 -1 (the last item is noise = its own cluster)
    # contingency: (t0,p0)=2 (t0,p1)=1 (t1,p1)=2 (t2,noise)=1
    # correct pairs = C(2,2) + C(2,2) = 2; predicted pairs = C(2,2) + C(3,2) = 4; true pairs = C(3,2) + C(2,2) = 4
    # -> precision = recall = F = 2/4.
    # NMI: n = 6; I = 2/6 ln(6*2/(3*2)) + 1/6 ln(6*1/(3*3)) + 2/6 ln(6*2/(2*3)) + 1/6 ln(6*1/(1*1))
    #            = 2/3 ln 2 + 1/6 (ln 2/3 + ln 6) = 2/3 ln 2 + 1/6 ln 4 = ln 2;
    #      H(T) = H(P) = -(1/2 ln 1/2 + 1/3 ln 1/3 + 1/6 ln 1/6) (sizes 3, 2, 1 on both sides); NMI = ln 2 / H.
    t = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 1, -1])
    s = C.pairwise_f_score(t, p)
    assert (s.true_pairs, s.pred_pairs, s.correct_pairs) == (4, 4, 2)
    assert (s.precision, s.recall, s.f) == (0.5, 0.5, 0.5)
    h = 0.5 * math.log(2) + math.log(3) / 3 + math.log(6) / 6
    assert C.nmi(t, p) == pytest.approx(math.log(2) / h, abs=1e-12)  # 0.6853...
    assert C.nmi(t, p) == pytest.approx(C.nmi(p, t))  # symmetric (noise as singletons on either side)


def test_metrics_one_cluster_and_all_noise() -> None:
    t = np.array([0, 0, 1, 1, 1])
    one = np.zeros(5, int)
    # all in one cluster: 10 predicted pairs, 1 + 3 = 4 true pairs, all 4 correct -> P = 0.4, R = 1, F = 0.8 / 1.4
    s = C.pairwise_f_score(t, one)
    assert (s.pred_pairs, s.true_pairs, s.correct_pairs) == (10, 4, 4)
    assert s.precision == pytest.approx(0.4) and s.recall == 1.0 and s.f == pytest.approx(0.8 / 1.4)
    assert C.nmi(t, one) == 0.0  # H(P) = 0, I = 0
    # all noise: no predicted pairs -> precision 1 (nothing wrongly merged), recall 0, F 0;
    # each item its own cluster: I = H(T), H(P) = ln 5 -> NMI = 2 H(T) / (H(T) + ln 5)
    s = C.pairwise_f_score(t, np.full(5, -1))
    assert (s.precision, s.recall, s.f) == (1.0, 0.0, 0.0)
    ht = -(0.4 * math.log(0.4) + 0.6 * math.log(0.6))
    assert C.nmi(t, np.full(5, -1)) == pytest.approx(2 * ht / (ht + math.log(5)))
    assert C.nmi([1, 1], [4, 4]) == 1.0  # both a single class


def test_metrics_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        t = rng.integers(0, 6, 40)
        p = rng.integers(-1, 5, 40)
        tp, pp, cp = brute_pairs(t, p)
        s = C.pairwise_f_score(t, p)
        assert (s.true_pairs, s.pred_pairs, s.correct_pairs) == (tp, pp, cp)
        # noise as -1 is the same as giving each noise item a fresh label
        fresh = np.where(p < 0, 100 + np.arange(40), p)
        assert C.nmi(t, p) == pytest.approx(C.nmi(t, fresh))
        # NMI from the definition with explicit joint probabilities
        n = len(t)
        mi = sum(
            (c / n) * math.log(c * n / ((t == a).sum() * (fresh == b).sum()))
            for a in np.unique(t)
            for b in np.unique(fresh)
            if (c := int(((t == a) & (fresh == b)).sum()))
        )
        ent = [-sum((k / n) * math.log(k / n) for k in np.unique(x, return_counts=True)[1]) for x in (t, fresh)]
        assert C.nmi(t, p) == pytest.approx(mi / np.mean(ent))


def test_metrics_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match="equal length"):
        C.nmi([0, 1], [0, 1, 2])


# -- distances and graphs ----------------------------------------------------------------------------------------
def test_self_reranking_matches_rerank_block() -> None:
    f, _ = blobs(10, 10, dim=16, noise=0.5, seed=1)
    d = C.reranked_distances(f, k1=8, k2=3, lambda_value=0.0)
    assert d.shape == (100, 100) and d.dtype == np.float32
    assert np.array_equal(d, d.T) and (np.diag(d) == 0).all() and d.min() >= 0 and d.max() <= 1
    # rerank(q, g) on the split set re-ranks the same 100 items: its Jaccard block is ours
    np.testing.assert_allclose(d[:30, 30:], rerank(f[:30], f[30:], k1=8, k2=3, lambda_value=0.0), atol=1e-6)
    d3 = C.reranked_distances(f, k1=8, k2=3, lambda_value=0.3)
    assert np.allclose(d3, d3.T, atol=1e-6)
    # rerank's original-distance term is row-normalised (asymmetric); ours is its symmetrisation
    r = rerank(f[:30], f[30:], k1=8, k2=3, lambda_value=0.3)
    rt = rerank(f[30:], f[:30], k1=8, k2=3, lambda_value=0.3)
    np.testing.assert_allclose(d3[:30, 30:], (r + rt.T) / 2, atol=1e-5)


@pytest.mark.parametrize(("lam", "eps"), [(0.0, 0.3), (0.0, 0.6), (0.3, 0.45)])
def test_sparse_graph_matches_dense(lam: float, eps: float, monkeypatch: pytest.MonkeyPatch) -> None:
    f, _ = blobs(15, 8, dim=16, noise=0.55, outliers=5, seed=2)
    monkeypatch.setattr(C, "_PAIR_BUDGET", 5000)  # force many row chunks
    assert len(C._row_chunks(C._encode(f, 10, 4))) >= 4
    dense = C.graph_from_dense(C.reranked_distances(f, k1=10, k2=4, lambda_value=lam), eps)
    sparse = C.reranked_graph(f, eps, k1=10, k2=4, lambda_value=lam)
    assert dense.n_edges > 100
    assert np.array_equal(dense.rows, sparse.rows) and np.array_equal(dense.cols, sparse.cols)
    np.testing.assert_allclose(dense.dist, sparse.dist, atol=1e-6)
    assert np.array_equal(C.dbscan(dense, 3), C.dbscan(sparse, 3))
    cd, cs = C.graph_from_dense(C.cosine_distances(f), 0.4), C.cosine_graph(f, 0.4)
    assert np.array_equal(cd.rows, cs.rows) and np.array_equal(cd.cols, cs.cols)


def test_sparse_refuses_inexact_eps_and_graph_within() -> None:
    f, _ = blobs(4, 6, seed=4)
    with pytest.raises(ValueError, match="exact only for eps < 1 - lambda"):
        C.reranked_graph(f, 0.75, k1=5, k2=2, lambda_value=0.3)
    g = C.cosine_graph(f, 0.5)
    small = g.within(0.06)
    assert 0 < small.n_edges < g.n_edges and (small.dist <= 0.06).all()
    assert np.array_equal(C.dbscan(small), C.dbscan(C.cosine_graph(f, 0.06)))
    with pytest.raises(ValueError, match="cannot widen"):
        g.within(0.6)


# -- clustering --------------------------------------------------------------------------------------------------
def line_graph(xs: list[float], eps: float) -> C.EpsGraph:
    x = np.array(xs, dtype=np.float32)
    return C.graph_from_dense(np.abs(x[:, None] - x[None, :]), eps)


def test_dbscan_by_hand() -> None:
    # points on a line, eps = 1.3, min_samples = 3 (self included):
    #   0.0: {0, 1.0} -> 2, border;  1.0: {0, 1, 2} -> 3, core;  2.0: {1, 2, 3.2} -> 3, core;
    #   3.2: {2, 3.2} -> 2, border of the core 2.0;  10, 11: 2 each, no core -> noise;  20: alone -> noise
    g = line_graph([0.0, 1.0, 2.0, 3.2, 10.0, 11.0, 20.0], 1.3)
    assert C.dbscan(g, 3).tolist() == [0, 0, 0, 0, -1, -1, -1]
    # min_samples = 2: every item with a neighbour is core; {10, 11} becomes the second (smaller) cluster
    assert C.dbscan(g, 2).tolist() == [0, 0, 0, 0, 1, 1, -1]
    # a border item between two clusters joins its nearest core neighbour's. eps = 1.25, min_samples = 4:
    # A = 0 .. 2 and B = 4.3 .. 6.3 in steps of 0.5 are dense; x = 3.1 sees only 2.0 (1.1) and 4.3 (1.2): border
    a, b = [0.0, 0.5, 1.0, 1.5, 2.0], [4.3, 4.8, 5.3, 5.8, 6.3]
    assert C.dbscan(line_graph([*a, 3.1, *b], 1.25), 4).tolist() == [0] * 6 + [1] * 5
    # x = 3.2 is nearer B (1.1 vs 1.2): B gets 6 items and becomes cluster 0
    assert C.dbscan(line_graph([*a, 3.2, *b], 1.25), 4).tolist() == [1] * 5 + [0] * 6
    assert C.dbscan(line_graph([5.0, 0.0], 1.0), 1).tolist() == [-1, -1]  # singletons are reported as noise


def test_relabel_orders_by_size() -> None:
    assert C._relabel(np.array([7, 7, 3, 3, 3, 9, -1, 5, 5])).tolist() == [1, 1, 0, 0, 0, -1, -1, 2, 2]


@pytest.mark.parametrize(
    ("options", "outliers"),
    [
        ({}, 0),
        ({"backend": "sparse"}, 0),
        ({"backend": "dense"}, 0),
        ({"lambda_value": 0.3}, 0),
        ({"k2": 1, "eps": 0.9}, 4),  # without query expansion a lone item shares no support with anyone: distance 1
        ({"rerank": False}, 4),
        ({"rerank": False, "backend": "dense"}, 4),
        ({"method": "agglomerative", "eps": 0.7}, 0),
        ({"method": "agglomerative", "rerank": False}, 4),
        ({"method": "mutual_knn", "eps": 0.6, "knn": 13}, 0),
    ],
)
def test_recovers_separated_identities(options: dict, outliers: int) -> None:
    # Re-ranking assumes identities of up to about k1 items: 12 ids x 14 items, k1 = 10. With query
    # expansion (k2 > 1) a lone item borrows its neighbours' encoding and can join their cluster.
    f, y = blobs(12, 14, outliers=outliers, seed=5)
    labels = C.cluster_features(f, **{"k1": 10, "k2": 4, **options})
    assert labels.max() + 1 == 12
    assert (labels[y < 0] == -1).all()  # the lone outliers are noise
    assert C.pairwise_f_score(y, labels).f == 1.0 and C.nmi(y, labels) == pytest.approx(1.0)
    sizes = np.bincount(labels[labels >= 0])
    assert (np.diff(sizes) <= 0).all()


def test_tiny_inputs_and_errors() -> None:
    assert C.cluster_features(np.ones((1, 4))).tolist() == [-1]
    assert C.cluster_features(np.zeros((0, 4))).tolist() == []
    f = unit(np.array([[1, 0, 0], [1, 0.01, 0], [0, 1, 0]], np.float32))
    assert C.cluster_features(f, rerank=False).tolist() == [0, 0, -1]
    assert C.cluster_features(f).shape == (3,)  # k1 shrinks to fit 3 items (then everything is reciprocal)
    with pytest.raises(ValueError, match="method"):
        C.cluster_features(f, method="kmeans")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dense backend is limited"):
        C._check_dense(C.DENSE_MAX + 1)


# -- galleries ---------------------------------------------------------------------------------------------------
def make_gallery(root: Path, with_tracks: bool = True) -> tuple[Gallery, dict[int, int]]:
    """3 people seen by 2 cameras, 2 tracks each of 3 crops (coloured by person), plus a stranger's track."""
    rng = np.random.default_rng(7)
    dim = 24
    centres = rng.standard_normal((4, dim))
    colours = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (128, 128, 128)]
    g = Gallery.open(root, dim=dim)
    person_of_track: dict[int, int] = {}
    tid = 0
    for cam in ("cam1", "cam2"):
        g.add_source(f"{cam}.mp4", cam)
        for person in range(3 if cam == "cam2" else 4):
            for _ in range(2 if person < 3 else 1):
                feats, sights = [], []
                for k in range(3):
                    img = np.full((96, 48, 3), colours[person], np.uint8)
                    crop = g.save_crop(img, f"{cam}.mp4")
                    feats.append(centres[person] + 0.15 * rng.standard_normal(dim))
                    sights.append(
                        Sighting(
                            source=f"{cam}.mp4",
                            timestamp=float(10 * tid + k),
                            track_id=tid if with_tracks else None,
                            crop=crop,
                        )
                    )
                g.add(np.array(feats, np.float32), sights)
                person_of_track[tid] = person
                tid += 1
    return g, person_of_track


def test_cluster_gallery_tracks_and_contact_sheets(tmp_path: Path) -> None:
    g, person_of = make_gallery(tmp_path / "g")
    with g:
        res = C.cluster_gallery(g, rerank=False)  # 13 tracks: too few to re-rank
        assert res.level == "tracks" and res.n_items == 13 and len(res.clusters) == 3
        tracks = {t.id: t for t in g.tracks()}
        for cl in res.clusters:
            people = {person_of[tracks[i].track_id] for i in cl.items}
            assert len(people) == 1 and cl.size == 4 and cl.cameras == ["cam1", "cam2"]
            assert len(cl.records) == 12 and {r.track_id for r in g.get(cl.records)} == {
                tracks[i].track_id for i in cl.items
            }
        assert len(res.noise) == 1 and person_of[tracks[res.noise[0]].track_id] == 3  # the stranger

        sheets = C.contact_sheets(res, g, tmp_path / "out", max_crops=10)
        assert [p.name for p in sheets] == ["cluster_0000.jpg", "cluster_0001.jpg", "cluster_0002.jpg"]
        img = cv2.imread(str(sheets[0]))
        assert img.shape == (30 + 2 * 128, 8 * 64, 3)  # header + 10 crops in 2 rows of 8
        page = (tmp_path / "out" / "index.html").read_text()
        assert all(f'href="{p.name}"' in page for p in sheets) and "1 left unclustered" in page
        assert len(C.contact_sheets(res.clusters[:1], g, tmp_path / "out")) == 1  # a rerun removes stale sheets
        assert sorted(p.name for p in (tmp_path / "out").glob("*.jpg")) == ["cluster_0000.jpg"]
        json.dumps(res.to_dict())  # serialisable

        sights = C.cluster_gallery(g, level="sightings", rerank=False)
        assert sights.level == "sightings" and sights.n_items == 39
        assert [c.size for c in sights.clusters] == [12, 12, 12, 3]  # the stranger's 3 crops cluster too


def test_cluster_gallery_without_tracks_uses_sightings(tmp_path: Path) -> None:
    g, _ = make_gallery(tmp_path / "g", with_tracks=False)
    with g:
        res = C.cluster_gallery(g, rerank=False)
    assert res.level == "sightings" and res.n_items == 39 and not res.noise
    assert [c.size for c in res.clusters] == [12, 12, 12, 3]
    assert all(c.items == c.records for c in res.clusters)  # a sighting's only record is itself


# -- command line ------------------------------------------------------------------------------------------------
def _app():
    import typer

    from reidkit.cli.cluster import register

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """test app"""

    register(app)
    return app


def test_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    from reidkit.cli import common
    from reidkit.io import FeatureSet, save_features

    monkeypatch.setattr(common, "console", Console(width=200))
    runner = CliRunner()
    app = _app()
    g, _ = make_gallery(tmp_path / "g")
    g.close()
    out = tmp_path / "sheets"
    res = runner.invoke(app, ["cluster", "--gallery", str(tmp_path / "g"), "--out", str(out), "--no-rerank"])
    assert res.exit_code == 0, res.output
    assert "13 tracks in 3 clusters" in res.output and (out / "index.html").is_file()
    data = json.loads((out / "clusters.json").read_text())
    assert (
        data["level"] == "tracks"
        and data["n_clusters"] == 3
        and data["options"]["rerank"] is False
        and data["options"]["eps"] == 0.15
    )

    f, y = blobs(10, 14, outliers=3, seed=8)
    pids = np.where(y >= 0, y + 1, 0)  # outliers are distractors (pid 0)
    pids[:2] = -1  # junk: left out
    save_features(tmp_path / "f.npz", FeatureSet(f[:5], f, pids[:5], pids, np.zeros(5, int), np.zeros(len(f), int)))
    args = ["cluster", "--features", str(tmp_path / "f.npz"), "--no-rerank"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "fo")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "fo" / "clusters.json").read_text())["summary"]
    assert summary["items"] == len(f) - 2 and summary["pair_f"] == 1.0 and summary["clusters"] == 10
    res = runner.invoke(app, [*args, "--distractors", "exclude", "--method", "agglomerative"])
    assert res.exit_code == 0 and "distractors (pid 0): excluded" in res.output and "pair_f  " in res.output

    for args, msg in (
        (["cluster"], "exactly one of"),
        (["cluster", "--gallery", str(tmp_path / "g")], "needs --out"),
        (["cluster", "--gallery", str(tmp_path / "nope"), "--out", str(out)], "not a reidkit gallery"),
        (["cluster", "--features", str(tmp_path / "nope.npz")], "no such features file"),
        (["cluster", "--features", str(tmp_path / "f.npz"), "--backend", "sparse", "--eps", "1.0"], "exact only"),
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and msg in res.output, (args, res.output)
