"""Denormal floats late in training: the training step (and inference) with ``engine.flush_denormal`` on and
off, and torchreid 0.2.5's triplet-engine step from the same weights, as torchreid runs it (no flush) and with
``torch.set_flush_denormal(True)``, same run.

Weight decay drives some weights below float32's smallest normal (1.2e-38) late in a run; on x86 every
multiply with such a number takes a slow microcode path unless FTZ/DAZ is set. The weights come from a
reidkit training checkpoint (``--checkpoint runs/.../checkpoints/epoch_030.pt``, an OSNet x0.25 with the
torchreid head) or, without one, from torchreid's MSMT17 OSNet x0.25 with its smallest ``--fraction`` of
conv weights set to +-1e-39 (the fraction the epoch-30 checkpoint of the 250-held-out run had: 0.61 %).
Each variant runs in its own process (the mode is per thread and inherited when the threads start).
Usage: .venv/bin/python bench/train_denormal.py [--checkpoint PATH] [--iters 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from _common import ROOT, command_line, machine, run_peer, write_section
from train_speed import bench_trainer, random_batches, step_rate

from reidkit.engine.checkpoint import load_checkpoint

TINY = 1.1754944e-38  # float32's smallest normal number


def count_denormal(state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(denormal values, all values) over the floating-point tensors of ``state``."""
    fl = [v for v in state.values() if v.is_floating_point()]
    return sum(int(((v != 0) & (v.abs() < TINY)).sum()) for v in fl), sum(v.numel() for v in fl)


def load_weights(checkpoint: str | None, fraction: float) -> dict[str, torch.Tensor]:
    """The model state dict (torchreid OSNet keys) from a reidkit checkpoint, or the synthetic one."""
    if checkpoint:
        ck = load_checkpoint(checkpoint)
        return {k: v.float() if v.is_floating_point() else v for k, v in ck["model"].items()}
    src = (
        Path(os.environ.get("REIDKIT_WEIGHTS", ROOT.parent / "shared" / "weights")) / "reid" / "osnet_x0_25_msmt17.pth"
    )
    state = torch.load(src, map_location="cpu", weights_only=True)
    state = {
        k.removeprefix("module."): v for k, v in state.items() if not k.startswith(("classifier", "module.classifier"))
    }
    convs = [k for k, v in state.items() if k.endswith("weight") and v.dim() == 4]
    flat = torch.cat([state[k].abs().flatten() for k in convs])
    cut = flat.kthvalue(max(1, int(fraction * flat.numel()))).values
    for k in convs:
        w = state[k]
        state[k] = torch.where(w.abs() <= cut, torch.sign(w) * 1e-39, w)
    return state


def reidkit_rates(weights: Path, flush: bool, iters: int, warmup: int, classes: int) -> dict[str, float]:
    """reidkit's training step and eval forward from ``weights`` (run in a fresh process)."""
    trainer = bench_trainer(
        "osnet_x0_25", 256, 128, ["model.head=torchreid", "engine.channels_last=true",
                                  f"engine.flush_denormal={str(flush).lower()}"], classes,
    )  # fmt: skip
    state = load_checkpoint(weights)
    _, unexpected = trainer.model.load_state_dict(state, strict=False)
    if unexpected:
        raise SystemExit(f"{weights}: keys reidkit's osnet_x0_25 does not have: {unexpected[:3]}")
    batches = random_batches(classes, 256, 128)
    model = trainer._prepare_model(1).eval()
    with torch.no_grad():  # inference first, on the weights as loaded
        x = batches[0][0].contiguous(memory_format=torch.channels_last)
        model(x)
        t0 = time.perf_counter()
        for _ in range(iters):
            model(x)
        infer = 64 * iters / (time.perf_counter() - t0)
    return {"train": step_rate(trainer, batches, iters, warmup), "infer": infer}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", default=None, help="a reidkit training checkpoint of OSNet x0.25 (torchreid head)")
    ap.add_argument("--fraction", type=float, default=0.0061, help="without --checkpoint: conv weights made denormal")
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--_child", nargs=3, metavar=("WEIGHTS", "FLUSH", "CLASSES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args._child:
        weights, flush, classes = Path(args._child[0]), args._child[1] == "1", int(args._child[2])
        print(json.dumps(reidkit_rates(weights, flush, args.iters, args.warmup, classes)))
        return

    state = load_weights(args.checkpoint, args.fraction)
    den, total = count_denormal(state)
    out = ROOT / "bench" / "out" / "train_denormal"
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "weights.pt"
    torch.save(state, weights)
    classes = state["classifier.weight"].shape[0] if "classifier.weight" in state else 751
    source = (
        args.checkpoint
        or f"torchreid's MSMT17 OSNet x0.25, smallest {100 * args.fraction:.2f} % of conv weights set to +-1e-39"
    )
    print(f"{source}: {den:,} of {total:,} values denormal", flush=True)

    rows = ["| step | flush off (img/s) | flush on (img/s) | on / off |", "|---|---|---|---|"]
    res = {}
    timing = ["--iters", str(args.iters), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    for flush in (False, True):
        child = [sys.executable, __file__, *timing, "--_child", str(weights), "1" if flush else "0", str(classes)]
        proc = subprocess.run(child, capture_output=True, text=True, check=True)
        res[flush] = json.loads(proc.stdout.strip().splitlines()[-1])
        peer = ["--model", "osnet_x0_25", "--num-classes", str(classes), "--weights", str(weights), *timing]
        res[("peer", flush)] = run_peer("train_speed", *peer, *(["--flush-denormal"] if flush else []))["images_per_s"]
        print(flush, res[flush], res[("peer", flush)], flush=True)
    for name, off, on in [
        ("torchreid triplet engine (train)", res[("peer", False)], res[("peer", True)]),
        ("reidkit `Trainer._step` (train)", res[False]["train"], res[True]["train"]),
        ("reidkit eval forward (inference)", res[False]["infer"], res[True]["infer"]),
    ]:
        rows.append(f"| {name} | {off:.1f} | {on:.1f} | {on / off:.2f}x |")
    md = f"""## Denormal weights late in training (issue 23)
OSNet x0.25 (torchreid head, {classes} classes), batch 64 (16 ids x 4), 256x128 random tensors, {args.iters} timed
iterations after {args.warmup} warm-up, {args.threads} threads; each cell its own process, same run. Weights: {source}
({den:,} of {total:,} values below 1.2e-38). reidkit's default is `engine.flush_denormal: true`
(`torch.set_flush_denormal(True)` before the first parallel op); torchreid never sets it. {machine()}.

{chr(10).join(rows)}

Command: `{command_line()}`
"""
    write_section("train_denormal", md)
    print(md)


if __name__ == "__main__":
    main()
