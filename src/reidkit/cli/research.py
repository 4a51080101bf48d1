"""The ``reidkit`` command line: every command is a thin call into the Python API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from reidkit.runtime import tune_malloc

tune_malloc()  # before torch allocates anything (see reidkit.runtime)
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
datasets_app = typer.Typer(no_args_is_help=True, help="Inspect datasets on disk.")
app.add_typer(datasets_app, name="datasets")
console = Console()


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@datasets_app.command("info")
def datasets_info(
    name: Annotated[str, typer.Argument(help="Dataset name, e.g. market1501.")],
    root: Annotated[Path | None, typer.Option(help="Folder holding the dataset (default $REIDKIT_DATA).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the counts as JSON.")] = None,
) -> None:
    """Images / identities / cameras per split."""
    from reidkit.datasets import get_dataset
    from reidkit.datasets.base import DatasetError
    from reidkit.io import write_json

    try:
        ds = get_dataset(name, root)
    except (DatasetError, KeyError, ValueError) as exc:
        _fail(str(exc).strip("'\""))
        return
    from reidkit.datasets import drop_junk, split_stats

    table = Table(title=ds.name, caption=str(Path(ds.root).resolve()))
    for col in ("split", "images", "ids", "cameras"):
        table.add_column(col, justify="left" if col == "split" else "right")
    stats = ds.stats()
    junk_free = split_stats(drop_junk(ds.gallery))
    if junk_free.images != stats["gallery"].images:
        stats["gallery_without_junk"] = junk_free
    for split, s in stats.items():
        table.add_row(split, f"{s.images:,}", f"{s.ids:,}", f"{s.cameras}")
    console.print(table)
    if ds.notes:
        console.print(ds.notes)
    if json_out:
        write_json(json_out, {k: vars(v) for k, v in stats.items()})


@datasets_app.command("make-occluded")
def datasets_make_occluded(
    name: Annotated[str, typer.Argument(help="Dataset whose queries to occlude, e.g. market1501.")],
    out: Annotated[Path, typer.Option(help="Folder to write (query/, samples.csv, occlusion.csv, contact sheet).")],
    root: Annotated[Path | None, typer.Option(help="Folder holding the dataset (default $REIDKIT_DATA).")] = None,
    seed: Annotated[int, typer.Option(help="Seed (the result is the same for the same seed).")] = 0,
    min_fraction: Annotated[float, typer.Option(help="Smallest share of the crop an occluder covers.")] = 0.2,
    max_fraction: Annotated[float, typer.Option(help="Largest share of the crop an occluder covers.")] = 0.5,
    style: Annotated[
        Literal["real", "synthetic"],
        typer.Option(help="real: pieces of other people and images; synthetic: solid, noise or blurred rectangles."),
    ] = "real",
) -> None:
    """Write an occluded copy of a dataset's queries (gallery unchanged) as a CSV dataset."""
    from reidkit.datasets import get_dataset
    from reidkit.datasets.base import DatasetError
    from reidkit.datasets.occlude import make_occluded

    try:
        ds = get_dataset(name, root)
        rep = make_occluded(ds, out, seed=seed, fraction=(min_fraction, max_fraction), style=style)
    except (DatasetError, KeyError, ValueError) as exc:
        _fail(str(exc).strip("'\""))
        return
    kinds = ", ".join(f"{k} {n:,}" for k, n in rep.kinds.items())
    console.print(
        f"wrote {rep.out}: {rep.queries:,} occluded queries ({kinds}; mean cover {100 * rep.mean_fraction:.1f} %), "
        f"gallery {rep.gallery:,} and train {rep.train:,} images by reference; contact sheet {rep.sheet}\n"
        f"evaluate with: reidkit eval --dataset folder --root {rep.out}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("eval")
def eval_cmd(
    features: Annotated[Path | None, typer.Option(help="Saved features (.npz: qf, gf, q_pids, g_pids, ...).")] = None,
    model: Annotated[
        str | None, typer.Option(help="Architecture (e.g. osnet_x0_25) when evaluating a checkpoint.")
    ] = None,
    weights: Annotated[
        Path | None, typer.Option(help="Checkpoint to extract features with (instead of --features).")
    ] = None,
    dataset: Annotated[str, typer.Option(help="Dataset to extract from, with --weights.")] = "market1501",
    root: Annotated[Path | None, typer.Option(help="Folder holding the dataset (default $REIDKIT_DATA).")] = None,
    backend: Annotated[
        str, typer.Option(help="onnx (ONNX Runtime, exported once and cached; fastest), torch or onnx-int8.")
    ] = "onnx",
    flip: Annotated[bool, typer.Option("--flip", help="Flip test-time augmentation (with --weights).")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per batch (with --weights).")] = 32,
    resize: Annotated[
        Literal["pil", "cv2"], typer.Option(help="Resize with PIL (exact, torchreid's pixels) or OpenCV (faster).")
    ] = "pil",
    raw: Annotated[
        bool, typer.Option("--raw", help="Keep raw model outputs (torchreid's protocol: with --metric euclidean).")
    ] = False,
    rerank: Annotated[bool, typer.Option("--rerank", help="Also evaluate with k-reciprocal re-ranking.")] = False,
    metric: Annotated[Literal["cosine", "euclidean"], typer.Option(help="Distance between features.")] = "cosine",
    ap: Annotated[
        Literal["standard", "market"], typer.Option(help="non-interpolated, or Market-1501 trapezoid")
    ] = "standard",
    k1: Annotated[int, typer.Option(help="Re-ranking k1.")] = 20,
    k2: Annotated[int, typer.Option(help="Re-ranking k2.")] = 6,
    lambda_value: Annotated[float, typer.Option("--lambda", help="Re-ranking lambda.")] = 0.3,
    holdout: Annotated[
        int,
        typer.Option(help="Evaluate on the last N training identities instead (a config's data.holdout_ids)."),
    ] = 0,
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
    from reidkit.evaluation import evaluate_features
    from reidkit.evaluation.report import plot_cmc, result_json, result_table
    from reidkit.io import FeatureFileError, load_features, write_json

    if features is not None and (weights is not None or model is not None) and not stage2:
        _fail("give either --features FILE.npz or a model (--weights CHECKPOINT, --model NAME), not both")
    if features is not None:
        try:
            fs = load_features(features)
        except FeatureFileError as exc:
            _fail(str(exc))
            return
        label = features.name
    else:
        fs = _extract(model, weights, dataset, root, backend, flip, batch_size, None, raw, resize, holdout)  # type: ignore[arg-type]
        held = f" (held-out {holdout} training ids)" if holdout else ""
        label = f"{model or (Path(str(weights)).name if weights else 'default model')} on {dataset}{held}"
    results, seconds = {}, {}
    variants = {metric: False, f"{metric} + re-ranking": True} if rerank else {metric: False}
    for name, rr in variants.items():
        t0 = time.perf_counter()
        results[name] = evaluate_features(fs, metric, rr, ap, k1, k2, lambda_value)
        seconds[name] = time.perf_counter() - t0
    if stage2:
        results.update(_stage2(fs, model, weights, metric, ap, stage2, stage2_sign, seconds))
    title = f"{label}: {len(fs.qf)} queries x {len(fs.gf)} gallery"
    console.print(result_table(results, title=title))
    for name, s in seconds.items():
        console.print(f"  {name}: {s:.2f} s", style="dim")
    if json_out:
        figures = {k: result_json(v) for k, v in results.items()}
        write_json(json_out, {"features": str(features or weights), "ap": ap, "results": figures})
    if plot:
        plot_cmc(results, plot)


def _stage2(
    fs: Any, model: str | None, weights: Path | None, metric: str, ap: str, k: int, sign: str, seconds: dict
) -> dict[str, Any]:
    """HOReID stage 2: the top ``k`` of each query re-ordered by the model's verifier (+prob / -prob)."""
    from reidkit.evaluation import evaluate, pairwise_distance
    from reidkit.evaluation.verify import model_verifier, rescore_top_k
    from reidkit.models.horeid import K
    from reidkit.models.zoo import load_model

    if weights is None:
        _fail("--stage2 needs the HOReID model: --weights FILE")
    net, _ = load_model(model, weights)
    if not hasattr(net, "verify") or getattr(net, "topology", None) is None:
        _fail(f"--stage2: {weights} is not a HOReID model with a verifier (head=horeid, topology on)")
    verify = model_verifier(net, K)
    dist = pairwise_distance(fs.qf, fs.gf, metric)
    out = {}
    for name, s in (("plus", 1.0), ("minus", -1.0)):
        if sign in (name, "both"):
            t0 = time.perf_counter()
            d2 = rescore_top_k(dist, fs.qf, fs.gf, verify, k=k, sign=s)
            label = f"{metric} + stage 2 ({'+' if s > 0 else '-'}prob, top {k})"
            out[label] = evaluate(d2, fs.q_pids, fs.g_pids, fs.q_camids, fs.g_camids, ap=ap)
            seconds[label] = time.perf_counter() - t0
    return out


def _extract(
    model: str | None,
    weights: Path | None,
    dataset: str,
    root: Path | None,
    backend: str,
    flip: bool,
    batch_size: int,
    threads: int | None,
    raw: bool = False,
    resize: Literal["pil", "cv2"] = "pil",
    holdout: int = 0,
):
    """Load a checkpoint, embed a dataset's query and gallery (or its held-out training ids), report the rate."""
    from reidkit.datasets import get_dataset
    from reidkit.datasets.base import DatasetError, holdout_query_gallery, holdout_split
    from reidkit.export import ExportError
    from reidkit.extract import extract_dataset, make_embedder
    from reidkit.imaging import ImageError
    from reidkit.models.weights import WeightsMismatchError

    try:
        ds = get_dataset(dataset, root)
        if holdout:
            ds.query, ds.gallery = holdout_query_gallery(holdout_split(ds.train, holdout)[1])
        calib = [s.path for s in ds.train[:: max(1, len(ds.train) // 256)]] if backend == "onnx-int8" else None
        embedder, info = make_embedder(
            model,
            weights,
            backend,
            batch_size=batch_size,
            flip=flip,
            threads=threads,
            calibration=calib,
            normalize=not raw,
            resize=resize,  # type: ignore[arg-type]
        )
        fs, stats = extract_dataset(embedder, ds, progress=True)
    except ExportError as exc:
        _fail(f"{exc} (use --backend torch to run the model in torch instead)")
        raise  # unreachable: _fail exits
    except (DatasetError, FileNotFoundError, ValueError, WeightsMismatchError, ImageError) as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits
    console.print(
        f"{info.name}: {stats.images:,} images in {stats.seconds:.1f} s ({stats.images_per_s:.1f} img/s, {backend})"
    )
    return fs


@app.command("extract")
def extract_cmd(
    out: Annotated[Path, typer.Option(help="Features file to write (.npz).")],
    weights: Annotated[
        Path | None, typer.Option(help="Checkpoint: a reidkit model file or a torchreid file (default: shipped model).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Architecture, e.g. osnet_x0_25 (for torchreid files).")] = None,
    dataset: Annotated[str, typer.Option(help="Dataset name, e.g. market1501.")] = "market1501",
    root: Annotated[Path | None, typer.Option(help="Folder holding the dataset (default $REIDKIT_DATA).")] = None,
    backend: Annotated[
        str, typer.Option(help="onnx (ONNX Runtime, exported once and cached; fastest), torch or onnx-int8.")
    ] = "onnx",
    flip: Annotated[bool, typer.Option("--flip", help="Flip test-time augmentation.")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 32,
    threads: Annotated[int | None, typer.Option(help="Inference threads (default: all cores).")] = None,
    resize: Annotated[
        Literal["pil", "cv2"], typer.Option(help="Resize with PIL (exact, torchreid's pixels) or OpenCV (faster).")
    ] = "pil",
    raw: Annotated[
        bool, typer.Option("--raw", help="Keep raw model outputs (torchreid's protocol: with --metric euclidean).")
    ] = False,
    holdout: Annotated[
        int,
        typer.Option(help="Embed the last N training identities instead (a config's data.holdout_ids)."),
    ] = 0,
) -> None:
    """Embed a dataset's query and gallery into a features file for `reidkit eval --features`."""
    from reidkit.io import save_features

    fs = _extract(model, weights, dataset, root, backend, flip, batch_size, threads, raw, resize, holdout)
    save_features(out, fs)
    console.print(f"wrote {out} ({len(fs.qf):,} query + {len(fs.gf):,} gallery features, {fs.qf.shape[1]}-d)")


@app.command("export")
def export_cmd(
    onnx: Annotated[Path, typer.Option("--onnx", help="ONNX file to write (dynamic batch).")],
    weights: Annotated[
        Path | None, typer.Option(help="Checkpoint: a reidkit model file or a torchreid file (default: shipped model).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Architecture, e.g. osnet_x0_25 (for torchreid files).")] = None,
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
) -> None:
    """Export a model to ONNX (numeric parity with torch checked before the file is written), optionally INT8."""
    from reidkit.datasets import get_dataset
    from reidkit.datasets.base import DatasetError
    from reidkit.export import ExportError, export_onnx, quantize_int8
    from reidkit.models.weights import WeightsMismatchError
    from reidkit.models.zoo import load_model

    for p in check_images or []:
        if not p.is_file():
            _fail(f"{p}: no such image file")
    try:
        net, info = load_model(model, weights)
        rep = export_onnx(
            net, onnx, height=info.height, width=info.width, opset=opset, exporter=exporter, check_images=check_images
        )
    except (FileNotFoundError, ValueError, WeightsMismatchError, ExportError) as exc:
        _fail(str(exc))
        return
    check = "real images" if rep.real_images else "random input"
    console.print(
        f"wrote {rep.path} ({info.name}, {rep.height}x{rep.width} -> {rep.feat_dim}-d, "
        f"{rep.exporter} opset {rep.opset}, {rep.path.stat().st_size / 1e6:.1f} MB, {rep.seconds:.1f} s); "
        f"parity on {check}, batches "
        f"{list(rep.batch_sizes)}: min cosine {rep.min_cosine:.6f}, max abs diff {rep.max_abs_diff:.1e}"
    )
    if int8 is None:
        return
    try:
        train = get_dataset(calibration, root).train
        calib = [s.path for s in train[:: max(1, len(train) // 256)]][:256]
        q = quantize_int8(onnx, int8, calib, height=info.height, width=info.width)
    except (DatasetError, FileNotFoundError, ValueError, ExportError) as exc:
        _fail(str(exc))
        return
    console.print(
        f"wrote {q.path} (INT8, {q.calibration_images} calibration images from {calibration}, "
        f"{q.size_out / 1e6:.1f} MB, {q.seconds:.1f} s); measure its accuracy: "
        f"reidkit eval --backend onnx-int8 (see BENCHMARKS.md: INT8 can cost several mAP points)"
    )


@app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train_cmd(
    config: Annotated[Path, typer.Argument(help="Experiment YAML, e.g. configs/market1501/bot_mobilenetv2.yaml.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="Dotted overrides, e.g. solver.max_epochs=12.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")] = False,
) -> None:
    """Train a model (strong-baseline recipe); checkpoints every epoch, metrics to metrics.jsonl."""
    from reidkit.config import ConfigError
    from reidkit.datasets.base import DatasetError
    from reidkit.engine import train

    try:
        final = train(config, overrides or [], resume=resume)
    except (ConfigError, DatasetError, FileNotFoundError) as exc:
        _fail(str(exc))
        return
    console.print(f"final model: {final}  (use it with: reidkit eval --weights {final})")


def _register_search_commands() -> None:
    from reidkit.cli import cluster, ingest, pose, search, serve

    for module in (ingest, search, cluster, serve, pose):
        module.register(app)


_register_search_commands()


def main() -> None:  # pragma: no cover - console-script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
