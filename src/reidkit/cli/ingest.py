"""``reidkit ingest``: videos, streams, photo folders or crop folders into a searchable gallery.

See :mod:`reidkit.search.ingest.pipeline` and, for folders of full-scene pictures, :mod:`reidkit.search.ingest.photos`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add the ``ingest`` command to ``app``."""
    app.command("ingest")(ingest_cmd)


def ingest_cmd(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Video files, stream URLs or folders of photos (a folder of subfolders: one camera each). "
            "With --images: folders of person crops; with --sequence: folders of video frames."
        ),
    ],
    gallery: Annotated[Path, typer.Option("--gallery", "-g", help="Gallery folder (created when new or empty).")],
    camera: Annotated[str | None, typer.Option(help="Camera name (default: from the file or folder name).")] = None,
    detector: Annotated[
        str | None, typer.Option(help="Person detector: ssd, hog or yolo (default: ssd when installed, else hog).")
    ] = None,
    detector_model: Annotated[
        Path | None,
        typer.Option(help="Detector model: SSD model folder/.pb, or the YOLO weights file (yolo needs it)."),
    ] = None,
    stride: Annotated[int, typer.Option(min=1, help="Process every n-th frame.")] = 1,
    max_frames: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many frames per source (a re-run continues).")
    ] = None,
    weights: Annotated[
        Path | None, typer.Option(help="Re-id checkpoint: a reidkit model file or a torchreid file (default: shipped).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Architecture, e.g. osnet_x0_25 (for torchreid files).")] = None,
    backend: Annotated[str, typer.Option(help="Embedding backend: torch or onnx.")] = "torch",
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
    threads: Annotated[int | None, typer.Option(help="Inference threads (default: all cores).")] = None,
) -> None:
    """Detect, track and embed the people in each source and add them to a gallery (resumable).

    A folder of pictures is read as photos: every person detected in every picture becomes a
    sighting, and a re-run adds only new pictures. Its subfolders, if they hold pictures, are cameras.
    The command exits non-zero when a source could not be ingested (after the others are done).
    """
    from reidkit.extract import make_embedder
    from reidkit.imaging import ImageError, PhotoError
    from reidkit.models.weights import WeightsMismatchError
    from reidkit.search.ingest.detect import DETECTORS, build_detector
    from reidkit.search.ingest.photos import TimePattern, camera_folders, find_sidecar
    from reidkit.search.ingest.pipeline import IngestReport, default_detector, ingest
    from reidkit.search.ingest.sources import SourceError, is_stream_uri, parse_timestamp
    from reidkit.search.storage import Gallery, GalleryError

    if backend not in ("torch", "onnx"):
        _fail(f"--backend must be torch or onnx, got {backend!r}")
    if images and sequence:
        _fail("--images (folders of person crops) and --sequence (folders of video frames) exclude each other")
    if time_pattern is not None:
        try:
            TimePattern(time_pattern)
        except ValueError as exc:
            _fail(f"--time-pattern: {exc}")
    jobs: list[tuple[str, Path | None]] = []  # (source, sidecar of a camera folder)
    for s in sources:
        p = Path(s.removeprefix("file://"))
        if images and not p.is_dir():
            _fail(f"{s}: with --images each source must be a folder of person crops")
        if not is_stream_uri(s) and not p.exists():
            _fail(f"{s}: no such file or folder")
        if p.is_dir() and not images and not is_stream_uri(s):
            jobs += [(str(d), find_sidecar(d)) for d in camera_folders(p)]
        else:
            jobs.append((s, None))
    t0: float | None = None
    if start_time is not None:
        try:
            t0 = parse_timestamp(start_time)
        except ValueError as exc:
            _fail(f"--start-time: {exc}")
    det = None
    if not images:
        name = detector or default_detector()
        if name not in DETECTORS:
            _fail(f"unknown detector {name!r}; choose from {', '.join(sorted(DETECTORS))}")
        opts = {}
        if detector_model is not None:
            opts["weights" if name == "yolo" else "model_path"] = detector_model
        try:
            det = build_detector(name, **opts)
        except (FileNotFoundError, ImportError, TypeError, ValueError) as exc:
            _fail(f"detector {name}: {exc}")
    try:
        embedder, info = make_embedder(model, weights, backend, batch_size=batch_size, threads=threads)  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError, WeightsMismatchError) as exc:
        _fail(str(exc))
        return
    try:
        g = Gallery.open(gallery)
    except GalleryError as exc:
        _fail(str(exc))
        return

    reports: list[IngestReport] = []
    errors: list[str] = []
    try:
        for s, sidecar in jobs:
            try:
                reports.append(
                    ingest(
                        g,
                        s,
                        embedder,
                        camera=camera,
                        detector=det,
                        stride=stride,
                        max_frames=max_frames,
                        start_time=t0,
                        fps=fps,
                        crops_per_track=crops_per_track,
                        images_mode=images,
                        sequence=sequence,
                        time_format=time_pattern,
                        sidecar=sidecar,
                        copy_crops=copy_crops,
                        replace=replace,
                        batch_size=batch_size,
                    )
                )
            except (SourceError, GalleryError, ImageError, PhotoError, ValueError) as exc:
                msg = str(exc)
                errors.append(msg if msg.startswith(s) else f"{s}: {msg}")
                console.print(f"[bold red]error:[/] {errors[-1]}", highlight=False, soft_wrap=True)
                continue
            if reports[-1].message and reports[-1].status == "truncated":
                errors.append(reports[-1].message)
        totals = f"{len(g):,} sightings, {len(g.tracks()):,} tracks, {len(g.sources()):,} sources"
    finally:
        g.close()

    table = Table(title=f"ingest into {gallery} ({info.name})", caption=f"gallery: {totals}")
    for col in ("source", "camera", "status", "times"):
        table.add_column(col, overflow="fold")
    for col in ("frames", "dets", "tracks", "crops", "s", "frames/s"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in reports:
        status = r.status + (f" {r.mode}" if r.mode in ("photos", "sequence") else "")
        status += f" (resumed after {r.resumed_from})" if r.resumed_from is not None else ""
        status += " (replaced)" if r.replaced else ""
        if r.already:
            status += f" ({r.already:,} already in)"
        if r.unreadable:
            status += f" ({len(r.unreadable)} unreadable)"
        table.add_row(
            Path(r.uri).name if not is_stream_uri(r.uri) else r.uri,
            r.camera,
            status,
            r.time_from or ("-" if r.mode == "photos" else "clock" if is_stream_uri(r.uri) else "start + frame/fps"),
            f"{r.frames:,}",
            f"{r.detections:,}",
            f"{r.tracks:,}",
            f"{r.crops:,}",
            f"{r.seconds:.1f}",
            f"{r.fps:.1f}",
        )
    console.print(table)
    if any(r.mode == "photos" for r in reports):
        console.print("photos: frames = pictures ingested, dets = people found (each a sighting)", style="dim")
    for r in reports:
        if r.unreadable:
            names = ", ".join(r.unreadable[:10]) + (" ..." if len(r.unreadable) > 10 else "")
            console.print(
                f"[yellow]warning:[/] {Path(r.uri).name}: skipped {len(r.unreadable)} unreadable picture(s): {names}",
                highlight=False,
                soft_wrap=True,
            )
    if errors:
        console.print(
            f"[bold red]{len(errors)} of {len(jobs)} source(s) failed:[/] " + "; ".join(errors),
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
