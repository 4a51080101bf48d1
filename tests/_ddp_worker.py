"""Helpers for the trainer tests: a tiny synthetic dataset, and a training script run in subprocesses.

``python tests/_ddp_worker.py REPORT_DIR CONFIG [--resume] [--kill-at EPOCH:BATCH] [OVERRIDES...]``
trains with :func:`reidkit.engine.train` (under torchrun: DDP) and writes, per rank,
``REPORT_DIR/rank<r>.json``: a hash of the final parameters and the identities the sampler gave
that rank each epoch. ``--kill-at E:B`` sends SIGKILL to itself after batch ``B`` (0-based) of
epoch ``E`` (1-based), i.e. in the middle of training, as a crash would.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

H, W = 32, 16


def make_tiny_dataset(root: Path, ids: int = 8, cams: int = 2, per_cam: int = 3, seed: int = 0) -> Path:
    """Market-style ``train/``, ``query/``, ``gallery/`` of 32x16 PNGs, one colour pattern per id.

    Train: ``ids`` x ``cams`` x ``per_cam`` images. Query: one image per id from camera 1; gallery:
    two per id from camera 2 (so every query has a cross-camera match).
    """
    rng = np.random.default_rng(seed)
    base = rng.integers(30, 226, size=(ids, 2, 3))  # top / bottom colours per id

    def image(pid: int) -> Image.Image:
        arr = np.empty((H, W, 3), dtype=np.float64)
        arr[: H // 2] = base[pid, 0]
        arr[H // 2 :] = base[pid, 1]
        arr += rng.normal(0, 12, size=arr.shape)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))

    for split in ("train", "query", "gallery"):
        (root / split).mkdir(parents=True, exist_ok=True)
    for pid in range(ids):
        for cam in range(1, cams + 1):
            for k in range(per_cam):
                image(pid).save(root / "train" / f"{pid + 1:04d}_c{cam}_{k:04d}.png")
        image(pid).save(root / "query" / f"{pid + 1:04d}_c1_9000.png")
        for k in range(2):
            image(pid).save(root / "gallery" / f"{pid + 1:04d}_c2_900{k}.png")
    return root


def tiny_config_yaml(data_root: Path, output_dir: Path, model: str = "osnet_x0_25") -> str:
    """A complete, fast experiment config for the tiny dataset (CPU, 1 thread, no workers)."""
    return f"""\
name: tiny
model: {{name: {model}, pretrained: false}}
data:
  dataset: folder
  root: {data_root}
  height: {H}
  width: {W}
  ids_per_batch: 4
  instances_per_id: 2
  workers: 0
  test_batch_size: 16
  transforms: {{pad: 2}}
solver:
  optimizer: sgd
  lr: 0.01
  max_epochs: 3
  warmup_epochs: 1
  milestones: [2]
loss:
  center: {{weight: 0.0005}}
engine:
  seed: 7
  output_dir: {output_dir}
  device: cpu
  threads: 1
  eval_every: 2
  log_every: 2
  progress: false
  tensorboard: false
"""


def params_hash(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in state-dict order."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(argv: list[str]) -> None:
    from reidkit.engine import trainer as trainer_mod

    ap = argparse.ArgumentParser()
    ap.add_argument("report_dir", type=Path)
    ap.add_argument("config")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--kill-at", default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)

    seen: dict[str, list[int]] = {}  # epoch -> identities the sampler gave this rank
    num_batches: dict[str, int] = {}
    box: dict[str, trainer_mod.Trainer] = {}

    def callback(event: str, t: trainer_mod.Trainer) -> None:
        box["t"] = t
        if event == "epoch_end":
            batches = t.sampler.batches(t.epoch)
            seen[str(t.epoch)] = sorted({t.dataset.train[i].pid for b in batches for i in b})
            num_batches[str(t.epoch)] = len(batches)
        if event == "iteration_end" and args.kill_at:
            epoch, batch = (int(v) for v in args.kill_at.split(":"))
            if t.epoch + 1 == epoch and t.batch_index == batch:
                os.kill(os.getpid(), signal.SIGKILL)

    final = trainer_mod.train(args.config, args.overrides, resume=args.resume, callbacks=[callback])
    t = box["t"]
    rank = t.dist.rank
    report = {
        "rank": rank,
        "world_size": t.dist.world_size,
        "hash": params_hash(t.model),
        "pids": seen,
        "batches": num_batches,
        "final": str(final),
    }
    args.report_dir.mkdir(parents=True, exist_ok=True)
    (args.report_dir / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
