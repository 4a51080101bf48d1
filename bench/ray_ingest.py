"""Ingest on Ray against one process (issue 21): frames a second of one Ray worker and of two, on a two-node
local Ray cluster (``ray.cluster_utils.Cluster``: a head and one more node, one CPU each), beside the plain
``reidkit ingest`` path (one process, both cores), all into galleries on one real Milvus server, in one run.

Footage: ``--clips`` cuts of vtest.avi (real pedestrians, 768x576, ``--frames`` frames each, MJPEG). Each run
ingests all the clips into a gallery of its own; the sightings of every run must be the same (checked: same
(clip, frame, box) set). Reported per run: wall time from the call to the end (Ray: with its workers' start,
model load and gallery connection), the time until the first source started, frames a second over the
wall time, and the sightings. The cluster's own start is timed separately. Two cores: a second worker can
only share them, so the point is that it works and what it costs, not a speed-up.

Usage: .venv/bin/python bench/ray_ingest.py [--clips 4] [--frames 100] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
from _common import command_line, machine, write_section  # noqa: E402

from reidkit.search import api  # noqa: E402
from reidkit.search.storage import open_gallery  # noqa: E402
from tests import milvus_local  # noqa: E402

VTEST = Path(os.environ.get("REIDKIT_VTEST", "/usr/share/doc/opencv-doc/examples/data/vtest.avi"))


def cut_clips(folder: Path, n: int, frames: int) -> list[Path]:
    cap = cv2.VideoCapture(str(VTEST))
    allf = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        allf.append(f)
    step = max(frames, (len(allf) - frames) // max(1, n - 1))
    out = []
    for i in range(n):
        a = min(i * step, len(allf) - frames)
        path = folder / f"cam{i}.avi"
        w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, allf[0].shape[1::-1])
        for f in allf[a : a + frames]:
            w.write(f)
        w.release()
        out.append(path)
    return out


def keys(uri: str) -> set[tuple]:
    with open_gallery(uri, create=False, read_only=True) as g:
        return {(Path(r.source).name, r.frame, r.box) for r in g.get(g.ids().tolist())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    load = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    clips = cut_clips(work, a.clips, a.frames)
    total = a.clips * a.frames
    rows, sets = [], {}
    with milvus_local.LoopbackMilvus(work / "milvus") as server:

        def uri(name: str) -> str:
            return f"milvus://{server.host}:{server.port}/{name}?media={work / 'media'}"

        plan = api.plan_ingest([str(c) for c in clips])
        t0 = time.perf_counter()
        model = api.load_model()
        summary = api.run_ingest(uri("plain"), plan, model)
        wall = time.perf_counter() - t0
        assert not summary.errors, summary.errors
        rows.append(("one process (`reidkit ingest`), 2 threads", wall, None, summary.sightings))
        sets["plain"] = keys(uri("plain"))
        print(rows[-1], flush=True)

        import ray
        from ray.cluster_utils import Cluster

        t0 = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        t_cluster = time.perf_counter() - t0
        try:
            for workers in (1, 2):
                first: list[float] = []
                t0 = time.perf_counter()

                def on_event(kind: str, info: dict, t0: float = t0, first: list = first) -> None:
                    if kind == "started" and not first:
                        first.append(time.perf_counter() - t0)

                name = f"ray{workers}"
                plan = api.plan_ingest([str(c) for c in clips])
                s = api.run_ingest_ray(uri(name), plan, address=cluster.address, workers=workers, on_event=on_event)
                wall = time.perf_counter() - t0
                assert not s.errors, s.errors
                rows.append((f"Ray, {workers} worker{'s' * (workers > 1)} (1 CPU each, {workers} node"
                             f"{'s' * (workers > 1)})", wall, first[0], s.sightings))  # fmt: skip
                sets[name] = keys(uri(name))
                print(rows[-1], flush=True)
        finally:
            ray.shutdown()
            cluster.shutdown()
    same = all(v == sets["plain"] for v in sets.values())
    md = [
        f"### Ingest on Ray vs one process ({a.clips} clips x {a.frames} frames of vtest.avi, 768x576, into Milvus)",
        "",
        f"`{command_line()}` ({machine()}; load average before: {load:.1f})",
        "",
        "| run | wall s | first source started after s | frames/s | sightings |",
        "|---|---:|---:|---:|---:|",
        *[f"| {r} | {w:.1f} | {'-' if f is None else f'{f:.1f}'} | {total / w:.1f} | {n:,} |" for r, w, f, n in rows],
        "",
        f"The two-node local cluster started in {t_cluster:.1f} s (not in the walls above). Every run stored the "
        f"same sightings (clip, frame, box): {same}.",
    ]
    print("\n".join(md))
    assert same
    if not a.no_write:
        write_section("ray_ingest", "\n".join(md))


if __name__ == "__main__":
    main()
