"""Re-ranked evaluation at MSMT17 size (11,659 queries x 82,161 gallery, 512-d, synthetic features with
identities and cameras): the whole re-ranked matrix then evaluated, against the streamed evaluation
(``reidkit.evaluation.evaluate_reranked``: a block of query rows at a time, nothing Q x G held).

Each runs in its own process, so its peak RSS (VmHWM, imports included) is its own; the figures of the
two must agree. Usage: .venv/bin/python bench/rerank_eval_msmt.py [--rows 512]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import ROOT, command_line, machine, write_section

OUT = ROOT / "bench" / "out"
NQ, NG, D, IDS, CAMS, NOISE = 11659, 82161, 512, 4101, 15, 2.2


def _rss_gb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def problem(path: Path) -> None:
    rng = np.random.default_rng(0)
    pids = rng.integers(0, IDS, NQ + NG)
    # noise 2.2x the identity signal: a hard problem (same-id cosine about 0.17), so the figures are far
    # from 100 % and any disagreement between the two ways would show
    noise = NOISE * rng.standard_normal((NQ + NG, D)).astype(np.float32)
    f = rng.standard_normal((IDS, D)).astype(np.float32)[pids] + noise
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    cams = rng.integers(0, CAMS, NQ + NG)
    np.savez(path, qf=f[:NQ], gf=f[NQ:], q_pids=pids[:NQ], g_pids=pids[NQ:], q_cams=cams[:NQ], g_cams=cams[NQ:])


def worker(path: Path, mode: str, rows: int) -> None:
    from reidkit.evaluation import evaluate, evaluate_reranked, rerank

    imports = _rss_gb()
    z = np.load(path)
    qf, gf, ids = z["qf"], z["gf"], (z["q_pids"], z["g_pids"], z["q_cams"], z["g_cams"])
    rerank(qf[:30], gf[:60])  # numba kernels loaded (timed apart)
    t0, c0 = time.perf_counter(), time.process_time()
    res = evaluate_reranked(qf, gf, *ids, rows=rows) if mode == "stream" else evaluate(rerank(qf, gf), *ids)
    out = {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "peak_gb": _rss_gb()}
    out.update(imports_gb=imports, **res.summary())
    print(json.dumps(out))


def run(path: Path, mode: str, rows: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(path), "--mode", mode, "--rows", str(rows)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="stream", help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.mode, args.rows)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "rerank_eval_msmt.npz"
    problem(path)
    load0 = os.getloadavg()[0]
    stream = run(path, "stream", args.rows)
    whole = run(path, "whole", args.rows)
    load1 = os.getloadavg()[0]
    path.unlink()
    keys = ("rank1", "rank5", "mAP", "mINP")
    diff = max(abs(stream[k] - whole[k]) for k in keys)
    rows = "\n".join(
        f"| {name} | {r['seconds']:.1f} | {r['cpu']:.1f} | {r['peak_gb']:.2f} | "
        + " | ".join(f"{r[k]:.4f}" for k in keys)
        + " |"
        for name, r in (
            ("re-ranked matrix, then evaluate", whole),
            (f"streamed, {args.rows} query rows a block", stream),
        )
    )
    md = f"""## Re-ranked evaluation at MSMT17 size (issue 23, part 4)
{NQ:,} queries x {NG:,} gallery, 512-d synthetic features ({IDS:,} identities, {CAMS} cameras, noise {NOISE}x the identity signal), k1=20, k2=6,
lambda=0.3. Each way in its own process; peak RSS is that process's VmHWM, torch and numba included
(about {stream["imports_gb"]:.2f} GB after imports). Load average {load0:.2f} before, {load1:.2f} after. {machine()}

| way | seconds | CPU seconds | peak RSS (GB) | rank-1 | rank-5 | mAP | mINP |
|---|---:|---:|---:|---:|---:|---:|---:|
{rows}

Largest difference between the two ways' figures: {diff:.1e} (percentage points).

Command: `{command_line()}`"""
    print(md)
    if not args.no_write:
        write_section("rerank_eval_msmt", md)


if __name__ == "__main__":
    main()
