"""Feature-extraction speed over Market-1501 query + gallery (19,281 images, junk removed):
reidkit's CPU backends vs torchreid 0.2.5's FeatureExtractor, same weights, same run.

torchreid runs on the first --peer-images images (default: all of them, as reidkit); its features are
compared with reidkit's on exactly those images (cosine), so "same features" is checked directly;
reidkit's backends run over all images and are evaluated (rank-1 / mAP).
A backend may carry the resize method: `onnx:cv2` (OpenCV, faster) vs `onnx` (= `onnx:pil`, torchreid's pixels).
Usage: .venv/bin/python bench/extract_speed.py [--peer-images N] [--backends torch onnx onnx:cv2 onnx-int8]
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
    ap.add_argument("--backends", nargs="+", default=["torch", "onnx", "onnx:cv2", "onnx-int8"])
    ap.add_argument("--peer-images", type=int, default=-1, help="-1: all images; 0: no peer")
    ap.add_argument(
        "--peer-untuned-images",
        type=int,
        default=4000,
        help="also time torchreid without the malloc settings on this many images (0: skip)",
    )
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
    for spec in args.backends:
        backend, _, resize = spec.partition(":")
        emb, _info = make_embedder(
            args.model,
            args.weights,
            backend,
            batch_size=args.batch_size,  # type: ignore[arg-type]
            threads=args.threads,
            onnx_path=OUT / f"{args.model}.onnx",
            calibration=calib,
            normalize=False,
            resize=resize or "pil",
        )
        emb.embed(paths[:64])  # warm-up
        t0 = time.perf_counter()
        f = emb.embed(paths)
        secs = time.perf_counter() - t0
        label = f"{backend} ({resize or 'pil'} resize)"
        feats[label] = f
        res = {
            m: evaluate(pairwise_distance(f[:nq], f[nq:], m), pids[:nq], pids[nq:], cams[:nq], cams[nq:])
            for m in ("euclidean", "cosine")
        }
        rows.append((label, len(paths), secs, res))
        print(f"{label}: {len(paths) / secs:.1f} img/s", {m: r.summary() for m, r in res.items()})

    peer_rate, pf, lst, peer_npy = None, None, OUT / "extract_images.txt", OUT / "peer_features.npy"
    untuned = None
    if args.peer_images < 0:
        args.peer_images = len(paths)
    if args.peer_images:
        lst.write_text("\n".join(paths[: args.peer_images]) + "\n")
        own = ["--reidkit-model", "--model", "osnet_x0_25"] if args.model is None else ["--model", args.model]
        peer = run_peer(
            "extract",
            "--images",
            str(lst),
            *own,
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
        peer_npy.unlink()
        if args.peer_untuned_images:
            lst.write_text("\n".join(paths[: args.peer_untuned_images]) + "\n")
            untuned = run_peer(
                "extract", "--images", str(lst), *own, "--weights", args.weights,
                "--batch-size", str(args.batch_size), "--output-npy", str(peer_npy), "--threads", str(args.threads),
                tuned_malloc=False,
            )  # fmt: skip
            peer_npy.unlink()
        lst.unlink()

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
        acc = "– | –"
        if pf is not None and len(pf) == len(paths):  # the peer's own accuracy, same evaluator
            r = {
                m: evaluate(pairwise_distance(pf[:nq], pf[nq:], m), pids[:nq], pids[nq:], cams[:nq], cams[nq:])
                for m in ("euclidean", "cosine")
            }
            acc = " | ".join(f"{100 * r[m].rank(1):.2f} / {100 * r[m].mAP:.2f}" for m in ("euclidean", "cosine"))
        table.append(f"| torchreid FeatureExtractor | {args.peer_images:,} | {peer_rate:.1f} | 1.0x | 1.00000 | {acc} |")
    if untuned:
        u = untuned["images_per_s"]
        table.append(
            f"| torchreid FeatureExtractor, default malloc (as installed) | {untuned['num_images']:,} | {u:.1f} | "
            f"{u / peer_rate:.2f}x | – | – | – |"
        )
    name = args.model or Path(args.weights).stem
    md = f"""## Feature extraction speed (issue 5): `{name}`
Market-1501 query + gallery without junk ({len(paths):,} images), 256x128, batch {args.batch_size},
{args.threads} threads, weights `{os.path.basename(args.weights)}`. reidkit backends: torch = channels-last +
inference_mode + decoding threads two batches ahead; onnx = ONNX Runtime fp32, one single-threaded run per core
side by side (each worker decodes and runs its own batch of 16); onnx-int8 = the same with ORT static QDQ INT8
calibrated on 256 training images. Resize: pil = PIL bilinear (reidkit's default; torchreid's exact pixels), cv2 =
OpenCV decode + bilinear resize (opt-in, faster). torchreid's `FeatureExtractor` (if listed) ran on the first {args.peer_images:,} images in the same run, with the
glibc malloc settings reidkit applies to itself (`reidkit.runtime`; "x torchreid" is against this row); the
"as installed" row is torchreid without them, as its users run it.
{machine()}; `MALLOC_MMAP_MAX_={os.environ.get("MALLOC_MMAP_MAX_", "unset")}`.

{chr(10).join(table)}

Command: `{command_line()}`
"""
    write_section(f"extract_speed_{name}", md)
    print(md)


if __name__ == "__main__":
    main()
