"""Training throughput: reidkit's engine step vs torchreid 0.2.5's triplet engine, same backbone,
batch (P x K = 16 x 4) and input size, on random tensors (data loading excluded for both), same run.

reidkit runs its real ``Trainer._step`` (forward, CE + triplet, backward, Adam) built from a config;
"reidkit CPU recipe" adds what configs/market1501/cpu_mobilenetv2.yaml does (frozen stem + 3 blocks).
Usage: .venv/bin/python bench/train_speed.py [--models osnet_x0_25 mobilenet_v2] [--iters 10]
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import nullcontext

import torch
from _common import command_line, machine, run_peer, write_section

from reidkit.config import load_config
from reidkit.datasets.base import ReIDDataset, Sample
from reidkit.engine import Trainer

PEER_NAMES = {"osnet_x0_25": "osnet_x0_25", "mobilenet_v2": "mobilenetv2_x1_0", "resnet50": "resnet50"}
RECIPE_FREEZE = {"mobilenet_v2": [f"backbone.features.{i}" for i in range(4)]}


def bench_trainer(model: str, h: int, w: int, extra: list[str], classes: int = 751) -> Trainer:
    """reidkit's Trainer for ``model`` on a synthetic P x K dataset of ``classes`` ids (``extra``: more overrides)."""
    ds = ReIDDataset("synthetic", os.getcwd(), [Sample(f"{i}.jpg", i % classes, 0) for i in range(classes * 4)], [], [])
    overrides = [
        f"model.name={model}",
        "model.pretrained=false",
        f"data.height={h}",
        f"data.width={w}",
        "data.workers=0",
        "engine.progress=false",
        "engine.eval_every=0",
        "engine.output_dir=bench/out/train_speed",
        "loss.center.weight=0",
        *extra,
    ]
    return Trainer(load_config(None, overrides), dataset=ds)


def random_batches(classes: int, h: int, w: int, n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` seeded random batches of 64 images (16 ids x 4)."""
    gen = torch.Generator().manual_seed(0)
    return [
        (torch.randn(64, 3, h, w, generator=gen), torch.randperm(classes, generator=gen)[:16].repeat_interleave(4))
        for _ in range(n)
    ]


def step_rate(trainer: Trainer, batches: list[tuple[torch.Tensor, torch.Tensor]], iters: int, warmup: int) -> float:
    """Images/s of ``trainer``'s real training step over ``batches`` in turn."""
    model_ = trainer._prepare_model(1)
    for i in range(warmup):
        trainer._step(model_, *batches[i % len(batches)], nullcontext(), [])
    t0 = time.perf_counter()
    for i in range(iters):
        losses, _ = trainer._step(model_, *batches[i % len(batches)], nullcontext(), [])
        float(losses["total"])  # like the engine's logging, forces the step to finish
    return 64 * iters / (time.perf_counter() - t0)


def reidkit_rate(model: str, h: int, w: int, iters: int, warmup: int, freeze: list[str], channels_last: bool) -> float:
    """Images/s of reidkit's training step for ``model`` on random P x K batches."""
    extra = [f"engine.channels_last={str(channels_last).lower()}"]
    if freeze:
        extra += [f"freeze.modules=[{','.join(freeze)}]", "freeze.epochs=1"]
    return step_rate(bench_trainer(model, h, w, extra), random_batches(751, h, w), iters, warmup)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["osnet_x0_25", "mobilenet_v2"])
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows = [
        "| model | torchreid engine (img/s) | reidkit, NCHW | reidkit, channels-last | reidkit CPU recipe | best / torchreid |",
        "|---|---|---|---|---|---|",
    ]
    for model in args.models:
        peer = run_peer(
            "train_speed",
            "--model",
            PEER_NAMES[model],
            "--height",
            str(args.height),
            "--width",
            str(args.width),
            "--batch-size",
            "64",
            "--iters",
            str(args.iters),
            "--warmup",
            str(args.warmup),
            "--threads",
            str(args.threads),
        )
        peer_rate = peer["images_per_s"]
        nchw = reidkit_rate(model, args.height, args.width, args.iters, args.warmup, [], False)
        cl = reidkit_rate(model, args.height, args.width, args.iters, args.warmup, [], True)
        freeze = RECIPE_FREEZE.get(model)
        recipe = reidkit_rate(model, args.height, args.width, args.iters, args.warmup, freeze, True) if freeze else None
        best = max(cl, nchw, recipe or 0)
        rows.append(
            f"| {model} (torchreid: {PEER_NAMES[model]}) | {peer_rate:.1f} | {nchw:.1f} | {cl:.1f} | "
            f"{f'{recipe:.1f}' if recipe else '–'} | {best / peer_rate:.2f}x |"
        )
        print(rows[-1], flush=True)
    md = f"""## Training speed (issue 4)
Forward + CE(label smoothing) + batch-hard triplet + backward + Adam step, batch 64 (16 ids x 4), {args.height}x{args.width},
random tensors (no data loading), {args.iters} timed iterations after {args.warmup} warm-up, {args.threads} threads, same run.
torchreid: `ImageTripletEngine`'s losses and `build_optimizer(adam)` around `torchreid.models.build_model`. Note its
`mobilenetv2_x1_0` is torchreid's own MobileNetV2 variant (an extra 1x1 conv in the first block), not torchvision's.
{machine()}; `MALLOC_MMAP_MAX_={os.environ.get("MALLOC_MMAP_MAX_", "unset")}`.

{chr(10).join(rows)}

Command: `{command_line()}`
"""
    write_section("train_speed", md)
    print(md)


if __name__ == "__main__":
    main()
