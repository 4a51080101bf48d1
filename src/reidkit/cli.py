"""The ``reidkit`` command line: every command is a thin call into the Python API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

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


@app.command("eval")
def eval_cmd(
    features: Annotated[Path, typer.Option(help="Saved features (.npz: qf, gf, q_pids, g_pids, q_camids, g_camids).")],
    rerank: Annotated[bool, typer.Option("--rerank", help="Also evaluate with k-reciprocal re-ranking.")] = False,
    metric: Annotated[Literal["cosine", "euclidean"], typer.Option(help="Distance between features.")] = "cosine",
    ap: Annotated[Literal["standard", "market"], typer.Option(help="non-interpolated, or Market-1501 trapezoid")] = "standard",
    k1: Annotated[int, typer.Option(help="Re-ranking k1.")] = 20,
    k2: Annotated[int, typer.Option(help="Re-ranking k2.")] = 6,
    lambda_value: Annotated[float, typer.Option("--lambda", help="Re-ranking lambda.")] = 0.3,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures as JSON.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the CMC curve to this image (e.g. cmc.png).")] = None,
) -> None:
    """Evaluate saved features: CMC rank-1/5/10, mAP and mINP (optionally re-ranked)."""
    from reidkit.evaluation import evaluate_features
    from reidkit.evaluation.report import plot_cmc, result_json, result_table
    from reidkit.io import FeatureFileError, load_features, write_json

    try:
        fs = load_features(features)
    except FeatureFileError as exc:
        _fail(str(exc))
        return
    results, seconds = {}, {}
    variants = {metric: False, f"{metric} + re-ranking": True} if rerank else {metric: False}
    for name, rr in variants.items():
        t0 = time.perf_counter()
        results[name] = evaluate_features(fs, metric, rr, ap, k1, k2, lambda_value)
        seconds[name] = time.perf_counter() - t0
    title = f"{features.name}: {len(fs.qf)} queries x {len(fs.gf)} gallery"
    console.print(result_table(results, title=title))
    for name, s in seconds.items():
        console.print(f"  {name}: {s:.2f} s", style="dim")
    if json_out:
        figures = {k: result_json(v) for k, v in results.items()}
        write_json(json_out, {"features": str(features), "ap": ap, "results": figures})
    if plot:
        plot_cmc(results, plot)


def main() -> None:  # pragma: no cover - console-script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
