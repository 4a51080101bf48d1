"""HOReID vs the strong baseline on occluded and plain Market-1501 queries, with the ablation and latency.

    .venv/bin/python bench/horeid_occluded.py --occluded runs/occ_seed0 --occluded runs/occ_seed1 \
        --occluded runs/occ_rect [--weights FILE] [--baseline NAME=FILE ...] [--holdout 50] [--k 8] [--no-write]

``--occluded`` folders come from ``reidkit datasets make-occluded market1501 --out DIR`` (add
``--style synthetic`` for a construction of another kind: solid, noise and blurred rectangles)
(each a CSV dataset: occluded copies of Market's 3,368 queries, Market's own gallery). One run embeds Market's
gallery, its plain queries and every occluded query set once per model (torch, same threads), then:

* the baselines, cosine: by default HOReID's trunk start (the shipped MobileNetV2 strong baseline);
  ``--baseline NAME=FILE`` (repeatable) names others, e.g. that trunk trained on for HOReID's compute
  (``bench/fair_budget.py run baseline``);
* HOReID stage 1 from the semantic nodes only (**S**), from the relation nodes (**S+R**, what the
  model's embedding is), and S+R re-scored by the verifier on each query's top ``k`` (**S+R+T**),
  with ``+prob`` and ``-prob`` (the official code's ``1 - prob``). One trained model, three read-outs:
  not three separately trained models.
* the stage-2 sign on ``--holdout`` training identities the model never saw (its config's
  ``data.holdout_ids``; per identity and camera one query, the rest gallery);
* query latency: one query image end to end (decode, keypoints for HOReID, embedding, ranking the
  gallery, stage 2), median of ``--latency`` queries (``--latency 0``: no timings, e.g. beside a training run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _common import command_line, machine, write_section
from torch import nn


class _ReadOuts(nn.Module):
    """A HOReID model's S and S+R stage-1 embeddings side by side (one forward pass)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from reidkit.models.horeid import stage1_embedding

        net = self.net
        v, conf = net.graph(x)
        s = stage1_embedding(net._bn(net.bn, v), conf)
        sr = stage1_embedding(net._bn(net.relation_bn, net.relation(v)), conf)
        return torch.cat([s, sr], 1)


def _halves(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = f.shape[1] // 2
    a, b = f[:, :d], f[:, d:]
    return (a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True))


def _fig(res) -> dict[str, float]:
    s = res.summary()
    return {"rank1": s["rank1"], "mAP": s["mAP"], "mINP": s["mINP"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, default=None, help="HOReID model (default: the shipped one).")
    ap.add_argument("--occluded", type=Path, action="append", default=[], help="make-occluded output folder.")
    ap.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="A baseline model to compare (repeatable; default: the shipped MobileNetV2 strong baseline).",
    )
    ap.add_argument("--holdout", type=int, default=50)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--latency", type=int, default=30)
    ap.add_argument("--save", type=Path, default=None, help="Also save HOReID's (S+R) features per query set here.")
    ap.add_argument("--limit", type=int, default=0, help="Smoke test: first N gallery / query images only.")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    from reidkit.datasets import get_dataset
    from reidkit.datasets.base import holdout_query_gallery, holdout_split
    from reidkit.embed import Embedder
    from reidkit.evaluation import evaluate, pairwise_distance
    from reidkit.evaluation.verify import model_verifier, rescore_top_k
    from reidkit.models.horeid import K
    from reidkit.models.zoo import load_model
    from reidkit.pose.source import KeypointSource

    shipped = Path(__file__).resolve().parents[1] / "src/reidkit/models/pretrained"
    weights = args.weights or shipped / "mobilenet_v2_horeid_market1501_cpu.pth"
    named = [b.split("=", 1) for b in args.baseline] or [
        ["baseline", str(shipped / "mobilenet_v2_market1501_bot_cpu.pth")]
    ]
    if any(len(b) != 2 for b in named):
        raise SystemExit(f"--baseline takes NAME=FILE, got {args.baseline}")
    market = get_dataset("market1501")
    gallery = market.gallery
    queries = {"plain": market.query}
    for d in args.occluded:
        occ = get_dataset("folder", d)
        if sorted(Path(s.path).resolve() for s in occ.gallery) != sorted(Path(s.path).resolve() for s in gallery):
            raise SystemExit(f"{d}: its gallery is not Market-1501's")
        queries[d.name] = occ.query
    if args.limit:
        queries = {k: v[: args.limit] for k, v in queries.items()}
        wanted = {s.pid for s in market.query[: args.limit]}
        gallery = [s for s in gallery if s.pid in wanted] + gallery[: args.limit]
    held_q, held_g = holdout_query_gallery(holdout_split(market.train, args.holdout)[1]) if args.holdout else ([], [])

    net, info = load_model(None, weights)
    hor = Embedder.from_model(_ReadOuts(net), height=info.height, width=info.width, keypoints=KeypointSource())
    bsls = {}
    for bname, bfile in named:
        base, binfo = load_model(None, bfile)
        bsls[bname] = Embedder.from_model(base, height=binfo.height, width=binfo.width)
    first = next(iter(bsls))
    bsl = bsls[first]
    verify = model_verifier(net, K)

    def paths(samples):
        return [s.path for s in samples]

    def ids(samples):
        return np.array([s.pid for s in samples]), np.array([s.camid for s in samples])

    speed = {}
    t0 = time.perf_counter()
    g_s, g_sr = _halves(hor.embed(paths(gallery), progress=True))
    speed["horeid"] = len(gallery) / (time.perf_counter() - t0)
    g_bs = {}
    for bname, emb in bsls.items():
        t0 = time.perf_counter()
        g_bs[bname] = emb.embed(paths(gallery), progress=True)
        speed.setdefault("baseline", len(gallery) / (time.perf_counter() - t0))
    g_b = g_bs[first]
    gp, gc = ids(gallery)

    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, qs in queries.items():
        qp, qc = ids(qs)
        q_s, q_sr = _halves(hor.embed(paths(qs), progress=True))
        row = {
            bname: _fig(evaluate(pairwise_distance(emb.embed(paths(qs)), g_bs[bname]), qp, gp, qc, gc))
            for bname, emb in bsls.items()
        }
        row["S"] = _fig(evaluate(pairwise_distance(q_s, g_s), qp, gp, qc, gc))
        dist = pairwise_distance(q_sr, g_sr)
        row["S+R"] = _fig(evaluate(dist, qp, gp, qc, gc))
        c = q_sr.shape[1] // K  # the last node is the global one (confidence 1): what the 13 body nodes add
        row["S+R global node only"] = _fig(evaluate(pairwise_distance(q_sr[:, -c:], g_sr[:, -c:]), qp, gp, qc, gc))
        for sign, label in ((1.0, "S+R+T (+prob)"), (-1.0, "S+R+T (-prob)")):
            d2 = rescore_top_k(dist, q_sr, g_sr, verify, k=args.k, sign=sign)
            row[label] = _fig(evaluate(d2, qp, gp, qc, gc))
        results[name] = row
        if args.save:
            from reidkit.io import FeatureSet, save_features

            args.save.mkdir(parents=True, exist_ok=True)
            save_features(args.save / f"horeid_{name}.npz", FeatureSet(q_sr, g_sr, qp, gp, qc, gc))
        print(name, {k: f"{v['rank1']:.2f}/{v['mAP']:.2f}/{v['mINP']:.2f}" for k, v in row.items()}, flush=True)

    held: dict[str, dict[str, float]] = {}
    if held_q:
        fq, fg = (_halves(hor.embed(paths(x)))[1] for x in (held_q, held_g))
        qp, qc = ids(held_q)
        hp, hc = ids(held_g)
        dist = pairwise_distance(fq, fg)
        held["S+R"] = _fig(evaluate(dist, qp, hp, qc, hc))
        for sign, label in ((1.0, "S+R+T (+prob)"), (-1.0, "S+R+T (-prob)")):
            held[label] = _fig(evaluate(rescore_top_k(dist, fq, fg, verify, k=args.k, sign=sign), qp, hp, qc, hc))
        print("held-out", held, flush=True)

    # latency: one query end to end, keypoints computed (no cache) for HOReID
    one = Embedder.from_model(net, height=info.height, width=info.width, keypoints=KeypointSource(cache=False))
    probe = paths(queries[list(queries)[-1]])[:: max(1, len(market.query) // max(1, args.latency))][: args.latency]
    lat: dict[str, list[float]] = {"baseline": [], "horeid stage 1": [], "horeid stage 1 + 2": []}
    g_sr32 = np.ascontiguousarray(g_sr, np.float32)
    for p in probe:
        t0 = time.perf_counter()
        f = bsl.embed([p])
        np.argsort(1.0 - g_b @ f[0])
        lat["baseline"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        f = one.embed([p])
        d = 1.0 - g_sr32 @ f[0]
        np.argsort(d)
        t1 = time.perf_counter()
        rescore_top_k(d[None], f, g_sr32, verify, k=args.k, sign=1.0)
        t2 = time.perf_counter()
        lat["horeid stage 1"].append(t1 - t0)
        lat["horeid stage 1 + 2"].append(t2 - t0)
    ms = {k: 1000 * statistics.median(v) for k, v in lat.items() if v}
    print("latency ms", ms, "extraction img/s", speed, flush=True)
    timing = (
        f"""Query latency, one image end to end (decode, MoveNet keypoints for HOReID, embedding, ranking
{len(gallery):,} gallery entries; median of {len(probe)}): baseline ({first}) {ms["baseline"]:.0f} ms, HOReID stage 1
{ms["horeid stage 1"]:.0f} ms, stage 1 + 2 {ms["horeid stage 1 + 2"]:.0f} ms. Batch extraction: baseline
{speed["baseline"]:.0f} img/s, HOReID {speed["horeid"]:.0f} img/s (keypoints from the cache). """
        if ms
        else "Latency and speed: not measured in this run (`--latency 0`). "
    )
    load = os.getloadavg()[0]
    if args.no_write or args.limit:
        return

    def line(label: str, r: dict[str, float]) -> str:
        return f"| {label} | {r['rank1']:.2f} | {r['mAP']:.2f} | {r['mINP']:.2f} |"

    blocks = []
    for name, row in results.items():
        blocks.append(
            f"**{name}** ({len(queries[name]):,} queries x {len(gallery):,} gallery)\n\n"
            "| model | rank-1 | mAP | mINP |\n|---|---:|---:|---:|\n" + "\n".join(line(k, v) for k, v in row.items())
        )
    held_md = (
        "| stage | rank-1 | mAP | mINP |\n|---|---:|---:|---:|\n" + "\n".join(line(k, v) for k, v in held.items())
        if held
        else "(not run)"
    )
    write_section(
        "horeid",
        f"""## HOReID vs the strong baseline, occluded and plain Market-1501 (issue 11)

`{command_line()}` ({machine()}; load average {load:.2f} at the end). HOReID: `{weights.name}`; baselines
(same MobileNetV2 trunk and 256x128 input): {", ".join(f"{n} `{Path(f).name}`" for n, f in named)}. All in torch on
this machine's 2 cores. S / S+R / S+R+T are read-outs of the one trained HOReID model (semantic nodes, relation
nodes, relation nodes re-scored by the verifier on the top {args.k}), not separately trained models.

{chr(10).join(b + chr(10) for b in blocks)}
Stage-2 sign on {args.holdout} training identities held out of HOReID's training
({len(held_q)} queries x {len(held_g)} gallery):

{held_md}

{timing}HOReID's embedding is
{g_sr.shape[1]:,}-d ({g_sr.shape[1] // 1280}x the baseline's 1,280).
""",
    )


if __name__ == "__main__":
    main()
