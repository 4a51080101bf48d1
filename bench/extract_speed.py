"""Feature-extraction speed over Market-1501 query + gallery (19,281 images, junk removed):
reidkit's CPU backends vs torchreid 0.2.5's FeatureExtractor, same weights, same run.

torchreid runs on the first --peer-images images (at ~26 img/s the full set takes ~12 min); its
features are compared with reidkit's on exactly those images (cosine), so "same features" is checked
directly; reidkit's backends run over all images and are evaluated (rank-1 / mAP).
Usage: .venv/bin/python bench/extract_speed.py [--peer-images 2000] [--backends torch onnx onnx-int8]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from _common import ROOT, command_line, machine, run_peer, write_section

from reidkit.datasets import drop_junk, get_dataset
from reidkit.evaluation import evaluate, pairwise_distance
from reidkit.extract import make_embedder

OUT = ROOT / "bench" / "out"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="osnet_x0_25", help="architecture name; 'none' for a reidkit model file")
    ap.add_argument(
        "--weights",
        default=os.path.join(os.environ.get("REIDKIT_WEIGHTS", "weights"), "reid/osnet_x0_25_market1501.pth"),
    )
    ap.add_argument("--backends", nargs="+", default=["torch", "onnx", "onnx-int8"])
    ap.add_argument("--peer-images", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    if args.model == "none":
        args.model = None
    OUT.mkdir(parents=True, exist_ok=True)

    ds = get_dataset("market1501")
    query, gallery = ds.query, drop_junk(ds.gallery)
    paths = [s.path for s in query] + [s.path for s in gallery]
    pids = np.array([s.pid for s in query] + [s.pid for s in gallery])
    cams = np.array([s.camid for s in query] + [s.camid for s in gallery])
    nq = len(query)
    calib = [s.path for s in ds.train[:: len(ds.train) // 256]][:256]

    rows, feats = [], {}
    for backend in args.backends:
        emb, _info = make_embedder(
            args.model,
            args.weights,
            backend,
            batch_size=args.batch_size,  # type: ignore[arg-type]
            threads=args.threads,
            onnx_path=OUT / f"{args.model}.onnx",
            calibration=calib,
            normalize=False,
        )
        emb.embed(paths[:64])  # warm-up
        t0 = time.perf_counter()
        f = emb.embed(paths)
        secs = time.perf_counter() - t0
        feats[backend] = f
        res = {
            m: evaluate(pairwise_distance(f[:nq], f[nq:], m), pids[:nq], pids[nq:], cams[:nq], cams[nq:])
            for m in ("euclidean", "cosine")
        }
        rows.append((backend, len(paths), secs, res))
        print(f"{backend}: {len(paths) / secs:.1f} img/s", {m: r.summary() for m, r in res.items()})

    peer_rate, pf, lst, peer_npy = None, None, OUT / "extract_images.txt", OUT / "peer_features.npy"
    if args.peer_images:
        lst.write_text("\n".join(paths[: args.peer_images]) + "\n")
        peer = run_peer(
            "extract",
            "--images",
            str(lst),
            "--model",
            args.model,
            "--weights",
            args.weights,
            "--batch-size",
            str(args.batch_size),
            "--output-npy",
            str(peer_npy),
            "--threads",
            str(args.threads),
        )
        pf = np.load(peer_npy)
        peer_rate = peer["images_per_s"]
        lst.unlink()
        peer_npy.unlink()

    def cos(a: np.ndarray, b: np.ndarray | None) -> str:
        if b is None:
            return "–"
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return f"{float((a * b).sum(1).min()):.5f}"

    table = [
        "| path | images | img/s | x torchreid | min cos vs torchreid | rank-1 / mAP (euclidean, raw) | rank-1 / mAP (cosine) |",
        "|---|---|---|---|---|---|---|",
    ]
    for backend, n, secs, res in rows:
        e, c = res["euclidean"], res["cosine"]
        ratio = f"{n / secs / peer_rate:.1f}x" if peer_rate else "–"
        table.append(
            f"| reidkit {backend} | {n:,} | {n / secs:.1f} | {ratio} | "
            f"{cos(feats[backend][: args.peer_images], pf)} | {100 * e.rank(1):.2f} / {100 * e.mAP:.2f} | "
            f"{100 * c.rank(1):.2f} / {100 * c.mAP:.2f} |"
        )
    if peer_rate:
        table.append(f"| torchreid FeatureExtractor | {args.peer_images:,} | {peer_rate:.1f} | 1.0x | – | – | – |")
    name = args.model or Path(args.weights).stem
    md = f"""## Feature extraction speed (issue 5): `{name}`
Market-1501 query + gallery without junk ({len(paths):,} images), 256x128, batch {args.batch_size},
{args.threads} threads, weights `{os.path.basename(args.weights)}`. reidkit backends: torch = channels-last +
inference_mode + threaded decoding; onnx = ONNX Runtime fp32; onnx-int8 = ORT static QDQ INT8 calibrated on
256 training images. torchreid's `FeatureExtractor` (if listed) ran on the first {args.peer_images:,} images in the same run.
{machine()}; `MALLOC_MMAP_MAX_={os.environ.get("MALLOC_MMAP_MAX_", "unset")}`.

{chr(10).join(table)}

Command: `{command_line()}`
"""
    write_section(f"extract_speed_{name}", md)
    print(md)


if __name__ == "__main__":
    main()
