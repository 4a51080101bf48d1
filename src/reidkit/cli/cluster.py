"""``reidkit cluster``: group a gallery (or a features file) into identities; see :mod:`reidkit.search.query.cluster`.

Wire it with ``register(app)`` on the main Typer app.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _features_mode(
    features: Path,
    out: Path | None,
    split: str,
    distractors: str,
    options: dict,
) -> None:
    """Cluster the gallery (or query + gallery) of a features file and score it against its pids."""
    from reidkit.io import FeatureFileError, load_features, write_json
    from reidkit.search.query.cluster import cluster_features, nmi, pairwise_f_score

    try:
        fs = load_features(features)
    except FeatureFileError as exc:
        _fail(str(exc))
        return
    f, pids = fs.gf, fs.g_pids
    paths = fs.g_paths
    if split == "all":
        f, pids = np.concatenate([fs.qf, f]), np.concatenate([fs.q_pids, pids])
        paths = None if paths is None or fs.q_paths is None else np.concatenate([fs.q_paths, paths])
    keep = pids != -1  # junk
    if distractors == "exclude":
        keep &= pids != 0
    f, pids = f[keep], pids[keep]
    paths = None if paths is None else paths[keep]
    truth = np.where(pids == 0, -1 - np.arange(len(pids)), pids)  # each distractor its own identity
    t0 = time.perf_counter()
    try:
        labels = cluster_features(f, **options)
    except ValueError as exc:
        _fail(str(exc))
        return
    seconds = time.perf_counter() - t0
    ps = pairwise_f_score(truth, labels)
    summary = {
        "items": len(f),
        "identities": len(np.unique(pids[pids > 0])),
        "distractors": int((pids == 0).sum()),
        "clusters": int(labels.max(initial=-1)) + 1,
        "noise": int((labels < 0).sum()),
        "nmi": nmi(truth, labels),
        "pair_precision": ps.precision,
        "pair_recall": ps.recall,
        "pair_f": ps.f,
        "seconds": seconds,
    }
    console.print(
        f"{features}: {split}, junk (pid -1) excluded, distractors (pid 0): "
        + ("each its own identity" if distractors == "own" else "excluded"),
        highlight=False,
        soft_wrap=True,
    )
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else f"{value:,}")
    console.print(table)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        result = {
            "features": str(features),
            "split": split,
            "distractors": distractors,
            "options": options,
            "summary": summary,
            "labels": labels.tolist(),
            "pids": pids.tolist(),
        }
        if paths is not None:
            result["paths"] = [str(p) for p in paths]
        write_json(out / "clusters.json", result)
        console.print(f"wrote {out / 'clusters.json'}")


def _gallery_mode(gallery: Path, out: Path, tracks: bool, max_crops: int, options: dict) -> None:
    """Cluster a gallery's tracks or sightings; write contact sheets, index.html and clusters.json."""
    from reidkit.io import write_json
    from reidkit.search.query.cluster import cluster_gallery, contact_sheets
    from reidkit.search.storage import Gallery, GalleryError

    try:
        g = Gallery.open(gallery, create=False, read_only=True)
    except GalleryError as exc:
        _fail(str(exc))
        return
    with g:
        t0 = time.perf_counter()
        try:
            result = cluster_gallery(g, level="tracks" if tracks else "sightings", **options)
        except ValueError as exc:
            _fail(str(exc))
            return
        seconds = time.perf_counter() - t0
        if tracks and result.level == "sightings":
            console.print("[yellow]the gallery has no tracks: clustered individual sightings instead[/]")
        sheets = contact_sheets(result, g, out, max_crops=max_crops)
    data = {"gallery": str(gallery), "options": options, "seconds": seconds, **result.to_dict()}
    write_json(out / "clusters.json", data)
    table = Table(title=f"{gallery}: {result.n_items:,} {result.level} in {len(result.clusters):,} clusters")
    for col in ("cluster", result.level, "crops", "cameras"):
        table.add_column(col, justify="left" if col == "cameras" else "right")
    for cl in result.clusters[:20]:
        table.add_row(str(cl.id), f"{cl.size:,}", f"{len(cl.records):,}", ", ".join(cl.cameras))
    if len(result.clusters) > 20:
        table.caption = f"... and {len(result.clusters) - 20:,} more"
    console.print(table)
    console.print(
        f"{len(result.noise):,} {result.level} left unclustered; {seconds:.1f} s. Wrote {len(sheets):,} sheets, "
        f"{out / 'index.html'} and {out / 'clusters.json'}"
    )


def register(app: typer.Typer) -> None:
    """Add the ``cluster`` command to ``app``."""

    @app.command("cluster")
    def cluster_cmd(
        gallery: Annotated[Path | None, typer.Option(help="Gallery folder to cluster (read only).")] = None,
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
        k1: Annotated[int, typer.Option(help="Re-ranking k1.")] = 20,
        k2: Annotated[int, typer.Option(help="Re-ranking k2.")] = 6,
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
        if (gallery is None) == (features is None):
            _fail("give exactly one of --gallery DIR or --features FILE.npz")
            return
        from reidkit.search.query.cluster import DEFAULT_EPS

        options = {
            "method": method,
            "eps": DEFAULT_EPS[rerank] if eps is None else eps,
            "min_samples": min_samples,
            "rerank": rerank,
            "k1": k1,
            "k2": k2,
            "knn": knn,
            "backend": backend,
        }
        if features is not None:
            _features_mode(features, out, split, distractors, options)
            return
        if out is None:
            _fail("--gallery needs --out DIR for the contact sheets")
            return
        assert gallery is not None
        _gallery_mode(gallery, out, tracks, max_crops, options)
