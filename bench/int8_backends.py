"""INT8 on this CPU: OpenVINO (fp32, and INT8 by NNCF post-training quantisation) beside ONNX Runtime (fp32,
and reidkit's static INT8) on one exported re-id model: speed on the same batch with the same threads, back to
back and interleaved, and Market-1501 test features as reidkit feature files for `reidkit eval --features`.

OpenVINO and NNCF are not reidkit dependencies: run this in a scratch venv,

    python3 -m venv /tmp/ovenv && /tmp/ovenv/bin/pip install openvino nncf onnxruntime==1.32.0 pillow
    .venv/bin/reidkit export --weights MODEL.pth --onnx /tmp/ov/m.onnx --int8 /tmp/ov/m.int8.onnx
    /tmp/ovenv/bin/python bench/int8_backends.py /tmp/ov/m.onnx --ort-int8 /tmp/ov/m.int8.onnx \\
        --market $REIDKIT_DATA/market1501 --out /tmp/ov
    .venv/bin/reidkit eval --features /tmp/ov/ov_int8.npz     # and ort_fp32.npz, ov_fp32.npz, ort_int8.npz

Preprocessing here is PIL bilinear resize + ImageNet normalisation for every engine, so the engines are
compared on identical inputs.
"""

from __future__ import annotations

import argparse
import glob
import os
import time
from collections.abc import Callable

import nncf
import numpy as np
import onnxruntime as ort
import openvino as ov
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def prep(paths: list[str]) -> np.ndarray:
    out = np.empty((len(paths), 3, 256, 128), np.float32)
    for i, p in enumerate(paths):
        a = np.asarray(Image.open(p).convert("RGB").resize((128, 256), Image.BILINEAR), np.float32) / 255.0
        out[i] = ((a - MEAN) / STD).transpose(2, 0, 1)
    return out


def ort_runner(path: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def ov_runner(compiled: ov.CompiledModel) -> Callable[[np.ndarray], np.ndarray]:
    req = compiled.create_infer_request()
    return lambda x: next(iter(req.infer({0: x}).values()))


def save(path: str, feats: np.ndarray, paths: list[str], nq: int) -> None:
    """A reidkit features file (Market names: PID_cCAM...)."""
    parts = [os.path.basename(p).split("_") for p in paths]
    pids = np.array([int(a[0]) for a in parts], np.int64)
    cams = np.array([int(a[1][1]) for a in parts], np.int64)
    f = feats.astype(np.float32)
    np.savez(path, qf=f[:nq], gf=f[nq:], q_pids=pids[:nq], g_pids=pids[nq:], q_camids=cams[:nq], g_camids=cams[nq:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx")
    ap.add_argument("--ort-int8", default=None)
    ap.add_argument("--market", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib", type=int, default=300, help="Training images for NNCF's statistics.")
    ap.add_argument("--no-features", action="store_true")
    args = ap.parse_args()

    train = sorted(glob.glob(os.path.join(args.market, "bounding_box_train", "*.jpg")))
    rng = np.random.default_rng(0)
    calib = prep([train[i] for i in rng.choice(len(train), args.calib, replace=False)])
    core = ov.Core()
    fp32 = core.read_model(args.onnx)
    t = time.time()
    data = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))])
    int8 = nncf.quantize(fp32, data, preset=nncf.QuantizationPreset.MIXED, subset_size=len(calib))
    print(f"NNCF quantisation: {time.time() - t:.0f} s")
    cfg = {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY"}
    runs = {
        "ort fp32": ort_runner(args.onnx, args.threads),
        "ov fp32": ov_runner(core.compile_model(fp32, "CPU", cfg)),
        "ov int8": ov_runner(core.compile_model(int8, "CPU", cfg)),
    }
    if args.ort_int8:
        runs["ort int8"] = ort_runner(args.ort_int8, args.threads)
    batch = calib[:32]
    ref = runs["ort fp32"](batch)
    for name, run in runs.items():
        y = run(batch)
        cos = (y * ref).sum(1) / np.linalg.norm(y, axis=1) / np.linalg.norm(ref, axis=1)
        print(f"{name}: least cosine to ort fp32 on 32 images {cos.min():.4f}")
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(7):  # interleaved, back to back
        for name, run in runs.items():
            t = time.perf_counter()
            run(batch)
            run(batch)
            times[name].append(time.perf_counter() - t)
    base = float(np.median(times["ort fp32"]))
    for name in runs:
        m = float(np.median(times[name]))
        print(f"{name}: {64 / m:.0f} img/s, {base / m:.2f}x ort fp32 (median of 7 x 64 images, {args.threads} threads)")
    if args.no_features:
        return
    q = sorted(glob.glob(os.path.join(args.market, "query", "*.jpg")))
    g = sorted(glob.glob(os.path.join(args.market, "bounding_box_test", "*.jpg")))
    paths = q + g
    for name, run in runs.items():
        t = time.time()
        feats = np.concatenate([run(prep(paths[i : i + 64])) for i in range(0, len(paths), 64)])
        save(os.path.join(args.out, name.replace(" ", "_") + ".npz"), feats, paths, len(q))
        print(f"features {name}: {time.time() - t:.0f} s")


if __name__ == "__main__":
    main()
