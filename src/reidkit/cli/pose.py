"""``reidkit keypoints``: body keypoints of a whole dataset into the content-keyed cache (see reidkit.pose)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()
SPLITS = ("train", "query", "gallery")


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def keypoints_cmd(
    dataset: Annotated[str, typer.Option(help="Dataset name, e.g. market1501 (or a custom folder / CSV dataset).")],
    root: Annotated[Path | None, typer.Option(help="Folder holding the dataset (default $REIDKIT_DATA).")] = None,
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

    from reidkit.datasets import get_dataset
    from reidkit.datasets.base import DatasetError
    from reidkit.imaging import ImageError
    from reidkit.pose import KeypointCache, KeypointCacheError, MoveNet, PoseError, default_cache_path, keypoints_for
    from reidkit.pose.sheet import keypoint_sheet

    splits = split or list(SPLITS)
    bad = sorted(set(splits) - set(SPLITS))
    if bad:
        _fail(f"--split must be one of {', '.join(SPLITS)}, got {', '.join(bad)}")
    try:
        ds = get_dataset(dataset, root)
        pose = MoveNet(pose_model)
        kc = KeypointCache(cache or default_cache_path(pose.id), pose.id)
    except (DatasetError, KeyError, ValueError, PoseError, KeypointCacheError) as exc:
        _fail(str(exc).strip("'\""))
        return
    paths = list(dict.fromkeys(str(s.path) for sp in splits for s in getattr(ds, sp)))
    before = len(kc)
    t0 = time.perf_counter()
    with Progress(
        TextColumn("[bold]keypoints"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), console=console,
    ) as bar:  # fmt: skip
        task = bar.add_task("", total=len(paths), info="")

        def report(done: int, computed: int) -> None:
            dt = time.perf_counter() - t0
            bar.update(task, completed=done, info=f"{computed:,} computed, {computed / max(dt, 1e-9):.0f} img/s")

        try:
            kp, _ = keypoints_for(paths, pose, kc, workers=workers, on_batch=report)
        except (ImageError, KeypointCacheError, PoseError) as exc:
            _fail(str(exc))
            return
    dt = time.perf_counter() - t0
    computed = len(kc) - before
    console.print(
        f"{ds.name}: {len(paths):,} images ({', '.join(splits)}), {computed:,} computed "
        f"({computed / dt if computed else 0:.0f} img/s), {len(paths) - computed:,} from the cache; "
        f"mean keypoint score {kp[:, :, 2].mean():.2f}; cache {kc.path}",
        highlight=False,
        soft_wrap=True,
    )
    kc.close()
    if sheet is not None:
        idx = {p: i for i, p in enumerate(paths)}
        step = max(1, len(paths) // sheet_count)  # spread over the dataset (many identities)
        sub = paths[::step][:sheet_count]
        keypoint_sheet(sub, kp[[idx[p] for p in sub]], sheet)
        console.print(f"wrote {sheet} ({len(sub)} crops)")


def register(app: typer.Typer) -> None:
    """Add ``keypoints`` to the ``reidkit`` app."""
    app.command("keypoints")(keypoints_cmd)
