"""The seed's methods at a fair budget (issue 23, part 2): every variant starts from the same trunk (the
shipped MobileNetV2 strong baseline) and gets the same extra compute on this host.

``probe``: the training-step rate (images/s: forward, losses, backward, Adam; random batches, no data
loading) of each variant's real recipe, measured back to back, and the epochs each variant gets for a
budget given in baseline epochs. ``table``: the figures of the finished runs (``reidkit eval --json``
files), written to BENCHMARKS.md with the rates and the runs' own wall-clock.

Usage:
  .venv/bin/python bench/fair_budget.py probe [--iters 12] [--budget-epochs 15]
  .venv/bin/python bench/fair_budget.py run NAME --epochs N [--root runs/fair]
  .venv/bin/python bench/fair_budget.py table --eval NAME=eval.json ... [--rates R.json --root DIR --section S]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from _common import command_line, machine, write_section

from reidkit.config import load_config
from reidkit.engine import Trainer

CFG = "configs/market1501"
# name -> (config, overrides): each variant's own recipe; the ablations change one thing of RRID's
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "baseline": (f"{CFG}/cpu_mobilenetv2.yaml", []),
    "rrid": (f"{CFG}/cpu_rrid_mobilenetv2.yaml", []),
    "rrid_no_relation": (f"{CFG}/cpu_rrid_mobilenetv2.yaml", ["model.kwargs.relation=false"]),
    "rrid_no_gcp": (f"{CFG}/cpu_rrid_mobilenetv2.yaml", ["model.kwargs.gcp=false"]),
    "rrid_single_6": (f"{CFG}/cpu_rrid_mobilenetv2.yaml", ["model.kwargs.parts=[6]"]),
    # the official code's deep supervision (reidkit.models.rrid, aux_ce), CE weight 6 for its T + 2 C balance
    "rrid_aux": (f"{CFG}/cpu_rrid_mobilenetv2.yaml", ["model.kwargs.aux_ce=true", "loss.ce.weight=6"]),
    "horeid": (f"{CFG}/cpu_horeid_mobilenetv2.yaml", []),
}
OUT = Path("bench/out/fair_budget_rates.json")
TRUNK = "src/reidkit/models/pretrained/mobilenet_v2_market1501_bot_cpu.pth"
# what every run shares, as the shipped HOReID recipe has it: the trunk of the shipped baseline, 50 training
# ids held out, 1 warm-up epoch then cosine, the stem and first 3 blocks frozen for the whole run
COMMON = [f"model.pretrained={TRUNK}", "data.holdout_ids=50", "solver.warmup_epochs=1", "engine.eval_every=0"]


def step_rate(name: str, iters: int, warmup: int) -> float:
    """Images/s of ``name``'s training step (its config, frozen blocks included) on random P x K batches."""
    path, extra = VARIANTS[name]
    overrides = [
        *extra,
        "model.pretrained=false",
        "data.workers=0",
        "data.holdout_ids=50",
        "engine.progress=false",
        "engine.eval_every=0",
        "engine.output_dir=bench/out/fair_budget",
    ]
    trainer = Trainer(load_config(path, overrides))  # Market-1501 (HOReID reads its keypoint cache)
    model = trainer._prepare_model(1)
    trainer.criterion.epoch = 99  # every loss on (HOReID's verification starts at epoch 2)
    ch = getattr(trainer.model, "in_channels", 3)
    h, w = trainer.cfg.data.height, trainer.cfg.data.width
    gen = torch.Generator().manual_seed(0)
    batches = [
        (torch.rand(64, ch, h, w, generator=gen), torch.randperm(701, generator=gen)[:16].repeat_interleave(4))
        for _ in range(2)
    ]
    for i in range(warmup):
        trainer._step(model, *batches[i % 2], nullcontext(), [])
    t0 = time.perf_counter()
    for i in range(iters):
        losses, _ = trainer._step(model, *batches[i % 2], nullcontext(), [])
        float(losses["total"].detach())
    return 64 * iters / (time.perf_counter() - t0)


def probe(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    rates: dict[str, list[float]] = {n: [] for n in args.variants}
    for _ in range(args.rounds):  # interleaved rounds: load drifts hit every variant alike
        for n in args.variants:
            rates[n].append(step_rate(n, args.iters, args.warmup))
            print(f"{n}: {rates[n][-1]:.1f} img/s", flush=True)
    med = {n: sorted(r)[len(r) // 2] for n, r in rates.items()}
    base = med["baseline"]
    plan = {n: {"img_per_s": med[n], "runs": rates[n], "epochs": args.budget_epochs * med[n] / base} for n in med}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"budget_epochs": args.budget_epochs, "machine": machine(), "plan": plan}, indent=1))
    for n, p in plan.items():
        print(f"{n:18s} {p['img_per_s']:6.1f} img/s  {p['epochs']:.2f} epochs for the budget", flush=True)


def train_command(name: str, epochs: int, root: str = "runs/fair") -> list[str]:
    """The ``reidkit train`` command line of variant ``name`` for ``epochs`` epochs, written to ``root/name``."""
    path, extra = VARIANTS[name]
    over = [*COMMON, *extra, f"solver.max_epochs={epochs}", f"freeze.epochs={epochs}"]
    return ["reidkit", "train", path, *over, "engine.progress=false", f"engine.output_dir={root}/{name}"]


def run(args: argparse.Namespace) -> None:
    cmd = train_command(args.name, args.epochs, args.root) + (["--resume"] if args.resume else [])
    print(" ".join(cmd), flush=True)
    os.execvp(str(Path(".venv/bin/reidkit")), [".venv/bin/reidkit", *cmd[1:]])


def _run_minutes(name: str, root: str = "runs/fair") -> tuple[int, float]:
    """(epochs, wall-clock minutes of the epochs) of ``ROOT/NAME`` from its metrics.jsonl."""
    rows = [json.loads(x) for x in Path(f"{root}/{name}/metrics.jsonl").read_text().splitlines() if x.strip()]
    ep = [r for r in rows if r.get("type") == "epoch"]
    return len(ep), sum(r["time"] for r in ep) / 60


def _card_figures(card: Path) -> tuple[dict[str, float], dict[str, float]]:
    """(plain, re-ranked) rank-1 / mAP / mINP from a model card's Market-1501 table."""
    rows = {}
    for line in card.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in ("without re-ranking", "k-reciprocal re-ranking"):
            rows[cells[0]] = {"rank1": float(cells[1]), "mAP": float(cells[4]), "mINP": float(cells[5])}
    return rows["without re-ranking"], rows["k-reciprocal re-ranking"]


def table(args: argparse.Namespace) -> None:
    rates = json.loads(Path(args.rates).read_text())["plan"]
    base = rates["baseline"]["img_per_s"]
    lines = [
        "| variant | epochs | step img/s (probe) | compute, baseline epochs | run minutes | rank-1 | mAP | mINP | re-ranked rank-1 / mAP / mINP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    root_opt = "" if args.root == "runs/fair" else f" --root {args.root}"
    for item in args.eval:
        name, path = item.split("=", 1)
        if path.endswith(".md"):  # a model card's Market-1501 table (the shipped HOReID's own evaluation)
            plain, rr = _card_figures(Path(path))
        else:
            ev = json.loads(Path(path).read_text())
            plain, rr = ev["results"]["cosine"], ev["results"].get("cosine + re-ranking")
        rrs = f"{rr['rank1']:.2f} / {rr['mAP']:.2f} / {rr['mINP']:.2f}" if rr else "–"
        figs = f"{plain['rank1']:.2f} | {plain['mAP']:.2f} | {plain['mINP']:.2f} | {rrs}"
        if name not in rates:  # the starting point: the shipped baseline, no extra compute
            lines.append(f"| {name} | 0 | – | 0 | 0 | {figs} |")
            continue
        rate = rates[name]["img_per_s"]
        try:
            epochs, minutes = _run_minutes(name, args.root)
            mins = f"{minutes:.0f}"
        except FileNotFoundError:  # the shipped HOReID: its own run (another host), its recipe's 5 epochs
            epochs, mins = args.horeid_epochs, "–"
        lines.append(f"| {name} | {epochs} | {rate:.1f} | {epochs * base / rate:.1f} | {mins} | {figs} |")
    md = f"""## The seed's methods at a fair budget{args.title} (issue 23, part 2)
Every variant starts from the trunk of the shipped MobileNetV2 strong baseline
(`{TRUNK}`) and trains with its own head and losses under one recipe: 50 training ids held out, Adam 3.5e-4, 1 warm-up
epoch then cosine, stem and first 3 blocks frozen (the shipped HOReID's recipe). Compute is equal in training-step
cost measured on this host: `bench/fair_budget.py probe` times each variant's real step (forward, losses, backward,
Adam; 64 images) back to back, interleaved, and "compute" is epochs x (baseline rate / variant rate). Run minutes
include data loading and were taken on a machine also used for editing. Market-1501 test, `reidkit eval --rerank`.
{machine()}.

{chr(10).join(lines)}

Commands: `{command_line()}`; each run: `.venv/bin/python bench/fair_budget.py run NAME --epochs N{root_opt}`
(`reidkit train` with the overrides the script prints), then `reidkit eval --weights {args.root}/NAME/model_final.pth --rerank --json`.
"""
    write_section(args.section, md)
    print(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--iters", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--budget-epochs", type=float, default=15.0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", default=str(OUT), help="where the rates are written")
    r = sub.add_parser("run")
    r.add_argument("name", choices=list(VARIANTS))
    r.add_argument("--epochs", type=int, required=True)
    r.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    r.add_argument("--root", default="runs/fair", help="the run is written to ROOT/NAME")
    t = sub.add_parser("table")
    t.add_argument("--eval", nargs="+", required=True, help="NAME=eval.json (reidkit eval --json) or NAME=CARD.md")
    t.add_argument("--horeid-epochs", type=int, default=5)
    t.add_argument("--rates", default=str(OUT), help="the probe's rates (probe --out)")
    t.add_argument("--root", default="runs/fair", help="the runs' folder (run --root)")
    t.add_argument("--section", default="fair_budget", help="BENCHMARKS.md section to write")
    t.add_argument("--title", default="", help="added to the section's title")
    args = ap.parse_args()
    {"probe": probe, "run": run, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
