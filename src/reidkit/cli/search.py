"""``reidkit search`` and ``reidkit calibrate``: parse the options, call :mod:`reidkit.search.api` (a
:class:`~reidkit.search.api.SearchRequest`, as ``POST /search`` builds one) or
:mod:`reidkit.search.query.calibrate`, and print. Added to the main app by :func:`register`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from reidkit.cli.common import Backend, DatasetRoot, GalleryUri, Model, Threads, Weights, console, fail, failing
from reidkit.search import api
from reidkit.search.api import ApiError, RequestError

OPTIONS = {"cameras": "--camera", "pictures": "--image"}  # request fields named otherwise on the command line


def worded(exc: ApiError) -> str:
    """The API's message, its request fields named as this command's options (``top`` -> ``--top``)."""
    if not isinstance(exc, RequestError):
        return str(exc)
    if "query" in exc.fields:
        return "give the person to search for: pictures (PATH ... or --image PATH) or --track ID, not both"
    msg = str(exc)
    for f in exc.fields:
        msg = re.sub(rf"\b{f}\b", OPTIONS.get(f, "--" + f.replace("_", "-")), msg)
    return msg


def search_cmd(
    pictures: Annotated[
        list[Path] | None, typer.Argument(help="Pictures of the person (the same as --image).", show_default=False)
    ] = None,
    gallery: GalleryUri = ...,  # required; built by reidkit ingest
    image: Annotated[
        list[Path] | None, typer.Option("--image", help="Picture of the person (repeat for several).")
    ] = None,
    track: Annotated[
        int | None,
        typer.Option("--track", help="Search for a gallery track: its track number, as tables and the page show it."),
    ] = None,
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
    weights: Weights = None,
    model: Model = None,
    backend: Backend = "torch",
    fuse: Annotated[
        Literal["mean", "max"], typer.Option(help="Several pictures: mean feature, or best match of any.")
    ] = "mean",
    no_frames: Annotated[bool, typer.Option("--no-frames", help="HTML: leave out the full video frames.")] = False,
    review: Annotated[
        int, typer.Option("--review", help="Also show this many closest non-matches, for review (0: off).")
    ] = 8,
    review_floor: Annotated[
        float | None,
        typer.Option(help="Least similarity of a non-match shown for review (default: 0.2 below the threshold)."),
    ] = None,
) -> None:
    """Find a person in a gallery: appearances per camera in time order (table, JSON, HTML)."""
    from reidkit.search.query.report import photo_times, print_result, query_text, save_json, write_html

    images = [str(p) for p in [*(pictures or []), *(image or [])]]
    try:
        request = api.SearchRequest(
            images, track=track, top=top, cameras=camera or None, since=since, until=until, rerank=not no_rerank,
            review=review, review_floor=review_floor, threshold=threshold, z_threshold=z_threshold,
            adaptive=not no_adaptive, fuse=fuse,
        )  # fmt: skip
        with api.open_gallery(gallery) as g:
            result = api.search(g, request, api.load_model(model, weights, backend=backend, embedder=bool(images)))
    except ApiError as exc:
        fail(worded(exc))
    if result.query.kind == "track":  # say whom: the track number is the gallery's, as every table shows it
        console.print(f"searched for {query_text(result)}", highlight=False, soft_wrap=True)
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
    weights: Weights = None,
    model: Model = None,
    dataset: Annotated[str, typer.Option(help="Dataset whose TRAINING split calibrates.")] = "market1501",
    root: DatasetRoot = None,
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
    holdout: Annotated[
        int, typer.Option(help="Calibrate on the last N training ids only (a model's data.holdout_ids: unseen).")
    ] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 32,
    threads: Threads = None,
) -> None:
    """Calibrate a model's match thresholds (cosine similarity and z) for `reidkit search`."""
    from reidkit.datasets.base import DatasetError
    from reidkit.imaging import ImageError
    from reidkit.search.query.calibrate import calibrate, calibration_file_name, save_calibration

    if ids < 0:
        fail(f"--ids must be >= 0, got {ids}")
    if holdout < 0:
        fail(f"--holdout must be >= 0, got {holdout}")
    if not 0.0 < target_precision <= 1.0:
        fail(f"--target-precision must be in (0, 1], got {target_precision}")
    with failing(ApiError, DatasetError, ImageError, ValueError):
        loaded = api.load_model(model, weights, batch_size=batch_size, threads=threads)
        record = calibrate(
            loaded.embedder, dataset, root=root, n_ids=ids or None, seed=seed, method=method,
            target_precision=target_precision, test=test, model_info=loaded.info, progress=True, holdout=holdout,
        )  # fmt: skip
    path = out or Path(calibration_file_name(loaded.info.source or loaded.info.name))
    save_calibration(path, record)
    console.print(calibration_table(record, loaded.info.name))
    test_table = (record.get("test") or {}).get("z_by_gallery")
    for label, table in (("z threshold by gallery size", record.get("z_by_gallery")), ("test's own", test_table)):
        if table and table.get("sizes"):
            pairs = ", ".join(f"{n}: {v:.2f}" for n, v in zip(table["sizes"], table["z"], strict=True))
            console.print(f"{label} (detections: z): {pairs}", highlight=False)
    console.print(f"wrote {path}")


def calibration_table(record: dict[str, Any], name: str) -> Any:
    """The calibration's figures: precision, recall, F1 and FPR of each test, on train and test pairs."""
    from rich.table import Table

    stands_out = f"z >= {record['z_threshold']:.3f}"
    if record.get("r_threshold") is not None:
        stands_out = f"({stands_out} or r >= {record['r_threshold']:.4f})"
    title = f"{name}: cosine >= {record['threshold']:.4f} and {stands_out} ({record['method']})"
    table = Table(title=title, caption="cross-camera pairs; train: the sampled identities, test: query x gallery")
    for col in ("split", "test", "positives", "negatives", "precision", "recall", "F1", "FPR"):
        table.add_column(col, justify="left" if col in ("split", "test") else "right")
    for split in ("train", "test"):
        for rule, label in (("cosine", "cosine"), ("z", "z"), ("r", "r"), ("both", "the rule")):
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
    return table


def register(app: typer.Typer) -> None:
    """Add ``search`` and ``calibrate`` to the ``reidkit`` app."""
    app.command("search")(search_cmd)
    app.command("calibrate")(calibrate_cmd)
