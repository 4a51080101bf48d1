"""Ten million sightings on one machine: the FAISS gallery index with compressed IVF lists (issue 21).

Builds the index a folder gallery searches (`reidkit.search.storage.index.VectorIndex`, ``ivf-sq8`` by
default: IVF lists holding 1 byte a dimension) over N synthetic L2-normalised D-dim features, then measures:
memory (RSS of this process once built, and its peak), build time (k-means training, then adding), and,
for a sweep of nprobe, single-query latency p50/p99 with one OpenMP thread (how a query server runs
FAISS) and recall@100 against exact search (ground truth by brute force over the float32 features,
regenerated chunk by chunk: the N x D floats never sit in memory at once).

Data: as bench/gallery_scale.py (identities in a 64-d latent space grouped into 256 look-alike groups,
projected to D dims plus isotropic noise, ~20 crops per identity), generated in chunks from per-chunk
seeds so the ground-truth pass sees the same vectors. Queries are fresh crops of gallery identities.

Usage: .venv/bin/python bench/gallery_10m.py [--n 10000000] [--dim 512] [--codec sq8] [--nlist 4096]
       (smoke run: --n 200000 --nlist 256 --no-write)
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from collections.abc import Iterator

import faiss
import numpy as np
from _common import command_line, machine, write_section

from reidkit.search.storage.index import IndexConfig, VectorIndex

LATENT, GROUPS, PER_ID = 64, 256, 20
GOAL_GB, GOAL_MS, GOAL_RECALL = 12.0, 10.0, 0.9


def status_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Synth:
    """Chunk ``i`` of the gallery is the same array whenever it is asked for (seeded by ``(seed, i)``)."""

    def __init__(self, n: int, dim: int, chunk: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.n, self.dim, self.chunk, self.seed = n, dim, chunk, seed
        self.proj = (rng.standard_normal((LATENT, dim)) / math.sqrt(LATENT)).astype(np.float32)
        groups = rng.standard_normal((GROUPS, LATENT)).astype(np.float32)
        self.n_ids = max(1, n // PER_ID)
        noise = 0.6 * rng.standard_normal((self.n_ids, LATENT)).astype(np.float32)
        self.centres = groups[rng.integers(0, GROUPS, self.n_ids)] + noise

    def _sample(self, rng: np.random.Generator, m: int) -> np.ndarray:
        z = self.centres[rng.integers(0, self.n_ids, m)]
        z = z + 0.35 * rng.standard_normal(z.shape, dtype=np.float32)
        x = z @ self.proj + 0.25 * rng.standard_normal((m, self.dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first id, vectors)`` of each chunk, in order."""
        for i, start in enumerate(range(0, self.n, self.chunk)):
            yield start, self._sample(np.random.default_rng((self.seed, i)), min(self.chunk, self.n - start))

    def queries(self, m: int) -> np.ndarray:
        return self._sample(np.random.default_rng((self.seed, 10**9)), m)


def exact_top(synth: Synth, q: np.ndarray, k: int) -> np.ndarray:
    """Exact top-``k`` ids by inner product, streamed over the regenerated chunks."""
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.full((len(q), k), -1, np.int64)
    for start, x in synth.chunks():
        s = q @ x.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
        cand_i = np.concatenate([best_i, part + start], axis=1)
        order = np.argsort(-cand_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--codec", default="sq8", choices=["sq8", "sq4", "fp16", "flat"])
    ap.add_argument("--nlist", type=int, default=4096)
    ap.add_argument("--nprobe", default="8,16,32,64")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=250_000)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()

    synth = Synth(a.n, a.dim, a.chunk)
    cfg = IndexConfig(kind="ivf", codec=a.codec, nlist=a.nlist)
    base = status_mb("VmRSS")
    t0 = time.perf_counter()
    need = math.ceil(cfg.min_train / a.chunk)
    train = np.concatenate([x for _, x in itertools.islice(synth.chunks(), need)])
    train = train[: cfg.min_train]
    index = VectorIndex.trained_ivf(train, cfg)
    del train
    t_train = time.perf_counter() - t0
    print(f"trained {a.nlist} lists on {cfg.min_train:,} vectors in {t_train:.0f} s", flush=True)
    t0 = time.perf_counter()
    for start, x in synth.chunks():
        index.add(np.arange(start, start + len(x), dtype=np.int64), x)
        el = time.perf_counter() - t0
        done = start + len(x)
        print(f"\r  added {done:,}/{a.n:,} ({el:.0f} s, ~{el / done * (a.n - done):.0f} s left)  ", end="", flush=True)
    t_add = time.perf_counter() - t0
    print()
    rss = status_mb("VmRSS")
    code_bytes = index.index.code_size * index.ntotal
    peak = status_mb("VmHWM")
    print(f"built: RSS {rss / 1024:.2f} GiB (codes {code_bytes / 2**30:.2f} GiB), peak {peak / 1024:.2f} GiB")

    q = synth.queries(a.queries)
    t0 = time.perf_counter()
    truth = exact_top(synth, q, a.k)
    print(f"exact top-{a.k} of {a.queries} queries in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    faiss.omp_set_num_threads(1)
    for nprobe in [int(v) for v in a.nprobe.split(",")]:
        index.search(q[:1], a.k, nprobe=nprobe)  # warm-up
        times, found = [], []
        for i in range(len(q)):
            t = time.perf_counter()
            _, ids = index.search(q[i : i + 1], a.k, nprobe=nprobe)
            times.append((time.perf_counter() - t) * 1e3)
            found.append(ids[0])
        rec = float(np.mean([len(np.intersect1d(f, t)) / a.k for f, t in zip(found, truth, strict=True)]))
        p50, p99 = np.percentile(times, 50), np.percentile(times, 99)
        rows.append((nprobe, p50, p99, rec))
        print(f"nprobe {nprobe:>4}: p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  recall@{a.k} {rec:.3f}", flush=True)

    ok = [r for r in rows if r[1] <= GOAL_MS and r[3] >= GOAL_RECALL]
    verdict = f"goal met at nprobe {ok[0][0]}" if ok and rss / 1024 <= GOAL_GB else "goal NOT met"
    md = [
        f"### {a.n:,} sightings x {a.dim}-d in one FAISS gallery index (ivf-{a.codec}, {a.nlist} lists)",
        "",
        f"`{command_line()}` ({machine()})",
        "",
        f"- Memory: RSS {rss / 1024:.2f} GiB once built (process before: {base / 1024:.2f} GiB; the list codes "
        f"alone {code_bytes / 2**30:.2f} GiB); peak {peak / 1024:.2f} GiB. Goal <= {GOAL_GB:g} GB.",
        f"- Build: k-means on {cfg.min_train:,} vectors {t_train:.0f} s; adding {a.n:,} vectors {t_add:.0f} s "
        f"({a.n / t_add:,.0f} a second, 2 cores).",
        f"- Single-query search, 1 thread, {a.queries} queries, recall@{a.k} against exact float32 search:",
        "",
        f"| nprobe | p50 ms | p99 ms | recall@{a.k} |",
        "|---:|---:|---:|---:|",
        *[f"| {n} | {p50:.2f} | {p99:.2f} | {rec:.3f} |" for n, p50, p99, rec in rows],
        "",
        f"Goal: p50 <= {GOAL_MS:g} ms at recall@{a.k} >= {GOAL_RECALL}: {verdict}.",
    ]
    print("\n".join(md))
    if not a.no_write:
        write_section(f"gallery-{a.n // 1_000_000}m-{a.codec}", "\n".join(md))
    sys.exit(0)


if __name__ == "__main__":
    main()
