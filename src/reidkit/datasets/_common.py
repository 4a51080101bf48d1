"""Shared helpers for the dataset loaders: locating a dataset folder and parsing file names."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from reidkit.datasets.base import DatasetError, ReIDDataset, Sample, relabel
from reidkit.paths import DATA_ENV, data_root

IMAGE_EXTS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# Market-style names: ``<pid>_c<cam>...`` with pid possibly -1, e.g. 0002_c1s1_000451_03.jpg,
# 0001_c2_f0046182.jpg (Duke), 0001_c1_1.png (CUHK03-NP). Only the prefix carries labels.
MARKET_STYLE = re.compile(r"(-?\d+)_c(\d+)(?![0-9])")
# The split folders of a Market-style release (Market-1501, DukeMTMC-reID, CUHK03-NP, ...).
MARKET_SPLITS = ("bounding_box_train", "query", "bounding_box_test")
_MARKET_FOLDERS = "bounding_box_train/, query/ and bounding_box_test/"


def is_image_name(name: str) -> bool:
    """True when ``name`` has an image extension (``x.jpg.jpg`` counts); hidden files never do."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTS)


def locate(
    root: str | os.PathLike[str] | None,
    candidates: Sequence[str],
    markers: Sequence[str],
    what: str,
    layout: str,
) -> Path:
    """Find the dataset folder: ``root`` itself or ``root/<candidate>``, holding every marker.

    ``root`` defaults to ``$REIDKIT_DATA``. Raises a one-sentence :class:`DatasetError` naming
    the first expected path that is missing.
    """
    base = data_root(root)
    folders = (base, *(base / c for c in candidates))
    for folder in folders:
        if all((folder / m).exists() for m in markers):
            return folder.absolute()
    # Blame the most plausible folder: one holding some markers, else the first that exists.
    partial = [f for f in folders if any((f / m).exists() for m in markers)]
    existing = [f for f in folders[1:] if f.is_dir()]
    expected = (partial or existing or [base / candidates[0]])[0]
    missing = [expected / m for m in markers if not (expected / m).exists()]
    raise missing_error(missing[0] if expected.is_dir() else expected, what, layout)


def missing_error(path: Path, what: str, layout: str) -> DatasetError:
    """The one-sentence error for a missing dataset folder or list file (as :func:`require_dir`)."""
    kind = "file" if path.suffix in (".txt", ".csv") else "folder"
    return DatasetError(
        f"{what}: expected the {kind} {path} ({layout}); "
        f"set ${DATA_ENV} or pass --root to point at the folder that contains it."
    )


def parse_market_style(name: str, directory: str, example: str) -> tuple[int, int]:
    """``(pid, camid)`` from a Market-style file name; camid is the 1-based ``c`` number minus 1."""
    m = MARKET_STYLE.match(name)
    if m is None or int(m.group(2)) < 1:
        raise DatasetError(
            f"cannot parse {os.path.join(directory, name)}: expected a name like {example} "
            "(<pid>_c<camera from 1>..., pid -1 for junk)."
        )
    return int(m.group(1)), int(m.group(2)) - 1


def scan_market_style(directory: Path, example: str) -> list[Sample]:
    """Every image of one folder named Market-style, sorted by name; non-images are skipped."""
    folder = str(directory)
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it if e.is_file() and is_image_name(e.name))
    samples = []
    for name in names:
        pid, camid = parse_market_style(name, folder, example)
        samples.append(Sample(os.path.join(folder, name), pid, camid))
    return samples


def market_style_splits(
    folder: Path, example: str, train: str, query: str, gallery: str
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Scan the three split folders of a Market-style release."""
    return (
        scan_market_style(folder / train, example),
        scan_market_style(folder / query, example),
        scan_market_style(folder / gallery, example),
    )


def load_market_style(
    root: str | os.PathLike[str] | None,
    name: str,
    what: str,
    example: str,
    folders: Sequence[str],
    *,
    notes: str | None = None,
    count_junk: bool = False,
) -> ReIDDataset:
    """Load a release in the Market-1501 layout (:data:`MARKET_SPLITS`, names like ``example``).

    The folder is found as :func:`locate` finds it: ``root`` or ``root/<one of folders>``; when it is
    missing, the error names ``what`` and the layout under ``folders[0]``. The dataset is called
    ``name``; its notes are ``notes`` (default ``what``), followed with ``count_junk`` by the
    :func:`junk_note` of its test splits.
    """
    folder = locate(root, folders, MARKET_SPLITS, what, f"{folders[0]}/ with {_MARKET_FOLDERS}")
    train, query, gallery = market_style_splits(folder, example, *MARKET_SPLITS)
    junk = junk_note(query, gallery) if count_junk else ""
    return ReIDDataset(name, folder, train, query, gallery, "; ".join(filter(None, [notes or what, junk])))


def relabel_keep_origin(samples: Sequence[Sample]) -> list[Sample]:
    """:func:`relabel` the pids to 0..n-1, keeping the dataset's pid in ``extra["orig_pid"]``."""
    return [
        Sample(new.path, new.pid, new.camid, {**old.extra, "orig_pid": old.pid})
        for old, new in zip(samples, relabel(samples), strict=True)
    ]


def junk_note(query: Sequence[Sample], gallery: Sequence[Sample]) -> str:
    """A short phrase counting junk (-1) and distractor (0) images in the test splits."""
    junk = sum(s.pid == -1 for s in query) + sum(s.pid == -1 for s in gallery)
    distractors = sum(s.pid == 0 for s in gallery)
    parts = []
    if junk:
        parts.append(f"{junk:,} junk images (pid -1) kept")
    if distractors:
        parts.append(f"{distractors:,} distractors (pid 0) kept")
    return "; ".join(parts)
