"""``reidkit keypoints``: body keypoints of a whole dataset into the content-keyed cache (see
:class:`reidkit.research.DatasetKeypoints`). Added to the main app by :func:`register`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from reidkit.cli import common
from reidkit.cli.common import DatasetRoot, fail, failing


def keypoints_cmd(
    dataset: Annotated[str, typer.Option(help="Dataset name, e.g. market1501 (or a custom folder / CSV dataset).")],
    root: DatasetRoot = None,
    split: Annotated[list[str] | None, typer.Option(help="Splits to do (repeatable; default all).")] = None,
    cache: Annotated[
        Path | None, typer.Option(help="Cache file (default: <cache>/keypoints/<pose model>.sqlite).")
    ] = None,
    pose_model: Annotated[Path | None, typer.Option(help="MoveNet Lightning .tflite (default: installed).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Images in flight (one interpreter each).")] = 2,
    sheet: Annotated[
        Path | None, typer.Option(help="Also write a contact sheet of query crops with their keypoints.")
    ] = None,
    sheet_count: Annotated[int, typer.Option(min=1, help="Crops on the contact sheet.")] = 40,
) -> None:
    """Compute the body keypoints of a dataset once (resumable: a re-run computes only what is missing)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from reidkit.datasets.base import DatasetError
    from reidkit.imaging import ImageError
    from reidkit.pose import KeypointCacheError, PoseError
    from reidkit.research import SPLITS, DatasetKeypoints

    splits = split or list(SPLITS)
    bad = sorted(set(splits) - set(SPLITS))
    if bad:
        fail(f"--split must be one of {', '.join(SPLITS)}, got {', '.join(bad)}")
    with failing(DatasetError, KeyError, ValueError, PoseError, KeypointCacheError):
        job = DatasetKeypoints(dataset, root, splits=splits, cache=cache, pose_model=pose_model)
    t0 = time.perf_counter()
    with Progress(
        TextColumn("[bold]keypoints"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), console=common.console,
    ) as bar, failing(ImageError, KeypointCacheError, PoseError):  # fmt: skip
        task = bar.add_task("", total=len(job.paths), info="")

        def report(done: int, computed: int) -> None:
            dt = time.perf_counter() - t0
            bar.update(task, completed=done, info=f"{computed:,} computed, {computed / max(dt, 1e-9):.0f} img/s")

        done = job.run(workers, on_batch=report)
    common.console.print(
        f"{job.name}: {done.images:,} images ({', '.join(splits)}), {done.computed:,} computed "
        f"({done.images_per_s:.0f} img/s), {done.images - done.computed:,} from the cache; "
        f"mean keypoint score {done.mean_score:.2f}; cache {done.cache}",
        highlight=False,
        soft_wrap=True,
    )
    if sheet is not None:
        crops = job.sheet(sheet, sheet_count)
        common.console.print(f"wrote {sheet} ({len(crops)} crops)")


def register(app: typer.Typer) -> None:
    """Add ``keypoints`` to the ``reidkit`` app."""
    app.command("keypoints")(keypoints_cmd)
