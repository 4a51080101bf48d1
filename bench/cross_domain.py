"""Cross-domain check (issue 5): a checkpoint trained on another dataset, evaluated on Market-1501,
by torchreid 0.2.5's own FeatureExtractor and by reidkit, same run, same weights, all 19,281 images.

If both give the same rank-1 / mAP, a gap to a published table comes from the checkpoint (or the
table's protocol), not from reidkit's loading, preprocessing or evaluation.
Usage: .venv/bin/python bench/cross_domain.py [--weights FILE] [--model osnet_x0_25]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from _common import ROOT, command_line, machine, run_peer, write_section

from reidkit.datasets import drop_junk, get_dataset
from reidkit.evaluation import evaluate, pairwise_distance
from reidkit.extract import make_embedder

OUT = ROOT / "bench" / "out"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="osnet_x0_25")
    ap.add_argument(
        "--weights",
        default=os.path.join(os.environ.get("REIDKIT_WEIGHTS", "weights"), "reid/osnet_x0_25_msmt17.pth"),
    )
    ap.add_argument("--published", default="59.9 / 31.0", help="the figure to set beside (rank-1 / mAP)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    ds = get_dataset("market1501")
    query, gallery = ds.query, drop_junk(ds.gallery)
    paths = [s.path for s in query] + [s.path for s in gallery]
    pids = np.array([s.pid for s in query] + [s.pid for s in gallery])
    cams = np.array([s.camid for s in query] + [s.camid for s in gallery])
    nq = len(query)

    lst, npy = OUT / "cross_domain_images.txt", OUT / "cross_domain_peer.npy"
    lst.write_text("\n".join(paths) + "\n")
    run_peer(
        "extract", "--images", str(lst), "--model", args.model, "--weights", args.weights, "--output-npy", str(npy)
    )
    feats = {"torchreid FeatureExtractor": np.load(npy)}
    lst.unlink()
    npy.unlink()
    emb, _ = make_embedder(args.model, args.weights, "torch", normalize=False)
    feats["reidkit (torch backend)"] = emb.embed(paths)

    ref = feats["torchreid FeatureExtractor"] / np.linalg.norm(
        feats["torchreid FeatureExtractor"], axis=1, keepdims=True
    )
    rows = [
        "| extractor | min cos vs torchreid | rank-1 / mAP (euclidean, raw) | rank-1 / mAP (cosine) |",
        "|---|---|---|---|",
    ]
    for name, f in feats.items():
        res = {
            m: evaluate(pairwise_distance(f[:nq], f[nq:], m), pids[:nq], pids[nq:], cams[:nq], cams[nq:])
            for m in ("euclidean", "cosine")
        }
        u = f / np.linalg.norm(f, axis=1, keepdims=True)
        e, c = res["euclidean"], res["cosine"]
        rows.append(
            f"| {name} | {float((u * ref).sum(1).min()):.5f} | {100 * e.rank(1):.2f} / {100 * e.mAP:.2f} | "
            f"{100 * c.rank(1):.2f} / {100 * c.mAP:.2f} |"
        )
        print(rows[-1])
    name = Path(args.weights).stem
    md = f"""## Cross-domain: `{name}` on Market-1501 (issue 5)
Market-1501 query + gallery without junk ({len(paths):,} images), 256x128, `{args.model}`, weights
`{os.path.basename(args.weights)}`, both extractors in the same run. Published figure for comparison: {args.published}.
{machine()}.

{chr(10).join(rows)}

Command: `{command_line()}`
"""
    write_section(f"cross_domain_{name}", md)
    print(md)


if __name__ == "__main__":
    main()
