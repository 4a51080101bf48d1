"""``reidkit search`` and ``reidkit calibrate``: thin commands over :mod:`reidkit.search.query.search`,
:mod:`reidkit.search.query.report` and :mod:`reidkit.search.query.calibrate`. Added to the main app by
:func:`register`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

console = Console()


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _time(value: str) -> float:
    """Seconds from ``"12.5"`` or an ISO-8601 date-time (naive means UTC)."""
    from reidkit.search.storage.records import to_seconds

    try:
        return float(value)
    except ValueError:
        return to_seconds(value)


def _model(model: str | None, weights: Path | None, need: bool, **kw: Any) -> tuple[Any, Any]:
    """``(embedder, info)`` for the query pictures (``need``), else ``(None, info or None)``."""
    from reidkit.extract import make_embedder
    from reidkit.imaging import ImageError
    from reidkit.models.weights import WeightsMismatchError
    from reidkit.models.zoo import load_model

    try:
        if need:
            return make_embedder(model, weights, **kw)
        if model is None and weights is None:
            try:
                return None, load_model()[1]
            except FileNotFoundError:
                return None, None  # no shipped model: the default threshold applies
        return None, load_model(model, weights)[1]
    except (FileNotFoundError, ValueError, WeightsMismatchError, ImageError) as exc:
        _fail(str(exc))
        raise  # unreachable


def search_cmd(
    pictures: Annotated[
        list[Path] | None, typer.Argument(help="Pictures of the person (the same as --image).", show_default=False)
    ] = None,
    gallery: Annotated[Path, typer.Option(help="Gallery folder (built by reidkit ingest).")] = ...,  # required
    image: Annotated[
        list[Path] | None, typer.Option("--image", help="Picture of the person (repeat for several).")
    ] = None,
    track: Annotated[int | None, typer.Option("--track", help="Search for a gallery track (its id).")] = None,
    top: Annotated[int, typer.Option("--top", help="Candidates taken from the gallery (k).")] = 200,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="Skip k-reciprocal re-ranking.")] = False,
    threshold: Annotated[
        float | None, typer.Option(help="Match threshold on cosine similarity (default: the model's calibrated one).")
    ] = None,
    z_threshold: Annotated[
        float | None,
        typer.Option(help="Match threshold on the similarity standardised against the gallery (default: calibrated)."),
    ] = None,
    no_adaptive: Annotated[
        bool, typer.Option("--no-adaptive", help="Cosine threshold only (no standing-out-from-the-gallery test).")
    ] = False,
    camera: Annotated[list[str] | None, typer.Option("--camera", help="Only these cameras (repeatable).")] = None,
    since: Annotated[str | None, typer.Option(help="Only from this time (seconds or ISO-8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Only until this time (seconds or ISO-8601).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")] = None,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML report.")] = None,
    weights: Annotated[
        Path | None, typer.Option(help="Model that built the gallery (default: the shipped default model).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Architecture, e.g. osnet_x0_25 (for torchreid files).")] = None,
    fuse: Annotated[
        Literal["mean", "max"], typer.Option(help="Several pictures: mean feature, or best match of any.")
    ] = "mean",
    no_frames: Annotated[bool, typer.Option("--no-frames", help="HTML: leave out the full video frames.")] = False,
    review: Annotated[
        int, typer.Option("--review", help="Also show this many closest non-matches, for review (0: off).")
    ] = 8,
) -> None:
    """Find a person in a gallery: appearances per camera in time order (table, JSON, HTML)."""
    from reidkit.imaging import ImageError
    from reidkit.search.query.report import photo_times, print_result, save_json, write_html
    from reidkit.search.query.search import search_person
    from reidkit.search.storage import Gallery, GalleryError

    images = list(pictures or []) + list(image or [])
    if bool(images) == (track is not None):
        _fail("give the person to search for: pictures (PATH ... or --image PATH) or --track ID, not both")
    for p in images:
        if not p.is_file():
            _fail(f"{p}: no such image file")
    if top < 1:
        _fail(f"--top must be at least 1, got {top}")
    if review < 0:
        _fail(f"--review must be at least 0, got {review}")
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        _fail(f"--threshold is a cosine similarity in [-1, 1], got {threshold}")
    try:
        time_range = None
        if since is not None or until is not None:
            lo = None if since is None else _time(since)
            hi = None if until is None else _time(until)
            if lo is not None and hi is not None and hi < lo:
                _fail(f"--until ({until}) is before --since ({since})")
            time_range = (lo, hi)
    except GalleryError as exc:
        _fail(str(exc))
        return
    if not (gallery / "gallery.db").is_file():
        _fail(f"{gallery} is not a reidkit gallery (no gallery.db); build one with reidkit ingest")
    embedder, info = _model(model, weights, need=bool(images))
    try:
        with Gallery.open(gallery, create=False, read_only=True) as g:
            if len(g) == 0:
                _fail(f"gallery {gallery} is empty")
            result = search_person(
                g,
                embedder,
                [str(p) for p in images] if images else None,
                track_id=track,
                k=top,
                rerank=not no_rerank,
                threshold=threshold,
                z_threshold=z_threshold,
                adaptive=not no_adaptive,
                model_info=info,
                cameras=camera or None,
                time_range=time_range,
                fuse=fuse,
                review=review,
            )
    except GalleryError as exc:
        hint = (
            " (was the gallery built with another model? pass its --weights/--model)"
            if "dimensions" in str(exc)
            else ""
        )
        _fail(f"{exc}{hint}")
        return
    except ImageError as exc:
        _fail(str(exc))
        return
    print_result(result, console)
    if result.time_from:
        console.print(photo_times(result), highlight=False, soft_wrap=True)
    if "default" in result.threshold_source:
        console.print(
            "note: uncalibrated default match threshold(s) in use; "
            "run `reidkit calibrate` for this model (or pass --threshold / --z-threshold)",
            style="yellow",
        )
    if json_out:
        save_json(result, json_out)
        console.print(f"wrote {json_out}")
    if html_out:
        write_html(result, html_out, frames=not no_frames)
        console.print(f"wrote {html_out}")


def calibrate_cmd(
    weights: Annotated[
        Path | None, typer.Option(help="Checkpoint to calibrate (default: the shipped default model).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Architecture, e.g. osnet_x0_25 (for torchreid files).")] = None,
    dataset: Annotated[str, typer.Option(help="Dataset whose TRAINING split calibrates.")] = "market1501",
    root: Annotated[Path | None, typer.Option(help="Folder holding the dataset (default $REIDKIT_DATA).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="JSON file to write (default: calibration_<weights stem>.json here).")
    ] = None,
    ids: Annotated[int, typer.Option(help="Training identities to use (0: all).")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the identity sample.")] = 0,
    method: Annotated[
        Literal["f1", "precision"], typer.Option(help="Maximise F1, or reach --target-precision.")
    ] = "f1",
    target_precision: Annotated[float, typer.Option(help="With --method precision.")] = 0.9,
    test: Annotated[bool, typer.Option("--test/--no-test", help="Also check the threshold on the test split.")] = True,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 32,
    threads: Annotated[int | None, typer.Option(help="Inference threads (default: all cores).")] = None,
) -> None:
    """Calibrate a model's match thresholds (cosine similarity and z) for `reidkit search`."""
    from rich.table import Table

    from reidkit.datasets.base import DatasetError
    from reidkit.imaging import ImageError
    from reidkit.search.query.calibrate import calibrate, calibration_file_name, save_calibration

    if ids < 0:
        _fail(f"--ids must be >= 0, got {ids}")
    if not 0.0 < target_precision <= 1.0:
        _fail(f"--target-precision must be in (0, 1], got {target_precision}")
    embedder, info = _model(model, weights, need=True, batch_size=batch_size, threads=threads)
    try:
        record = calibrate(
            embedder,
            dataset,
            root=root,
            n_ids=ids or None,
            seed=seed,
            method=method,
            target_precision=target_precision,
            test=test,
            model_info=info,
            progress=True,
        )
    except (DatasetError, ImageError, ValueError) as exc:
        _fail(str(exc))
        return
    path = out or Path(calibration_file_name(info.source or info.name))
    save_calibration(path, record)
    title = (
        f"{info.name}: cosine >= {record['threshold']:.4f} and z >= {record['z_threshold']:.3f} ({record['method']})"
    )
    table = Table(title=title, caption="cross-camera pairs; train: the sampled identities, test: query x gallery")
    for col in ("split", "test", "positives", "negatives", "precision", "recall", "F1", "FPR"):
        table.add_column(col, justify="left" if col in ("split", "test") else "right")
    for split in ("train", "test"):
        for rule, label in (("cosine", "cosine"), ("z", "z"), ("both", "both (the rule)")):
            r = (record.get(split) or {}).get(rule)
            if r:
                table.add_row(
                    split if rule == "cosine" else "",
                    label,
                    f"{r['n_pos']:,}",
                    f"{r['n_neg']:,}",
                    f"{r['precision']:.3f}",
                    f"{r['recall']:.3f}",
                    f"{r['f1']:.3f}",
                    f"{r['fpr']:.5f}",
                )
    console.print(table)
    console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add ``search`` and ``calibrate`` to the ``reidkit`` app."""
    app.command("search")(search_cmd)
    app.command("calibrate")(calibrate_cmd)
