#!/usr/bin/env python3
"""Run torchreid 0.2.5 (the benchmark peer) on inputs prepared by bench/.

Runs inside the isolated peer venv (see bench/peer_setup.sh)::

    .venv-peer/bin/python bench/peers/torchreid_runner.py TASK --input IN --output OUT.json [options]

Tasks
-----
eval         torchreid.reid.metrics.evaluate_rank on a distance matrix (.npz with
             distmat, q_pids, g_pids, q_camids, g_camids).
rerank       torchreid.reid.utils.re_ranking (.npz with q_g_dist, q_q_dist, g_g_dist,
             k1, k2, lambda_value); result matrix goes to --output-npy.
extract      torchreid.reid.utils.FeatureExtractor over a list of image paths
             (--images list.txt) with local weights (--weights); features to --output-npy.
train_speed  forward+backward+step throughput of a torchreid model with the
             ImageTripletEngine losses (CrossEntropyLoss + TripletLoss) and
             torchreid's adam optimizer, on random tensors.

Every task prints one summary line on stdout and writes a JSON report.
This script deliberately imports only the standard library, numpy, torch,
psutil and torchreid -- never reidkit -- so it measures the peer alone.
Exit codes: 0 ok, 2 bad arguments/inputs, 1 unexpected failure.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import types
import warnings
from pathlib import Path


class PeerError(Exception):
    """A user-facing error (bad input, missing file...)."""


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _set_thread_env(threads):
    """Cap BLAS/OpenMP threads. Must run before numpy/torch are imported."""
    if threads is None:
        return
    for var in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
    ):
        os.environ[var] = str(threads)


def _import_torchreid():
    """Import torchreid quietly; returns the top-level module."""
    try:
        with warnings.catch_warnings():
            # "Cython evaluation ... is unavailable" -- we report the evaluator
            # in the JSON instead.
            warnings.simplefilter("ignore")
            import torchreid
            import torchreid.reid.metrics.rank
    except ImportError as exc:  # pragma: no cover - environment problem
        raise PeerError(
            f"cannot import torchreid ({exc}); run `bash bench/peer_setup.sh` and use "
            f".venv-peer/bin/python (current interpreter: {sys.executable})"
        ) from exc
    return torchreid


def _rss_bytes():
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except Exception:  # pragma: no cover
        return None


def _ru_maxrss_mb():
    try:
        import resource

        # Linux reports KiB.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except Exception:  # pragma: no cover
        return None


class RssMonitor:
    """Peak RSS of this process while the block runs (psutil sampled every 20 ms).

    Falls back to resource.getrusage(ru_maxrss) if psutil is unavailable.
    """

    def __init__(self, interval=0.02):
        self.interval = interval
        self.before = None
        self.peak = None
        self.method = "psutil"
        self._stop = threading.Event()
        self._thread = None

    def _sample(self):
        rss = _rss_bytes()
        if rss is not None and (self.peak is None or rss > self.peak):
            self.peak = rss

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self.before = _rss_bytes()
        if self.before is None:
            self.method = "ru_maxrss"
            return self
        self.peak = self.before
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample()
        return False

    def report(self):
        mb = 1024.0 * 1024.0
        peak = self.peak / mb if self.method == "psutil" else _ru_maxrss_mb()
        return {
            "peak_rss_mb": round(peak, 2) if peak is not None else None,
            "rss_before_mb": round(self.before / mb, 2) if self.before else None,
            "ru_maxrss_mb": _round(_ru_maxrss_mb()),
            "rss_method": self.method,
        }


def _round(x, nd=2):
    return None if x is None else round(x, nd)


def _load_npz(path, required):
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise PeerError(f"input file not found: {p}")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as exc:
        raise PeerError(f"cannot read {p} as .npz: {exc}") from exc
    missing = [k for k in required if k not in data.files]
    if missing:
        raise PeerError(f"{p}: missing key(s) {missing}; has {sorted(data.files)}")
    return data


def _scalar(data, key, cast, default):
    if key not in data.files:
        return default
    arr = data[key]
    if arr.size != 1:
        raise PeerError(f"key {key!r} must be a scalar, got shape {arr.shape}")
    return cast(arr.reshape(()).item())


def _default_npy(output_json):
    p = Path(output_json)
    return str(p.with_suffix(".npy") if p.suffix == ".json" else Path(str(p) + ".npy"))


def _env_info(torchreid, threads):
    import numpy as np
    import torch

    return {
        "peer": "torchreid",
        "torchreid_version": getattr(torchreid, "__version__", None),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "python": sys.version.split()[0],
    }


def _write_json(path, payload):
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w") as fh:
        json.dump(payload, fh, indent=1)
        fh.write("\n")


# --------------------------------------------------------------------------- #
# tasks
# --------------------------------------------------------------------------- #
def task_eval(args):
    import numpy as np

    torchreid = _import_torchreid()
    rank = torchreid.reid.metrics.rank

    data = _load_npz(args.input, ["distmat", "q_pids", "g_pids", "q_camids", "g_camids"])
    distmat = np.ascontiguousarray(data["distmat"])
    q_pids = np.asarray(data["q_pids"]).reshape(-1)
    g_pids = np.asarray(data["g_pids"]).reshape(-1)
    q_camids = np.asarray(data["q_camids"]).reshape(-1)
    g_camids = np.asarray(data["g_camids"]).reshape(-1)
    if distmat.ndim != 2:
        raise PeerError(f"distmat must be 2-D, got shape {distmat.shape}")
    nq, ng = distmat.shape
    if q_pids.shape[0] != nq or q_camids.shape[0] != nq:
        raise PeerError(f"q_pids/q_camids length must be {nq} (distmat rows)")
    if g_pids.shape[0] != ng or g_camids.shape[0] != ng:
        raise PeerError(f"g_pids/g_camids length must be {ng} (distmat cols)")

    use_cython = not args.no_cython
    evaluator = "cython" if (use_cython and rank.IS_CYTHON_AVAI) else "python"

    # Per-query AP: torchreid only returns (cmc, mAP). Its evaluators end with
    # `mAP = np.mean(all_AP)`, so we give the rank module a numpy stand-in whose
    # `mean` records the list it is handed. Attribute lookups stay plain dict
    # hits (a copy of numpy's namespace), so the timed code is unaffected.
    captured = {}
    real_np = rank.np
    shim = types.ModuleType("numpy_capture_shim")
    shim.__dict__.update(vars(real_np))
    shim.__dict__["__getattr__"] = lambda name: getattr(real_np, name)

    def _mean(a, *a_args, **a_kwargs):
        if isinstance(a, list) and not a_args and not a_kwargs:
            captured["all_AP"] = list(a)
        return real_np.mean(a, *a_args, **a_kwargs)

    shim.mean = _mean
    if args.seed is not None:
        np.random.seed(args.seed)  # only the cuhk03 metric samples randomly

    rank.np = shim
    try:
        with RssMonitor() as mon:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                result = rank.evaluate_rank(
                    distmat,
                    q_pids,
                    g_pids,
                    q_camids,
                    g_camids,
                    max_rank=args.max_rank,
                    use_metric_cuhk03=args.cuhk03,
                    use_cython=use_cython,
                )
            seconds = time.perf_counter() - t0
    except AssertionError as exc:
        raise PeerError(f"torchreid evaluate_rank refused the input: {exc}") from exc
    finally:
        rank.np = real_np

    cmc, mAP = result[0], result[1]
    out = {"task": "eval", **_env_info(torchreid, args.threads)}
    out.update(
        {
            "seconds": seconds,
            "num_query": nq,
            "num_gallery": ng,
            "distmat_dtype": str(distmat.dtype),
            "max_rank": args.max_rank,
            "metric": "cuhk03" if args.cuhk03 else "market1501",
            "evaluator": evaluator,
            "cmc": [float(x) for x in np.asarray(cmc).reshape(-1)],
            "mAP": float(mAP),
        }
    )
    if len(result) > 2:  # torchreid 0.2.5 returns only (cmc, mAP); no mINP
        out["mINP"] = float(result[2])
    out.update(mon.report())

    ap = captured.get("all_AP")
    if ap is not None:
        # Queries torchreid keeps: some gallery item has the same pid but not
        # the same (pid, camid) pair -- exactly its `if not np.any(raw_cmc)` skip.
        same_pid = q_pids[:, None] == g_pids[None, :]
        diff_cam = q_camids[:, None] != g_camids[None, :]
        valid_idx = np.flatnonzero((same_pid & diff_cam).any(axis=1))
        out["num_valid_query"] = len(ap)
        out["per_query_ap"] = [float(x) for x in ap]
        if len(valid_idx) == len(ap):
            out["per_query_ap_query_idx"] = [int(i) for i in valid_idx]
    _write_json(args.output, out)
    print(
        f"torchreid eval: {nq}x{ng} {evaluator} evaluator {seconds:.3f}s "
        f"mAP={out['mAP']:.4f} R1={out['cmc'][0]:.4f} peak_rss={out['peak_rss_mb']}MB "
        f"-> {args.output}"
    )
    return out


def task_rerank(args):
    import numpy as np

    torchreid = _import_torchreid()
    from torchreid.reid.utils import re_ranking

    data = _load_npz(args.input, ["q_g_dist", "q_q_dist", "g_g_dist"])
    q_g = data["q_g_dist"]
    q_q = data["q_q_dist"]
    g_g = data["g_g_dist"]
    nq, ng = q_g.shape
    if q_q.shape != (nq, nq) or g_g.shape != (ng, ng):
        raise PeerError(
            f"shape mismatch: q_g_dist {q_g.shape}, q_q_dist {q_q.shape}, g_g_dist {g_g.shape}"
        )
    k1 = args.k1 if args.k1 is not None else _scalar(data, "k1", int, 20)
    k2 = args.k2 if args.k2 is not None else _scalar(data, "k2", int, 6)
    lam = (
        args.lambda_value
        if args.lambda_value is not None
        else _scalar(data, "lambda_value", float, 0.3)
    )
    out_npy = args.output_npy or _default_npy(args.output)

    with RssMonitor() as mon:
        t0 = time.perf_counter()
        final = re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
        seconds = time.perf_counter() - t0

    final = np.asarray(final)
    Path(out_npy).parent.mkdir(parents=True, exist_ok=True)
    np.save(out_npy, final)
    out = {"task": "rerank", **_env_info(torchreid, args.threads)}
    out.update(
        {
            "seconds": seconds,
            "num_query": nq,
            "num_gallery": ng,
            "k1": k1,
            "k2": k2,
            "lambda_value": lam,
            "input_dtype": str(q_g.dtype),
            "output": str(out_npy),
            "output_shape": list(final.shape),
            "output_dtype": str(final.dtype),
        }
    )
    out.update(mon.report())
    _write_json(args.output, out)
    print(
        f"torchreid rerank: {nq}x{ng} k1={k1} k2={k2} lambda={lam} {seconds:.3f}s "
        f"peak_rss={out['peak_rss_mb']}MB -> {out_npy}"
    )
    return out


def _check_weights_loaded(model, weights):
    """Count checkpoint tensors that made it into the model (torchreid only warns)."""
    import torch
    from torchreid.reid.utils import load_checkpoint

    ckpt = load_checkpoint(weights)
    state = ckpt["state_dict"] if isinstance(ckpt, dict) and "state_dict" in ckpt else ckpt
    model_state = model.state_dict()
    matched = 0
    for k, v in state.items():
        k = k[7:] if k.startswith("module.") else k
        mv = model_state.get(k)
        if mv is not None and mv.shape == v.shape and torch.equal(mv.cpu(), v.cpu()):
            matched += 1
    return matched, len(state), len(model_state)


def task_extract(args):
    import contextlib
    import io

    import numpy as np
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torchreid = _import_torchreid()
    from torchreid.reid.utils import FeatureExtractor

    list_path = Path(args.images)
    if not list_path.is_file():
        raise PeerError(f"image list not found: {list_path}")
    paths = []
    for line in list_path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            paths.append(line)
    if not paths:
        raise PeerError(f"image list {list_path} is empty")
    if args.limit:
        paths = paths[: args.limit]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise PeerError(f"{len(missing)} image(s) not found, e.g. {missing[0]}")
    # FeatureExtractor sets pretrained=True (-> download) when model_path is not
    # an existing file, so insist on a real local file.
    if not args.weights or not os.path.isfile(args.weights):
        raise PeerError(f"--weights must be an existing local file, got {args.weights!r}")
    if args.batch_size < 1:
        raise PeerError("--batch-size must be >= 1")

    t_build = time.perf_counter()
    log = io.StringIO()
    own = None
    if args.reidkit_model:
        # A reidkit model file (e.g. the shipped default model): torchreid cannot build its
        # architecture, so its FeatureExtractor (PIL decode, torchvision transforms, batching,
        # forward under no_grad) runs reidkit's nn.Module in place of its own.
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
        from reidkit.models.zoo import load_model

        own, info = load_model(None, args.weights)
        args.height, args.width = info.height, info.width
    try:
        with contextlib.redirect_stdout(log), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extractor = FeatureExtractor(
                model_name=args.model,
                model_path=args.weights,
                image_size=(args.height, args.width),
                device="cpu",
                verbose=False,
            )
    except KeyError as exc:
        raise PeerError(f"torchreid does not know model {args.model!r}: {exc}") from exc
    if own is not None:
        extractor.model = own.eval()
    build_seconds = time.perf_counter() - t_build
    matched, n_ckpt, n_model = _check_weights_loaded(extractor.model, args.weights)
    # torchreid silently skips mismatched tensors; only the classifier (built
    # with num_classes=1) may legitimately stay unloaded.
    if own is None and matched < 0.9 * n_model:
        raise PeerError(
            f"only {matched}/{n_model} model tensors were loaded from {args.weights} "
            f"into {args.model}: wrong --model for these weights?"
        )

    feats = []
    batch_times = []
    with RssMonitor() as mon:
        t0 = time.perf_counter()
        for i in range(0, len(paths), args.batch_size):
            tb = time.perf_counter()
            f = extractor(paths[i : i + args.batch_size])
            feats.append(f.cpu().numpy())
            batch_times.append(time.perf_counter() - tb)
        seconds = time.perf_counter() - t0
    features = np.concatenate(feats, axis=0).astype(np.float32, copy=False)

    out_npy = args.output_npy or _default_npy(args.output)
    Path(out_npy).parent.mkdir(parents=True, exist_ok=True)
    np.save(out_npy, features)
    out = {"task": "extract", **_env_info(torchreid, args.threads)}
    out.update(
        {
            "seconds": seconds,
            "images_per_s": len(paths) / seconds if seconds > 0 else None,
            "num_images": len(paths),
            "batch_size": args.batch_size,
            "first_batch_seconds": batch_times[0],
            "model": args.model,
            "weights": str(args.weights),
            "weights_tensors_loaded": matched,
            "weights_tensors_in_checkpoint": n_ckpt,
            "model_tensors": n_model,
            "build_seconds": build_seconds,
            "image_size": [args.height, args.width],
            "feature_dim": int(features.shape[1]),
            "features": str(out_npy),
            "note": "seconds covers image loading + preprocessing + forward "
            "(FeatureExtractor.__call__ on path lists), batch by batch",
        }
    )
    out.update(mon.report())
    _write_json(args.output, out)
    print(
        f"torchreid extract: {args.model} {len(paths)} images bs={args.batch_size} "
        f"{seconds:.3f}s ({out['images_per_s']:.2f} img/s) dim={features.shape[1]} "
        f"-> {out_npy}"
    )
    return out


def task_train_speed(args):
    import torch

    if args.flush_denormal:  # before the first parallel op: the intra-op threads inherit the FP mode
        torch.set_flush_denormal(True)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torchreid = _import_torchreid()
    from torchreid.reid import metrics
    from torchreid.reid.losses import CrossEntropyLoss, DeepSupervision, TripletLoss
    from torchreid.reid.models import build_model
    from torchreid.reid.optim import build_optimizer

    k = args.instances
    if args.batch_size < 2 * k or args.batch_size % k:
        raise PeerError(
            f"--batch-size must be a multiple of --instances ({k}) with >= 2 identities"
        )
    if args.iters < 1 or args.warmup < 0:
        raise PeerError("--iters must be >= 1 and --warmup >= 0")
    p = args.batch_size // k
    if p > args.num_classes:
        raise PeerError(f"--num-classes ({args.num_classes}) < identities per batch ({p})")

    torch.manual_seed(args.seed)
    try:
        model = build_model(
            args.model,
            num_classes=args.num_classes,
            loss="triplet",
            pretrained=False,  # never download
            use_gpu=False,
        )
    except KeyError as exc:
        raise PeerError(f"torchreid does not know model {args.model!r}: {exc}") from exc
    if args.weights:  # a state dict with torchreid's own keys (e.g. weights late in a training run)
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or len(missing) == len(model.state_dict()):
            raise PeerError(f"{args.weights}: keys do not fit torchreid's {args.model} ({unexpected[:3]})")
    model.train()
    optimizer = build_optimizer(model, optim="adam", lr=args.lr)
    # Same criteria/weights as torchreid.engine.ImageTripletEngine defaults.
    criterion_t = TripletLoss(margin=0.3)
    criterion_x = CrossEntropyLoss(
        num_classes=args.num_classes, use_gpu=False, label_smooth=True
    )
    weight_t, weight_x = 1.0, 1.0

    def compute_loss(criterion, outputs, targets):
        if isinstance(outputs, (tuple, list)):
            return DeepSupervision(criterion, outputs, targets)
        return criterion(outputs, targets)

    # Pre-generated random P x K batches (data generation is not timed).
    gen = torch.Generator().manual_seed(args.seed)
    n_batches = 2
    batches = []
    for _ in range(n_batches):
        imgs = torch.randn(args.batch_size, 3, args.height, args.width, generator=gen)
        ids = torch.randperm(args.num_classes, generator=gen)[:p]
        pids = ids.repeat_interleave(k)
        batches.append((imgs, pids))

    def step(i):
        imgs, pids = batches[i % n_batches]
        outputs, features = model(imgs)
        loss_t = compute_loss(criterion_t, features, pids)
        loss_x = compute_loss(criterion_x, outputs, pids)
        loss = weight_t * loss_t + weight_x * loss_x
        # the engine logs these every step (forces a sync like .item())
        summary = (loss_t.item(), loss_x.item(), metrics.accuracy(outputs, pids)[0].item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return summary

    with RssMonitor() as mon:
        t_w = time.perf_counter()
        for i in range(args.warmup):
            step(i)
        warmup_seconds = time.perf_counter() - t_w
        t0 = time.perf_counter()
        last = None
        for i in range(args.iters):
            last = step(args.warmup + i)
        seconds = time.perf_counter() - t0

    images = args.iters * args.batch_size
    out = {"task": "train_speed", **_env_info(torchreid, args.threads)}
    out.update(
        {
            "seconds": seconds,
            "images_per_s": images / seconds if seconds > 0 else None,
            "seconds_per_iter": seconds / args.iters,
            "iters": args.iters,
            "warmup": args.warmup,
            "warmup_seconds": warmup_seconds,
            "model": args.model,
            "batch_size": args.batch_size,
            "identities_per_batch": p,
            "instances": k,
            "num_classes": args.num_classes,
            "image_size": [args.height, args.width],
            "optimizer": "adam (torchreid.reid.optim.build_optimizer)",
            "lr": args.lr,
            "losses": "CrossEntropyLoss(label_smooth) + TripletLoss(margin=0.3), weights 1/1",
            "num_params": sum(t.numel() for t in model.parameters()),
            "weights": args.weights,
            "flush_denormal": bool(args.flush_denormal),
            "last_loss_t": last[0],
            "last_loss_x": last[1],
        }
    )
    out.update(mon.report())
    _write_json(args.output, out)
    print(
        f"torchreid train_speed: {args.model} bs={args.batch_size} {args.height}x{args.width} "
        f"threads={out['threads']} {args.iters} iters {seconds:.3f}s "
        f"({out['images_per_s']:.2f} img/s) -> {args.output}"
    )
    return out


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #
def build_parser():
    ap = argparse.ArgumentParser(
        prog="torchreid_runner.py",
        description="Run torchreid 0.2.5 (benchmark peer) on prepared inputs; "
        "writes a JSON report.",
    )
    sub = ap.add_subparsers(dest="task", metavar="TASK")
    sub.required = True

    def common(p, need_input=True):
        if need_input:
            p.add_argument("--input", required=True, help="input .npz")
        p.add_argument("--output", required=True, help="output JSON report")
        p.add_argument(
            "--threads",
            type=int,
            default=None,
            help="cap torch/BLAS/OpenMP threads (default: library default)",
        )

    p = sub.add_parser("eval", help="torchreid.reid.metrics.evaluate_rank")
    common(p)
    p.add_argument("--max-rank", type=int, default=50)
    p.add_argument("--cuhk03", action="store_true", help="use_metric_cuhk03=True")
    p.add_argument(
        "--no-cython",
        action="store_true",
        help="pass use_cython=False (the extension is not built in 0.2.5 anyway)",
    )
    p.add_argument("--seed", type=int, default=0, help="numpy seed (cuhk03 sampling)")

    p = sub.add_parser("rerank", help="torchreid.reid.utils.re_ranking")
    common(p)
    p.add_argument("--output-npy", default=None, help="where to save the Q x G result")
    p.add_argument("--k1", type=int, default=None, help="override npz k1 (default 20)")
    p.add_argument("--k2", type=int, default=None, help="override npz k2 (default 6)")
    p.add_argument(
        "--lambda-value", type=float, default=None, help="override npz lambda_value (0.3)"
    )

    p = sub.add_parser("extract", help="torchreid.reid.utils.FeatureExtractor on CPU")
    common(p, need_input=False)
    p.add_argument("--images", required=True, help="text file, one image path per line")
    p.add_argument("--model", default="osnet_x0_25")
    p.add_argument("--weights", required=True, help="local weights file (no download)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--limit", type=int, default=0, help="use only the first N images")
    p.add_argument("--output-npy", default=None, help="where to save the N x D features")
    p.add_argument(
        "--reidkit-model",
        action="store_true",
        help="--weights is a reidkit model file: run its module inside torchreid's FeatureExtractor",
    )

    p = sub.add_parser("train_speed", help="training-step throughput on random data")
    common(p, need_input=False)
    p.add_argument("--model", default="osnet_x0_25", help="e.g. mobilenetv2_x1_0|osnet_x0_25|resnet50")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--instances", type=int, default=4, help="K images per identity")
    p.add_argument("--num-classes", type=int, default=751)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.0003)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", default=None, help="state dict to start from (torchreid keys)")
    p.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True) first")
    return ap


TASKS = {
    "eval": task_eval,
    "rerank": task_rerank,
    "extract": task_extract,
    "train_speed": task_train_speed,
}


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.threads is not None and args.threads < 1:
        print("torchreid_runner: error: --threads must be >= 1", file=sys.stderr)
        return 2
    _set_thread_env(args.threads)
    try:
        TASKS[args.task](args)
    except PeerError as exc:
        print(f"torchreid_runner {args.task}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"torchreid_runner {args.task}: error: out of memory", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
