"""Shared plumbing for the benchmarks: the peer venv, sections of BENCHMARKS.md, test problems."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PEER_PY = ROOT / ".venv-peer" / "bin" / "python"
RUNNER = ROOT / "bench" / "peers" / "torchreid_runner.py"
BENCHMARKS = ROOT / "BENCHMARKS.md"


def machine() -> str:
    """A one-line description of where a figure was measured."""
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )


def run_peer(task: str, *args: str, timeout: int = 3600, tuned_malloc: bool = True) -> dict:
    """Run one torchreid task in the peer venv and return its JSON report.

    ``tuned_malloc=False`` runs it as a user would have it, without the malloc settings (and drops
    any ``MALLOC_*`` variables inherited from ``make``)."""
    if not PEER_PY.exists():
        raise SystemExit(f"peer venv missing: run `bash bench/peer_setup.sh` first ({PEER_PY})")
    out = ROOT / "bench" / "out" / f"peer_{task}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(PEER_PY), str(RUNNER), task, "--output", str(out), *args]
    # The peer gets the glibc malloc settings reidkit applies to itself (reidkit.runtime), so a ratio
    # never credits reidkit with a process setting the peer could have had.
    env = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1), **os.environ}
    if not tuned_malloc:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"peer task {task} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(out.read_text())


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md, delimited by HTML comments."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text)


def command_line() -> str:
    """The command that produced a figure, as a user would type it."""
    return " ".join([".venv/bin/python", Path(sys.argv[0]).resolve().relative_to(ROOT).as_posix(), *sys.argv[1:]])


def market_problem(features: str | None, dim: int = 512, seed: int = 0):
    """Market-1501 query/gallery ids and cameras (junk removed, as torchreid's loader does), with the
    features from a saved features file, or synthetic clustered features of width ``dim``."""
    from reidkit.io import load_features

    if features:
        fs = load_features(features)
        keep = fs.g_pids != -1
        return fs.qf, fs.gf[keep], fs.q_pids, fs.g_pids[keep], fs.q_camids, fs.g_camids[keep], "real"
    from reidkit.datasets import drop_junk, get_dataset

    ds = get_dataset("market1501")
    gallery = drop_junk(ds.gallery)
    q_pids = np.array([s.pid for s in ds.query])
    g_pids = np.array([s.pid for s in gallery])
    q_cams = np.array([s.camid for s in ds.query])
    g_cams = np.array([s.camid for s in gallery])
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((1502, dim)).astype(np.float32)
    # Distractors (pid 0) each get their own centre so they are not one big identity.
    g_keys = np.where(g_pids == 0, 1502 - 1 - (np.arange(len(g_pids)) % 700), g_pids)
    qf = centers[q_pids] + 1.1 * rng.standard_normal((len(q_pids), dim)).astype(np.float32)
    gf = centers[g_keys] + 1.1 * rng.standard_normal((len(g_pids), dim)).astype(np.float32)
    return qf, gf, q_pids, g_pids, q_cams, g_cams, "synthetic"
