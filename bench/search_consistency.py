"""Consistency check: person search through a `Gallery` ranks Market-1501 exactly as `reidkit eval`.

Builds a gallery from Market-1501's gallery crops (one sighting per image, camera from the file
name, flat exact index; junk pid -1 left out, as the evaluator leaves it out), with features from the
same model and extraction as `reidkit eval --weights` (or a features file from `reidkit extract`).
Every query image is searched through `Gallery.search` with k = the whole gallery (no re-ranking);
the returned rankings become a distance matrix (distance = rank position) scored by
`reidkit.evaluation.metrics.evaluate`, which applies the protocol (same-camera same-id matches
excluded). That is compared with `reidkit.evaluation.evaluate_features` (what `reidkit eval` runs)
on the same features: rank-1/5/10, mAP and mINP must agree (any difference is reported, with the
number of queries whose AP differs and why).

Usage: .venv/bin/python bench/search_consistency.py [--weights W --model M | --features F.npz]
       [--queries N] [--k K] [--no-write]       (smoke run: --queries 300 --no-write)
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from _common import ROOT, command_line, machine, write_section

from reidkit.evaluation import evaluate, evaluate_features
from reidkit.io import FeatureSet, load_features
from reidkit.search.storage import Gallery, Sighting

TOLERANCE = 1e-4  # absolute, on rates in [0, 1] (0.01 percentage points)
FRAME = re.compile(r"c\d+s(\d+)_(\d+)")


def features(args: argparse.Namespace) -> tuple[FeatureSet, str]:
    """Query/gallery features as `reidkit eval` computes them (or from a features file)."""
    if args.features:
        return load_features(args.features), f"features file `{Path(args.features).name}`"
    from reidkit.datasets import get_dataset
    from reidkit.extract import extract_dataset, make_embedder

    embedder, info = make_embedder(args.model, args.weights, batch_size=args.batch_size, threads=args.threads)
    t = time.perf_counter()
    fs, stats = extract_dataset(embedder, get_dataset("market1501"), progress=True)
    print(f"extracted {stats.images} images in {time.perf_counter() - t:.0f} s ({stats.images_per_s:.1f} img/s)")
    if args.save_features:
        from reidkit.io import save_features

        save_features(args.save_features, fs)
    return fs, f"`{info.name}` ({Path(info.source).name})"


def build_gallery(root: Path, fs: FeatureSet) -> tuple[Gallery, np.ndarray, float]:
    """A flat gallery of the non-junk gallery images; returns it, the kept columns and build seconds."""
    keep = np.flatnonzero(fs.g_pids != -1)
    records = []
    for i in keep:
        cam = f"c{int(fs.g_camids[i]) + 1}"
        ts, frame = float(i), None
        if fs.g_paths is not None and (m := FRAME.search(os.path.basename(str(fs.g_paths[i])))):
            frame = int(m.group(2))
            ts = int(m.group(1)) * 1e6 + frame / 25.0  # sequence, then seconds at 25 fps
        records.append(Sighting(f"market1501/{cam}", ts, cam, frame=frame))
    t = time.perf_counter()
    g = Gallery.open(root, dim=fs.gf.shape[1], index="flat", autosave=None)
    ids = g.add(fs.gf[keep], records)
    g.save()
    col = np.full(int(ids.max()) + 1, -1, np.int64)
    col[ids] = keep
    return g, col, time.perf_counter() - t


def search_rankings(
    g: Gallery, col: np.ndarray, qf: np.ndarray, n_gallery: int, k: int, batch: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Rank-position and (1 - score) distance matrices (Q x all gallery columns) from Gallery.search."""
    nq = len(qf)
    rank_d = np.full((nq, n_gallery), np.inf, np.float32)  # not returned (k < gallery, or junk): last
    score_d = np.full((nq, n_gallery), np.inf, np.float32)
    t = time.perf_counter()
    for s in range(0, nq, batch):
        for i, hits in enumerate(g.search(qf[s : s + batch], k), start=s):
            cols = col[[h.id for h in hits]]
            rank_d[i, cols] = np.arange(len(hits), dtype=np.float32)
            score_d[i, cols] = 1.0 - np.array([h.score for h in hits], np.float32)
    return rank_d, score_d, time.perf_counter() - t


def candidate_rerank(
    g: Gallery, col: np.ndarray, qf: np.ndarray, rank_d: np.ndarray, k: int
) -> tuple[np.ndarray, float]:
    """Rankings of `search_person` (top-k candidates re-ranked), the rest of the gallery after them
    in plain search order; and the seconds per query."""
    from reidkit.search.query.search import search_person

    out = rank_d + k
    t = time.perf_counter()
    for i in range(len(qf)):
        r = search_person(g, features=qf[i], k=k, threshold=-1.0, adaptive=False, rerank=True)
        out[i, col[[h.id for h in r.hits]]] = np.arange(len(r.hits), dtype=np.float32)
    return out, (time.perf_counter() - t) / len(qf)


def figures(r) -> dict[str, float]:
    return {"rank-1": r.rank(1), "rank-5": r.rank(5), "rank-10": r.rank(10), "mAP": r.mAP, "mINP": r.mINP}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="checkpoint (default: the shipped default model)")
    ap.add_argument("--model", help="architecture for torchreid checkpoints, e.g. osnet_x0_25")
    ap.add_argument("--features", help="features file from `reidkit extract` instead of extracting")
    ap.add_argument("--save-features", help="keep the extracted features in this .npz")
    ap.add_argument("--queries", type=int, default=0, help="evaluate this many queries, evenly spaced (0: all)")
    ap.add_argument("--k", type=int, default=0, help="candidates per query (0: the whole gallery)")
    ap.add_argument("--batch", type=int, default=32, help="queries per Gallery.search call")
    ap.add_argument("--batch-size", type=int, default=32, help="images per extraction batch")
    ap.add_argument("--threads", type=int, default=None, help="torch / FAISS threads")
    ap.add_argument(
        "--rerank-k", type=int, default=200, help="also score search_person's re-ranking of k candidates (0: skip)"
    )
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    if args.threads:
        import torch

        faiss.omp_set_num_threads(args.threads)
        torch.set_num_threads(args.threads)

    fs, model = features(args)
    if args.queries and args.queries < len(fs.qf):
        sel = np.linspace(0, len(fs.qf) - 1, args.queries).round().astype(int)
        fs = FeatureSet(fs.qf[sel], fs.gf, fs.q_pids[sel], fs.g_pids, fs.q_camids[sel], fs.g_camids, None, fs.g_paths)
    nq, ng = len(fs.qf), len(fs.gf)
    t = time.perf_counter()
    ref = evaluate_features(fs, "cosine")  # exactly what `reidkit eval` runs
    t_eval = time.perf_counter() - t

    with tempfile.TemporaryDirectory(prefix="reidkit-consistency-", dir=ROOT / "bench" / "out") as tmp:
        g, col, t_build = build_gallery(Path(tmp) / "gallery", fs)
        n_kept = len(g)
        k = args.k or n_kept
        rank_d, score_d, t_search = search_rankings(g, col, fs.qf, ng, k, args.batch)
        if args.rerank_k:
            cand_d, t_cand = candidate_rerank(g, col, fs.qf, rank_d, args.rerank_k)
        g.close()
    by_rank = evaluate(rank_d, fs.q_pids, fs.g_pids, fs.q_camids, fs.g_camids)
    by_score = evaluate(score_d, fs.q_pids, fs.g_pids, fs.q_camids, fs.g_camids)

    a, b, c = figures(ref), figures(by_rank), figures(by_score)
    worst = max(abs(a[m] - b[m]) for m in a)
    ap_diff = np.abs(ref.ap - by_rank.ap)
    n_ap = int((ap_diff > 1e-9).sum())
    verdict = "**match**" if worst <= TOLERANCE else "**MISMATCH**"
    note = (
        ": FAISS and torch sum the same inner products in a different order, so near-ties "
        "(float32 rounding, ~1e-7) can swap two neighbours"
        if n_ap
        else ""
    )
    rows = "\n".join(
        f"| {m} | {100 * a[m]:.4f} | {100 * b[m]:.4f} | {100 * c[m]:.4f} | {100 * (b[m] - a[m]):+.4f} |" for m in a
    )
    md = f"""## Search consistency: `Gallery.search` vs `reidkit eval`
Market-1501, model {model}: {nq:,} queries searched one by one in batches of {args.batch} through
`Gallery.search` (flat exact index, k = {k:,} of {n_kept:,} gallery crops, junk excluded, no re-ranking)
vs `reidkit.evaluation.evaluate_features` (cosine) on the same features; the search rankings are scored
by `reidkit.evaluation.metrics.evaluate` (same-camera same-id matches excluded by the protocol).
{machine()}.

| metric (%) | `reidkit eval` | search (rank order) | search (1 - score) | difference |
|---|---|---|---|---|
{rows}

Verdict: {verdict} (largest difference {100 * worst:.4f} percentage points, tolerance {100 * TOLERANCE:.2f});
queries whose AP differs: {n_ap} of {len(ap_diff):,} (largest AP difference {ap_diff.max():.2e}){note}.
Times: gallery build {t_build:.1f} s, search {t_search:.1f} s ({1000 * t_search / nq:.1f} ms per query
for k = {k:,} hits with metadata), `reidkit eval` {t_eval:.2f} s.

Command: `{command_line()}`
"""
    if args.rerank_k:
        t = time.perf_counter()
        full = evaluate_features(fs, "cosine", rerank_=True)
        t_full = time.perf_counter() - t
        cand = evaluate(cand_d, fs.q_pids, fs.g_pids, fs.q_camids, fs.g_camids)
        rr = [("plain search (no re-ranking)", by_rank, "–")]
        rr.append((f"`search_person`: top {args.rerank_k} candidates re-ranked", cand, f"{1000 * t_cand:.1f} ms/query"))
        rr.append(("`reidkit eval --rerank` (whole query set + gallery)", full, f"{t_full:.1f} s in all"))
        table = "\n".join(
            f"| {name} | {100 * r.rank(1):.2f} | {100 * r.rank(5):.2f} | {100 * r.mAP:.2f} | {tm} |"
            for name, r, tm in rr
        )
        md += f"""
### Re-ranking over the candidates only
`search_person` re-ranks the query with its k candidates only (O(k) per query, not O(gallery)); the rest of
the gallery keeps its plain order behind them. Same features and queries as above (k1=20, k2=6, lambda=0.3).

| ranking | rank-1 | rank-5 | mAP | time |
|---|---|---|---|---|
{table}
"""
    print(md)
    if not args.no_write:
        write_section("search_consistency", md)
    if worst > TOLERANCE:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
