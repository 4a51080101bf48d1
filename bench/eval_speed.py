"""Evaluation speed on a Market-1501-size problem (3,368 x 15,913): reidkit vs torchreid 0.2.5.

Both evaluate the same distance matrix in the same run; their CMC and mAP must agree to 1e-6.
Usage: .venv/bin/python bench/eval_speed.py [--features feats.npz] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import ROOT, command_line, machine, market_problem, run_peer, write_section

from reidkit.evaluation import evaluate, pairwise_distance


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--features", help="saved features (.npz); synthetic features if omitted")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    qf, gf, q_pids, g_pids, q_cams, g_cams, kind = market_problem(args.features)
    dist = pairwise_distance(qf, gf, "euclidean")
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ours = evaluate(dist, q_pids, g_pids, q_cams, g_cams, max_rank=50)
        times.append(time.perf_counter() - t0)
    ours_s = float(np.median(times))

    inp = ROOT / "bench" / "out" / "eval_problem.npz"
    inp.parent.mkdir(parents=True, exist_ok=True)
    np.savez(inp, distmat=dist, q_pids=q_pids, g_pids=g_pids, q_camids=q_cams, g_camids=g_cams)
    peer = run_peer("eval", "--input", str(inp))
    inp.unlink()

    cmc_diff = float(np.abs(np.asarray(peer["cmc"]) - ours.cmc).max())
    map_diff = abs(peer["mAP"] - ours.mAP)
    agree = cmc_diff <= 1e-6 and map_diff <= 1e-6
    ratio = peer["seconds"] / ours_s
    md = f"""## Evaluation speed (issue 3)
Market-1501-size problem, {dist.shape[0]:,} queries x {dist.shape[1]:,} gallery ({kind} features),
squared-Euclidean distances; same matrix for both, same run. {machine()}.

| evaluator | seconds | rank-1 | mAP |
|---|---|---|---|
| reidkit `evaluate` (median of {args.repeats}) | {ours_s:.3f} | {100 * ours.rank(1):.2f} | {100 * ours.mAP:.2f} |
| torchreid 0.2.5 `evaluate_rank` ({peer.get("evaluator", "?")}) | {peer["seconds"]:.2f} | {100 * peer["cmc"][0]:.2f} | {100 * peer["mAP"]:.2f} |

**reidkit is {ratio:.0f}x faster**; results agree: max |CMC diff| {cmc_diff:.1e}, |mAP diff| {map_diff:.1e}
({"OK" if agree else "DISAGREE"}, tolerance 1e-6). Per-run reidkit times: {", ".join(f"{t:.3f}" for t in times)} s.

Command: `{command_line()}`
"""
    write_section("eval_speed", md)
    print(md)
    if not agree:
        raise SystemExit("reidkit and torchreid disagree")


if __name__ == "__main__":
    main()
