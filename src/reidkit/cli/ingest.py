"""``reidkit ingest``: plan the sources (:func:`reidkit.search.api.plan_ingest`), load the model, ingest
them (:func:`reidkit.search.api.run_ingest`) with a progress bar per source, print what each did."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from reidkit.cli.common import Backend, GalleryUri, JsonOut, Model, Threads, Weights, console, failing, warn
from reidkit.io import write_json
from reidkit.search import api
from reidkit.search.api import ApiError
from reidkit.search.ingest.report import explain_times
from reidkit.search.storage.records import redact_uri


def register(app: typer.Typer) -> None:
    """Add the ``ingest`` command to ``app``."""
    app.command("ingest")(ingest_cmd)


def ingest_cmd(
    sources: Annotated[
        list[str] | None,
        typer.Argument(
            help="Video files, stream URLs or folders of photos (a folder of subfolders: one camera each). "
            "With --images: folders of person crops; with --sequence: folders of video frames. "
            "Streams are ingested all at once, in real time, until Ctrl-C / SIGTERM (or --duration).",
            show_default=False,
        ),
    ] = None,
    gallery: GalleryUri = ...,  # created when new or empty
    cameras: Annotated[
        Path | None, typer.Option(help="Cameras file (YAML: name, uri, optional fps cap and transport per camera).")
    ] = None,
    json_out: JsonOut = None,
    duration: Annotated[
        float | None, typer.Option(min=0.1, help="Stop live streams after this many seconds (default: until stopped).")
    ] = None,
    camera: Annotated[str | None, typer.Option(help="Camera name (default: from the file or folder name).")] = None,
    detector: Annotated[
        str | None,
        typer.Option(help="Person detector: ssd-tiled, ssd, hog or yolo (default: ssd-tiled when installed, else "
                          "hog; ssd-tiled adds tiles for large frames, group splitting and a keypoint check to ssd)."),
    ] = None,
    detector_model: Annotated[
        Path | None,
        typer.Option(help="Detector model: SSD model folder/.pb, or the YOLO weights file (yolo needs it)."),
    ] = None,
    stride: Annotated[int, typer.Option(min=1, help="Process every n-th frame.")] = 1,
    max_frames: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many frames per source (a re-run continues).")
    ] = None,
    weights: Weights = None,
    model: Model = None,
    backend: Backend = "torch",
    replace: Annotated[
        bool, typer.Option("--replace", help="Remove and re-ingest sources already in the gallery (changed or not).")
    ] = False,
    images: Annotated[
        bool, typer.Option("--images", help="Each image is a person crop (e.g. Market-1501 bounding_box_test).")
    ] = False,
    sequence: Annotated[
        bool,
        typer.Option(
            "--sequence", help="Folders hold frames of a video (tracked across frames), not photos (each on its own)."
        ),
    ] = False,
    time_pattern: Annotated[
        str | None,
        typer.Option(help="Photo times from file names, a strptime format, e.g. 'IMG_%Y%m%d_%H%M%S' (after EXIF)."),
    ] = None,
    copy_crops: Annotated[
        bool, typer.Option("--copy-crops", help="With --images: copy the crops into the gallery (default: reference).")
    ] = False,
    start_time: Annotated[
        str | None, typer.Option(help="Time of the first frame: seconds or ISO 8601 (default 0 / wall clock).")
    ] = None,
    fps: Annotated[
        float | None,
        typer.Option(help="Frame rate for timestamps (videos: override; --images: default 25; --sequence: 1)."),
    ] = None,
    crops_per_track: Annotated[int, typer.Option(min=1, help="Best crops kept per track.")] = 4,
    batch_size: Annotated[int, typer.Option(min=1, help="Crops per embedding batch.")] = 64,
    threads: Threads = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Spread the sources over a Ray cluster: HOST:PORT, auto (this machine's cluster) or local "
            "(a Ray started here). Needs a milvus:// gallery.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="With --ray: workers (default: one per CPU of the cluster).")
    ] = None,
    index: Annotated[
        str | None,
        typer.Option(help="A new gallery's vector index: flat (exact; the default), hnsw, ivf, ivf-sq8 or ivf-sq4 "
                     "(millions of sightings: see docs/scaling.md).", show_default=False),
    ] = None,
) -> None:
    """Detect, track and embed the people in each source and add them to a gallery (resumable).

    A folder of pictures is read as photos: every person detected in every picture becomes a
    sighting, and a re-run adds only new pictures. Its subfolders, if they hold pictures, are cameras.
    The command exits non-zero when a source could not be ingested (after the others are done).
    """
    with failing(ApiError):
        plan = api.plan_ingest(
            sources or [], cameras=cameras, images=images, sequence=sequence, detector=detector,
            detector_model=detector_model, start_time=start_time, time_pattern=time_pattern, camera=camera,
            stride=stride, max_frames=max_frames,
            fps=fps, crops_per_track=crops_per_track, copy_crops=copy_crops, replace=replace, batch_size=batch_size,
        )  # fmt: skip
        model_ = api.load_model(model, weights, backend=backend, batch_size=batch_size, threads=threads,
                                embedder=ray is None)  # fmt: skip
        if ray is not None:
            with stop_on_signals() as stop:
                summary = api.run_ingest_ray(gallery, plan, model, weights, address=ray, workers=workers,
                                             backend=backend, threads=threads, stop=stop, duration=duration,
                                             on_event=tell_ray)  # fmt: skip
        else:
            with ProgressBars() as bars, stop_on_signals() as stop:
                summary = api.run_ingest(gallery, plan, model_, progress=bars, stop=stop, duration=duration,
                                         index=index)  # fmt: skip
    time_warnings = explain_times(summary.reports, plan.options.get("start_time"))  # offsets, copied mtimes
    if json_out is not None:
        write_json(json_out, {"gallery": redact_uri(gallery), "model": model_.info.name,
                              "detector": plan.detector_name, "reports": [asdict(r) for r in summary.reports],
                              "errors": summary.errors})  # fmt: skip
    for err in summary.errors:
        console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    found_by = f", detector {plan.detector_name}" if plan.detector_name else ""
    console.print(report_table(summary, f"ingest into {redact_uri(gallery)} (model {model_.info.name}{found_by})"))
    if summary.restarts:
        warn(f"{len(summary.restarts)} job(s) restarted after their worker died (resumed, no sighting twice)")
    if any(r.mode == "photos" for r in summary.reports):
        console.print("photos: frames = pictures ingested, dets = people found (each a sighting)", style="dim")
    for r in summary.reports:
        if r.unreadable:
            names = ", ".join(r.unreadable[:10]) + (" ..." if len(r.unreadable) > 10 else "")
            warn(f"{Path(r.uri).name}: skipped {len(r.unreadable)} unreadable picture(s): {names}")
    for line in time_warnings:
        warn(line)
    if summary.errors:
        n = len(plan.jobs) + len(plan.live)
        console.print(f"[bold red]{len(summary.errors)} of {n} source(s) failed:[/] " + "; ".join(summary.errors),
                      highlight=False, soft_wrap=True)  # fmt: skip
        raise typer.Exit(2)


def report_table(summary: api.IngestSummary, title: str) -> Table:
    """One row per ingested source: what it is, how far it got, and how fast (live cameras: one row each
    in a table of their own, with the figures of every stage)."""
    caption = f"gallery: {summary.sightings:,} sightings, {summary.tracks:,} tracks, {summary.sources:,} sources"
    table = Table(title=title, caption=caption)
    live = [r for r in summary.reports if r.live is not None]
    if live:
        for col in ("camera", "status"):
            table.add_column(col, overflow="fold")
        for col in LIVE_COLUMNS:
            table.add_column(col, justify="right", no_wrap=True)
        for r in live:
            s = r.live
            lag = "-" if s["mean_lag_s"] is None else f"{s['mean_lag_s']:.2f} / {s['max_lag_s']:.2f}"
            table.add_row(r.camera, r.status, *(f"{s[k]:,}" for k in LIVE_COLUMNS[:-2]), lag, f"{s['offline_s']:.0f}")
        if len(live) == len(summary.reports):
            return table
        console.print(table)
        table = Table(caption=caption)
    for col in ("source", "camera", "status", "times"):
        table.add_column(col, overflow="fold")
    for col in ("frames", "dets", "tracks", "crops", "s", "frames/s"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in summary.reports:
        if r.live is None:
            table.add_row(*r.row().values())
    return table


def tell_ray(kind: str, info: dict[str, Any]) -> None:
    """One line per event of an ingest on Ray: a job started or ended on a worker, a worker died."""
    job, where = info["job"].split(":", 1)[1], f"worker {info['pid']} on {info['host']}"
    if kind == "started":
        console.print(f"[dim]{where}:[/] {job}", highlight=False, soft_wrap=True)
    elif kind == "done":
        for r in info["reports"]:
            console.print(f"[dim]{where}:[/] {r.camera or job} {r.status}: {r.frames:,} frames, {r.crops:,} crops",
                          highlight=False, soft_wrap=True)  # fmt: skip
    else:
        again = "given to another worker" if kind == "died" else "given up"
        console.print(f"[yellow]{where} died ({info.get('error', '')}): {job} {again}[/]", highlight=False,
                      soft_wrap=True)  # fmt: skip


# live cameras: frames read from the stream, dropped unprocessed, skipped by the motion gate, detected;
# tracks and crops stored; mean / max lag (read -> detected, s); seconds offline
LIVE_COLUMNS = ("read", "dropped", "gated", "detected", "tracks", "crops", "lag s", "offline s")


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event that SIGINT or SIGTERM sets (the ingest then stops cleanly); the old handlers come back after."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set():  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        console.print(f"[yellow]{signal.Signals(signum).name}: stopping (closing open tracks)...[/]")
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class ProgressBars:
    """A rich progress bar per source, fed by ingest's progress callback (:class:`Progress`)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bars

        self.bars = Bars(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                         console=console)  # fmt: skip
        self.tasks: dict[str, tuple[Any, float]] = {}

    def __enter__(self) -> ProgressBars:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def __call__(self, p: Any) -> None:
        if p.label not in self.tasks:
            self.tasks[p.label] = (self.bars.add_task(p.label, total=p.total, rate="", info=""), time.perf_counter())
        task, t0 = self.tasks[p.label]
        dt = time.perf_counter() - t0
        rate = f"{p.done / dt:6.1f} {p.unit}/s" if dt > 0 else ""
        self.bars.update(task, completed=p.done, total=p.total, rate=rate, info=p.info)
