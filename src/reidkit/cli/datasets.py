"""``reidkit datasets info`` and ``reidkit datasets make-occluded``: datasets on disk (:mod:`reidkit.datasets`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from reidkit.cli import common
from reidkit.cli.common import DatasetRoot, failing

datasets_app = typer.Typer(no_args_is_help=True, help="Inspect datasets on disk.")


@datasets_app.command("info")
def info_cmd(
    name: Annotated[str, typer.Argument(help="Dataset name, e.g. market1501.")],
    root: DatasetRoot = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the counts as JSON.")] = None,
) -> None:
    """Images / identities / cameras per split."""
    from reidkit.datasets import drop_junk, get_dataset, split_stats
    from reidkit.datasets.base import DatasetError
    from reidkit.io import write_json

    with failing(DatasetError, KeyError, ValueError):
        ds = get_dataset(name, root)
    table = Table(title=ds.name, caption=str(Path(ds.root).resolve()))
    for col in ("split", "images", "ids", "cameras"):
        table.add_column(col, justify="left" if col == "split" else "right")
    stats = ds.stats()
    junk_free = split_stats(drop_junk(ds.gallery))
    if junk_free.images != stats["gallery"].images:
        stats["gallery_without_junk"] = junk_free
    for split, s in stats.items():
        table.add_row(split, f"{s.images:,}", f"{s.ids:,}", f"{s.cameras}")
    common.console.print(table)
    if ds.notes:
        common.console.print(ds.notes)
    if json_out:
        write_json(json_out, {k: vars(v) for k, v in stats.items()})


@datasets_app.command("make-occluded")
def make_occluded_cmd(
    name: Annotated[str, typer.Argument(help="Dataset whose queries to occlude, e.g. market1501.")],
    out: Annotated[Path, typer.Option(help="Folder to write (query/, samples.csv, occlusion.csv, contact sheet).")],
    root: DatasetRoot = None,
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

    with failing(DatasetError, KeyError, ValueError):
        rep = make_occluded(get_dataset(name, root), out, seed=seed, fraction=(min_fraction, max_fraction), style=style)
    kinds = ", ".join(f"{k} {n:,}" for k, n in rep.kinds.items())
    common.console.print(
        f"wrote {rep.out}: {rep.queries:,} occluded queries ({kinds}; mean cover {100 * rep.mean_fraction:.1f} %), "
        f"gallery {rep.gallery:,} and train {rep.train:,} images by reference; contact sheet {rep.sheet}\n"
        f"evaluate with: reidkit eval --dataset folder --root {rep.out}",
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add the ``datasets`` group (info, make-occluded) to ``app``."""
    app.add_typer(datasets_app, name="datasets")
