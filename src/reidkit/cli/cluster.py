"""``reidkit cluster``: group a gallery (or a features file) into identities; see :mod:`reidkit.search.query.cluster`.

Wire it with ``register(app)`` on the main Typer app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from reidkit.cli import common
from reidkit.cli.common import GALLERY_HELP, K1, K2, fail, failing


def _print_scores(result: dict[str, Any]) -> None:
    """The summary of a features file's clustering (see ``score_features_clustering``)."""
    common.console.print(
        f"{result['features']}: {result['split']}, junk (pid -1) excluded, distractors (pid 0): "
        + ("each its own identity" if result["distractors"] == "own" else "excluded"),
        highlight=False,
        soft_wrap=True,
    )
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result["summary"].items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else f"{value:,}")
    common.console.print(table)


def _print_clusters(gallery: Path, out: Path, result: Any, sheets: list[Path], seconds: float) -> None:
    """The largest clusters of a gallery and what was written (see ``cluster_gallery_folder``)."""
    table = Table(title=f"{gallery}: {result.n_items:,} {result.level} in {len(result.clusters):,} clusters")
    for col in ("cluster", result.level, "crops", "cameras"):
        table.add_column(col, justify="left" if col == "cameras" else "right")
    for cl in result.clusters[:20]:
        table.add_row(str(cl.id), f"{cl.size:,}", f"{len(cl.records):,}", ", ".join(cl.cameras))
    if len(result.clusters) > 20:
        table.caption = f"... and {len(result.clusters) - 20:,} more"
    common.console.print(table)
    common.console.print(
        f"{len(result.noise):,} {result.level} left unclustered; {seconds:.1f} s. Wrote {len(sheets):,} sheets, "
        f"{out / 'index.html'} and {out / 'clusters.json'}"
    )


def cluster_cmd(
    gallery: Annotated[str | None, typer.Option(help=GALLERY_HELP + " (read only).", show_default=False)] = None,
    features: Annotated[
        Path | None, typer.Option(help="Features file (.npz): cluster its gallery and score it against the pids.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder: contact sheets, index.html, clusters.json (required with --gallery)."),
    ] = None,
    method: Annotated[
        Literal["dbscan", "mutual_knn", "agglomerative"], typer.Option(help="Clustering method.")
    ] = "dbscan",
    eps: Annotated[
        float | None, typer.Option(help="Neighbourhood radius (default 0.45 re-ranked, 0.15 cosine).")
    ] = None,
    min_samples: Annotated[int, typer.Option(help="DBSCAN: neighbours (self included) to be a core item.")] = 2,
    rerank: Annotated[
        bool, typer.Option("--rerank/--no-rerank", help="k-reciprocal Jaccard distance, or plain cosine.")
    ] = True,
    k1: K1 = 20,
    k2: K2 = 6,
    knn: Annotated[int, typer.Option(help="mutual_knn: neighbours per item.")] = 5,
    backend: Annotated[
        Literal["auto", "dense", "sparse"],
        typer.Option(help="N x N matrix or sparse eps-graph (auto: sparse where exact)."),
    ] = "auto",
    tracks: Annotated[
        bool, typer.Option("--tracks/--sightings", help="Cluster tracks (mean features) or single sightings.")
    ] = True,
    max_crops: Annotated[int, typer.Option(help="Crops per contact sheet, at most.")] = 64,
    split: Annotated[
        Literal["gallery", "all"], typer.Option(help="With --features: the gallery, or query + gallery.")
    ] = "gallery",
    distractors: Annotated[
        Literal["own", "exclude"],
        typer.Option(help="With --features: each distractor (pid 0) its own identity, or left out."),
    ] = "own",
) -> None:
    """Group a gallery into identities (DBSCAN on re-ranked distances) and write contact sheets.

    With --features, cluster a features file's gallery and score it (NMI, pairwise P/R/F; junk left out).
    """
    from reidkit.search.query.cluster import DEFAULT_EPS, cluster_gallery_folder, score_features_clustering
    from reidkit.search.storage import GalleryError

    if (gallery is None) == (features is None):
        fail("give exactly one of --gallery DIR or --features FILE.npz")
    eps = DEFAULT_EPS[rerank] if eps is None else eps
    options = dict(
        method=method, eps=eps, min_samples=min_samples, rerank=rerank, k1=k1, k2=k2, knn=knn, backend=backend
    )
    if features is not None:
        with failing(ValueError):  # FeatureFileError too
            result = score_features_clustering(features, out, split=split, distractors=distractors, **options)
        _print_scores(result)
        if out is not None:
            common.console.print(f"wrote {out / 'clusters.json'}")
        return
    if out is None:
        fail("--gallery needs --out DIR for the contact sheets")
    assert gallery is not None
    with failing(GalleryError, ValueError):
        clusters, sheets, seconds = cluster_gallery_folder(
            gallery, out, level="tracks" if tracks else "sightings", max_crops=max_crops, **options
        )
    if tracks and clusters.level == "sightings":
        common.console.print("[yellow]the gallery has no tracks: clustered individual sightings instead[/]")
    _print_clusters(gallery, out, clusters, sheets, seconds)


def register(app: typer.Typer) -> None:
    """Add the ``cluster`` command to ``app``."""
    app.command("cluster")(cluster_cmd)
