"""``reidkit eval``, ``reidkit extract`` and ``reidkit export``: thin commands over :mod:`reidkit.research`
and :func:`reidkit.extract.extract_features`. Added to the main app by :func:`register`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from reidkit.cli import common
from reidkit.cli.common import K1, K2, DatasetRoot, Model, Threads, fail, failing

# --- the options of a checkpoint's features (eval --weights, extract) ---------------------------------
ExtractBackend = Annotated[
    str,
    typer.Option(
        help="onnx (ONNX Runtime, exported once and cached), openvino (the same file on OpenVINO), "
        "openvino-int8 (the model's shipped INT8 file, else quantised on training images), onnx-int8 or torch."
    ),
]
Resize = Annotated[
    Literal["pil", "cv2"], typer.Option(help="Resize with PIL (exact, torchreid's pixels) or OpenCV (faster).")
]
Raw = Annotated[
    bool, typer.Option("--raw", help="Keep raw model outputs (torchreid's protocol: with --metric euclidean).")
]
Checkpoint = Annotated[
    Path | None, typer.Option(help="Checkpoint: a reidkit model file or a torchreid file (default: shipped model).")
]


@contextlib.contextmanager
def _bad_input() -> Iterator[None]:
    """A checkpoint, dataset or features file that cannot be used: one line and exit status 2."""
    from reidkit.datasets.base import DatasetError
    from reidkit.export import ExportError
    from reidkit.imaging import ImageError
    from reidkit.models.weights import WeightsMismatchError
    from reidkit.raycluster import RayUnavailable

    try:
        with failing(DatasetError, FileNotFoundError, ValueError, WeightsMismatchError, ImageError, RayUnavailable):
            yield
    except ExportError as exc:
        fail(f"{exc} (use --backend torch to run the model in torch instead)")


def _print_rate(info: Any, stats: Any, backend: str) -> None:
    """``ModelInfo`` and ``ExtractStats`` of an extraction, as one line."""
    common.console.print(
        f"{info.name}: {stats.images:,} images in {stats.seconds:.1f} s ({stats.images_per_s:.1f} img/s, {backend})"
    )


def eval_cmd(
    features: Annotated[Path | None, typer.Option(help="Saved features (.npz: qf, gf, q_pids, g_pids, ...).")] = None,
    model: Annotated[
        str | None, typer.Option(help="Architecture (e.g. osnet_x0_25) when evaluating a checkpoint.")
    ] = None,
    weights: Annotated[
        Path | None, typer.Option(help="Checkpoint to extract features with (instead of --features).")
    ] = None,
    dataset: Annotated[str, typer.Option(help="Dataset to extract from, with --weights.")] = "market1501",
    root: DatasetRoot = None,
    backend: ExtractBackend = "onnx",
    flip: Annotated[bool, typer.Option("--flip", help="Flip test-time augmentation (with --weights).")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per batch (with --weights).")] = 32,
    resize: Resize = "pil",
    raw: Raw = False,
    rerank: Annotated[bool, typer.Option("--rerank", help="Also evaluate with k-reciprocal re-ranking.")] = False,
    metric: Annotated[Literal["cosine", "euclidean"], typer.Option(help="Distance between features.")] = "cosine",
    ap: Annotated[
        Literal["standard", "market"], typer.Option(help="non-interpolated, or Market-1501 trapezoid")
    ] = "standard",
    k1: K1 = 20,
    k2: K2 = 6,
    lambda_value: Annotated[float, typer.Option("--lambda", help="Re-ranking lambda.")] = 0.3,
    holdout: Annotated[
        int,
        typer.Option(help="Evaluate on the last N training identities instead (a config's data.holdout_ids)."),
    ] = 0,
    distractors: Annotated[
        bool,
        typer.Option(
            "--distractors",
            help="With --holdout: every image of the trained ids joins the gallery (crowded, but those people are "
            "not unseen: it ranks models unlike the test split, BENCHMARKS.md 'osnet_kd').",
        ),
    ] = False,
    stage2: Annotated[
        int, typer.Option(help="HOReID: re-order each query's top K by the model's verifier (0: off).")
    ] = 0,
    stage2_sign: Annotated[
        Literal["plus", "minus", "both"],
        typer.Option(
            help="Stage 2 adds +prob (same person -> 1; the default, chosen on held-out ids, see "
            "MODEL_CARD_horeid.md), -prob (the official code's 1 - prob), or both."
        ),
    ] = "plus",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures as JSON.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the CMC curve to this image (e.g. cmc.png).")] = None,
) -> None:
    """Evaluate saved features: CMC rank-1/5/10, mAP and mINP (optionally re-ranked)."""
    from reidkit.evaluation.report import plot_cmc, result_json, result_table
    from reidkit.io import write_json
    from reidkit.research import run_eval

    if features is not None and (weights is not None or model is not None) and not stage2:
        fail("give either --features FILE.npz or a model (--weights CHECKPOINT, --model NAME), not both")
    if distractors and not holdout:
        fail("--distractors needs --holdout N (the held-out ids are the people searched for)")
    with _bad_input():
        run = run_eval(
            features, model=model, weights=weights, dataset=dataset, root=root, metric=metric, ap=ap, rerank=rerank,
            k1=k1, k2=k2, lambda_value=lambda_value, stage2=stage2, stage2_sign=stage2_sign, backend=backend,
            flip=flip, batch_size=batch_size, raw=raw, resize=resize, holdout=holdout, distractors=distractors,
            progress=True,
        )  # fmt: skip
    if run.extracted:
        _print_rate(*run.extracted, backend)
    common.console.print(result_table(run.results, title=run.title))
    for name, s in run.seconds.items():
        common.console.print(f"  {name}: {s:.2f} s", style="dim")
    if json_out:
        figures = {k: result_json(v) for k, v in run.results.items()}
        write_json(json_out, {"features": str(features or weights), "ap": ap, "results": figures})
    if plot:
        plot_cmc(run.results, plot)


def extract_cmd(
    out: Annotated[Path, typer.Option(help="Features file to write (.npz).")],
    weights: Checkpoint = None,
    model: Model = None,
    dataset: Annotated[str, typer.Option(help="Dataset name, e.g. market1501.")] = "market1501",
    root: DatasetRoot = None,
    backend: ExtractBackend = "onnx",
    flip: Annotated[bool, typer.Option("--flip", help="Flip test-time augmentation.")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 32,
    threads: Threads = None,
    resize: Resize = "pil",
    raw: Raw = False,
    holdout: Annotated[
        int,
        typer.Option(help="Embed the last N training identities instead (a config's data.holdout_ids)."),
    ] = 0,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Embed on a Ray cluster: HOST:PORT, auto or local (same features; a shared data folder).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="With --ray: workers (default: the cluster's CPUs).")
    ] = None,
) -> None:
    """Embed a dataset's query and gallery into a features file for `reidkit eval --features`."""
    from reidkit.extract import extract_features
    from reidkit.io import save_features

    with _bad_input():
        fs, info, stats = extract_features(
            model, weights, dataset, root, backend=backend, batch_size=batch_size, flip=flip, threads=threads,
            raw=raw, resize=resize, holdout=holdout, progress=True, ray=ray, workers=workers,
        )  # fmt: skip
    _print_rate(info, stats, backend)
    save_features(out, fs)
    common.console.print(f"wrote {out} ({len(fs.qf):,} query + {len(fs.gf):,} gallery features, {fs.qf.shape[1]}-d)")


def export_cmd(
    onnx: Annotated[Path, typer.Option("--onnx", help="ONNX file to write (dynamic batch).")],
    weights: Checkpoint = None,
    model: Model = None,
    exporter: Annotated[Literal["dynamo", "torchscript"], typer.Option(help="torch's ONNX exporter.")] = "dynamo",
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default: 18 dynamo, 17 torchscript).")] = None,
    check_images: Annotated[
        list[Path] | None,
        typer.Option("--check-image", help="Real images for the parity check (repeatable; default: random input)."),
    ] = None,
    int8: Annotated[
        Path | None, typer.Option(help="Also write a static INT8 model here (calibrated on --calibration images).")
    ] = None,
    calibration: Annotated[
        str, typer.Option(help="Dataset whose training images calibrate INT8 (256 spread-out images).")
    ] = "market1501",
    root: Annotated[Path | None, typer.Option(help="Folder holding that dataset (default $REIDKIT_DATA).")] = None,
    float_convs: Annotated[
        int,
        typer.Option(
            min=0, help="Leave the first N convolutions in float in the INT8 model (MobileNetV2: 4; see BENCHMARKS.md)."
        ),
    ] = 0,
) -> None:
    """Export a model to ONNX (numeric parity with torch checked before the file is written), optionally INT8."""
    from reidkit.datasets.base import DatasetError
    from reidkit.export import ExportError
    from reidkit.models.weights import WeightsMismatchError
    from reidkit.research import export_model, quantize_model

    errors = (DatasetError, FileNotFoundError, ValueError, WeightsMismatchError, ExportError)
    with failing(*errors):
        info, rep = export_model(onnx, model, weights, exporter=exporter, opset=opset, check_images=check_images)
    check = "real images" if rep.real_images else "random input"
    common.console.print(
        f"wrote {rep.path} ({info.name}, {rep.height}x{rep.width} -> {rep.feat_dim}-d, "
        f"{rep.exporter} opset {rep.opset}, {rep.path.stat().st_size / 1e6:.1f} MB, {rep.seconds:.1f} s); "
        f"parity on {check}, batches "
        f"{list(rep.batch_sizes)}: min cosine {rep.min_cosine:.6f}, max abs diff {rep.max_abs_diff:.1e}"
    )
    if int8 is None:
        return
    with failing(*errors):
        q = quantize_model(onnx, int8, info, calibration, root, float_convs=float_convs)
    kept = f", first {q.float_convs} convolutions in float" if q.float_convs else ""
    common.console.print(
        f"wrote {q.path} (INT8, {q.calibration_images} calibration images from {calibration}{kept}, "
        f"{q.size_out / 1e6:.1f} MB, {q.seconds:.1f} s); measure its accuracy: "
        f"reidkit eval --backend openvino-int8 (or onnx-int8; see BENCHMARKS.md)"
    )


def register(app: typer.Typer) -> None:
    """Add ``eval``, ``extract`` and ``export`` to ``app``."""
    app.command("eval")(eval_cmd)
    app.command("extract")(extract_cmd)
    app.command("export")(export_cmd)
