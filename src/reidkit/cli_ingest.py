"""``reidkit ingest``: videos, streams or image folders into a searchable gallery (see reidkit.search.ingest)."""

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
        list[str], typer.Argument(help="Video files, stream URLs or image folders (with --images: folders of crops).")
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
    copy_crops: Annotated[
        bool, typer.Option("--copy-crops", help="With --images: copy the crops into the gallery (default: reference).")
    ] = False,
    start_time: Annotated[
        str | None, typer.Option(help="Time of the first frame: seconds or ISO 8601 (default 0 / wall clock).")
    ] = None,
    fps: Annotated[
        float | None, typer.Option(help="Frame rate for timestamps (videos: override; --images: default 25).")
    ] = None,
    crops_per_track: Annotated[int, typer.Option(min=1, help="Best crops kept per track.")] = 4,
    batch_size: Annotated[int, typer.Option(min=1, help="Crops per embedding batch.")] = 64,
    threads: Annotated[int | None, typer.Option(help="Inference threads (default: all cores).")] = None,
) -> None:
    """Detect, track and embed the people in each source and add them to a gallery (resumable)."""
    from reidkit.embed import ImageError
    from reidkit.extract import make_embedder
    from reidkit.models.weights import WeightsMismatchError
    from reidkit.search import Gallery, GalleryError
    from reidkit.search.detect import DETECTORS, build_detector
    from reidkit.search.ingest import IngestReport, default_detector, ingest
    from reidkit.search.sources import SourceError, is_stream_uri, parse_timestamp

    if backend not in ("torch", "onnx"):
        _fail(f"--backend must be torch or onnx, got {backend!r}")
    for s in sources:
        p = Path(s.removeprefix("file://"))
        if images and not p.is_dir():
            _fail(f"{s}: with --images each source must be a folder of person crops")
        if not is_stream_uri(s) and not p.exists():
            _fail(f"{s}: no such file or folder")
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
        for s in sources:
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
                        copy_crops=copy_crops,
                        replace=replace,
                        batch_size=batch_size,
                    )
                )
            except (SourceError, GalleryError, ImageError, ValueError) as exc:
                errors.append(f"{s}: {exc}")
                console.print(f"[bold red]error:[/] {errors[-1]}", highlight=False, soft_wrap=True)
        totals = f"{len(g):,} sightings, {len(g.tracks()):,} tracks, {len(g.sources()):,} sources"
    finally:
        g.close()

    table = Table(title=f"ingest into {gallery} ({info.name})", caption=f"gallery: {totals}")
    for col in ("source", "camera", "status"):
        table.add_column(col, overflow="fold")
    for col in ("frames", "dets", "tracks", "crops", "s", "frames/s"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in reports:
        status = r.status + (f" (resumed after {r.resumed_from})" if r.resumed_from is not None else "")
        status += " (replaced)" if r.replaced else ""
        table.add_row(
            Path(r.uri).name if not is_stream_uri(r.uri) else r.uri,
            r.camera,
            status,
            f"{r.frames:,}",
            f"{r.detections:,}",
            f"{r.tracks:,}",
            f"{r.crops:,}",
            f"{r.seconds:.1f}",
            f"{r.fps:.1f}",
        )
    console.print(table)
    if errors:
        raise typer.Exit(2)
