"""INT8 on this CPU (issue 23, part 3): reidkit's four CPU engines for one exported re-id model, same run.

Engines (reidkit backends, as `reidkit extract/ingest/search --backend` runs them): ONNX Runtime fp32 (`onnx`,
the reference), OpenVINO fp32 (`openvino`), OpenVINO INT8 (`openvino-int8`: the QDQ file shipped beside the
weights, or quantised here on 256 training images) and ONNX Runtime on that same QDQ file (`onnx-int8`).

- model speed: each engine's Embedder over the same pre-resized 256x128 images (decoding out of the way, the
  Embedder's own scheduling: one single-threaded stream per core), 7 interleaved rounds, median;
- end-to-end speed: the Embedder over Market-1501 query + gallery files (decode, PIL resize, model);
- accuracy: rank-1 / mAP / mINP of those features (cosine), and each engine's loss against ONNX Runtime fp32.

Usage: .venv/bin/python bench/int8_backends.py [--weights MODEL.pth] [--images 2048] [--no-market]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from _common import command_line, machine, write_section

from reidkit.datasets import drop_junk, get_dataset
from reidkit.evaluation import evaluate, pairwise_distance
from reidkit.extract import make_embedder
from reidkit.models.zoo import default_model_path

ENGINES = {
    "onnx": "ONNX Runtime fp32",
    "openvino": "OpenVINO, its own float precision (bf16 on a CPU that has it)",
    "openvino-int8": "OpenVINO INT8 (QDQ file)",
    "onnx-int8": "ONNX Runtime INT8 (same QDQ file)",
    "nncf-performance": "OpenVINO INT8, NNCF post-training, preset PERFORMANCE (`--nncf`; bench only)",
    "nncf-mixed": "OpenVINO INT8, NNCF post-training, preset MIXED (`--nncf`; bench only)",
}
RUNTIMES = [e for e in ENGINES if not e.startswith("nncf")]  # reidkit's --backend choices (NNCF: --nncf)


def nncf_engines(embs: dict, calib: list[str], threads: int) -> dict:
    """OpenVINO engines for NNCF's INT8 versions of the fp32 ONNX file (``pip install nncf``), 300 images."""
    import nncf
    import openvino as ov

    from reidkit.embed import Embedder, OpenVinoBackend

    ref = next(e for e in embs.values() if str(getattr(e.backend, "path", "")).endswith(".onnx"))
    onnx_path, pp = ref.backend.path, ref.preprocess
    if ".int8" in onnx_path.name:
        raise SystemExit("--nncf needs a float ONNX engine among --engines (onnx or openvino)")
    out = {}
    for name, preset in [
        ("nncf-performance", nncf.QuantizationPreset.PERFORMANCE),
        ("nncf-mixed", nncf.QuantizationPreset.MIXED),
    ]:
        t0 = time.perf_counter()
        data = nncf.Dataset(calib, lambda p: pp.normalize_batch(np.stack([pp.resize(p)]), False).numpy())
        q = nncf.quantize(ov.Core().read_model(str(onnx_path)), data, subset_size=len(calib), preset=preset)
        xml = Path("bench/out") / f"{name}.xml"
        xml.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(q, str(xml))
        print(f"{name}: quantised in {time.perf_counter() - t0:.0f} s -> {xml}", flush=True)
        out[name] = Embedder(OpenVinoBackend(xml, threads=threads), pp.size[0], pp.size[1], batch_size=64)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=str(default_model_path()))
    ap.add_argument("--engines", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    ap.add_argument("--images", type=int, default=2048, help="pre-resized images per model-speed round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--no-market", action="store_true", help="model speed only")
    ap.add_argument("--section", default="int8_backends", help="BENCHMARKS.md section to write ('' for none)")
    ap.add_argument("--nncf", action="store_true", help="also NNCF's post-training INT8 (presets PERFORMANCE, MIXED)")
    args = ap.parse_args()

    ds = get_dataset("market1501")
    calib = [s.path for s in ds.train[:: max(1, len(ds.train) // 256)]][:256]
    embs = {}
    for e in args.engines:
        emb, _ = make_embedder(None, args.weights, e, batch_size=64, threads=args.threads, calibration=calib)  # type: ignore[arg-type]
        embs[e] = emb
        print(f"{e}: {getattr(emb.backend, 'path', 'torch')}", flush=True)
    if args.nncf:
        embs.update(nncf_engines(embs, [s.path for s in ds.train[:: len(ds.train) // 300]][:300], args.threads))
    query, gallery = ds.query, drop_junk(ds.gallery)
    paths = [s.path for s in query] + [s.path for s in gallery]
    pre = [embs[args.engines[0]].preprocess.resize(p) for p in paths[: args.images]]
    for emb in embs.values():
        emb.embed(pre[:128])  # warm-up
    times: dict[str, list[float]] = {e: [] for e in embs}
    for _ in range(args.rounds):  # interleaved: drifts of the shared machine hit every engine alike
        for e, emb in embs.items():
            t0 = time.perf_counter()
            emb.embed(pre)
            times[e].append(time.perf_counter() - t0)
    speed = {e: len(pre) / float(np.median(t)) for e, t in times.items()}
    ref = args.engines[0]
    for e in embs:
        print(f"{e}: {speed[e]:.0f} img/s model ({speed[e] / speed[ref]:.2f}x {ref})", flush=True)

    acc, e2e = {}, {}
    if not args.no_market:
        pids = np.array([s.pid for s in query] + [s.pid for s in gallery])
        cams = np.array([s.camid for s in query] + [s.camid for s in gallery])
        nq = len(query)
        for e, emb in embs.items():
            t0 = time.perf_counter()
            f = emb.embed(paths)
            e2e[e] = len(paths) / (time.perf_counter() - t0)
            acc[e] = evaluate(pairwise_distance(f[:nq], f[nq:], "cosine"), pids[:nq], pids[nq:], cams[:nq], cams[nq:])
            r = acc[e]
            print(f"{e}: {e2e[e]:.0f} img/s end to end; {100 * r.rank(1):.2f} / {100 * r.mAP:.2f}", flush=True)

    rows = [
        "| engine (`--backend`) | model img/s | x ORT fp32 | end-to-end img/s | x ORT fp32 | rank-1 | mAP | mINP | mAP loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in embs:
        r = acc.get(e)
        figs = "– | – | – | –"
        if r is not None:
            loss = 100 * (acc[ref].mAP - r.mAP)
            figs = f"{100 * r.rank(1):.2f} | {100 * r.mAP:.2f} | {100 * r.mINP:.2f} | {loss:+.2f}"
        ee = f"{e2e[e]:.0f} | {e2e[e] / e2e[ref]:.2f}x" if e in e2e else "– | –"
        rows.append(f"| {ENGINES.get(e, e)} (`{e}`) | {speed[e]:.0f} | {speed[e] / speed[ref]:.2f}x | {ee} | {figs} |")
    md = f"""## INT8 and OpenVINO on this CPU (issue 23, part 3)
Weights `{os.path.basename(args.weights)}`; {args.threads} threads; every engine through reidkit's Embedder (one
single-threaded stream per core). Model speed: {len(pre):,} pre-resized Market images, median of {args.rounds}
interleaved rounds. End to end: Market-1501 query + gallery without junk ({len(paths):,} files: decode, PIL
resize, model). Accuracy: those features, cosine, reidkit's evaluator. INT8 = the QDQ file shipped beside the
weights (static, percentile calibration on 256 training images, `reidkit export --int8`), run by both runtimes.
{machine()}.

{chr(10).join(rows)}

Command: `{command_line()}`
"""
    if args.section:
        write_section(args.section, md)
    print(md)


if __name__ == "__main__":
    main()
