"""Custom data: the ``folder`` dataset, and :func:`validate` for any dataset.

``root`` is one of (with ``root`` unset, ``$REIDKIT_DATA/custom``):

* a CSV file, or a folder holding ``samples.csv``, with the header ``path,pid,camid,split``:
  ``path`` relative to the CSV's folder (or absolute), ``pid`` an integer (``-1`` = junk),
  ``camid`` the 0-based camera index, ``split`` one of ``train``, ``query``, ``gallery``;
* a folder holding ``query/`` and ``gallery/`` (and ``train/``, optional for evaluation-only data),
  each with images either

  - named Market-style, ``<pid>_c<cam>_<anything>.jpg`` (e.g. ``0007_c2_0001.jpg``), or
  - grouped by identity, ``<pid>/c<cam>_<anything>.jpg`` (e.g. ``0007/c2_0001.jpg``);

  in both, cameras are numbered from 1 (``c1`` is camid 0) and the two forms may be mixed.
  Files without an image extension are ignored; an image with any other name is an error.

Junk (pid ``-1``) is dropped from train and query and kept in the gallery. ``get_dataset`` runs
:func:`validate` on the result: fatal problems raise :class:`DatasetError`, warnings go to
``notes``.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from pathlib import Path

from reidkit.datasets._common import is_image_name, missing_error, parse_market_style
from reidkit.datasets.base import JUNK_PID, DatasetError, ReIDDataset, Sample, drop_junk
from reidkit.paths import data_root

NAME = "folder"
SPLITS = ("train", "query", "gallery")
CSV_NAME = "samples.csv"
CSV_COLUMNS = ("path", "pid", "camid", "split")
LAYOUT = (
    f"a CSV file ({','.join(CSV_COLUMNS)}), a folder holding {CSV_NAME}, or a folder holding "
    "query/ and gallery/ (train/ optional)"
)
MARKET_EXAMPLE = "0007_c2_0001.jpg"
IDENTITY_EXAMPLE = "<pid>/c2_0001.jpg"
_PID_DIR = re.compile(r"-?\d+")
_CAM_NAME = re.compile(r"c(\d+)(?![0-9])")


def _scan_identity_dir(directory: str, pid: int) -> list[Sample]:
    samples = []
    with os.scandir(directory) as it:
        names = sorted(e.name for e in it if is_image_name(e.name))
    for name in names:
        m = _CAM_NAME.match(name)
        if m is None or int(m.group(1)) < 1:
            raise DatasetError(
                f"cannot parse {os.path.join(directory, name)}: expected a name like "
                f"{IDENTITY_EXAMPLE} (c<camera from 1>_<anything>) inside an identity folder."
            )
        samples.append(Sample(os.path.join(directory, name), pid, int(m.group(1)) - 1))
    return samples


def scan_split(directory: Path) -> list[Sample]:
    """Samples of one split folder: Market-style files and/or ``<pid>/`` identity folders."""
    folder = str(directory)
    with os.scandir(folder) as it:
        entries = sorted((e.name, e.is_dir()) for e in it if not e.name.startswith("."))
    samples: list[Sample] = []
    for name, is_dir in entries:
        path = os.path.join(folder, name)
        if is_dir:
            if not _PID_DIR.fullmatch(name):
                raise DatasetError(
                    f"unexpected folder {path}: identity folders are named by their integer pid "
                    f"(e.g. {IDENTITY_EXAMPLE})."
                )
            samples += _scan_identity_dir(path, int(name))
        elif is_image_name(name):
            pid, camid = parse_market_style(name, folder, MARKET_EXAMPLE)
            samples.append(Sample(path, pid, camid))
    return samples


def read_csv(csv_file: Path) -> dict[str, list[Sample]]:
    """Samples per split from a ``path,pid,camid,split`` CSV (paths relative to its folder)."""
    splits: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    base = csv_file.parent.absolute()
    missing: list[str] = []
    with open(csv_file, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        absent = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise DatasetError(
                f"{csv_file}: the header must name the columns {','.join(CSV_COLUMNS)}; "
                f"missing {', '.join(absent)}."
            )
        for row in reader:
            lineno = reader.line_num
            try:
                pid, camid = int(row["pid"]), int(row["camid"])
            except (TypeError, ValueError):
                raise DatasetError(
                    f"{csv_file}:{lineno}: pid and camid must be integers, got "
                    f"pid={row['pid']!r} camid={row['camid']!r}."
                ) from None
            split = (row["split"] or "").strip()
            if split not in splits:
                raise DatasetError(
                    f"{csv_file}:{lineno}: split must be one of {', '.join(SPLITS)}, not {split!r}."
                )
            path = os.path.join(base, (row["path"] or "").strip())
            if not os.path.isfile(path):
                missing.append(path)
            splits[split].append(Sample(path, pid, camid))
    if missing:
        raise DatasetError(
            f"{csv_file}: {len(missing)} listed image(s) do not exist, e.g. {missing[0]}."
        )
    return splits


def _source(base: Path) -> tuple[str, Path] | None:
    if base.is_file() and base.suffix.lower() == ".csv":
        return "csv", base
    if (base / CSV_NAME).is_file():
        return "csv", base / CSV_NAME
    if (base / "query").is_dir() and (base / "gallery").is_dir():
        return "folders", base
    return None


def load(root: str | os.PathLike[str] | None = None) -> ReIDDataset:
    """Load custom data from ``root`` (see the module docstring for the conventions)."""
    base = data_root(root)
    found = _source(base) or _source(base / "custom")
    if found is None:
        raise missing_error(base / "query", "folder dataset", LAYOUT)
    kind, where = found
    if kind == "csv":
        splits = read_csv(where)
        folder = where.parent.absolute()
    else:
        folder = where.absolute()
        splits = {s: scan_split(folder / s) if (folder / s).is_dir() else [] for s in SPLITS}
    dropped = sum(s.pid == JUNK_PID for s in (*splits["train"], *splits["query"]))
    notes = f"custom data from {where}" + (
        f"; {dropped} junk (pid -1) train/query images dropped" if dropped else ""
    )
    return ReIDDataset(
        NAME,
        folder,
        drop_junk(splits["train"]),
        drop_junk(splits["query"]),
        splits["gallery"],
        notes,
    )


def validate(ds: ReIDDataset) -> list[str]:
    """Check a dataset is usable for training and the cross-camera protocol.

    Raises :class:`DatasetError` listing every fatal problem (empty query or gallery, missing
    camera ids, junk in train/query, train pids not relabelled to 0..n-1, a single camera overall);
    returns the warnings (no train split, queries without a cross-camera gallery match).
    """
    fatal: list[str] = []
    warnings: list[str] = []
    for split in SPLITS:
        samples: list[Sample] = getattr(ds, split)
        if not samples and split != "train":
            fatal.append(f"{split} is empty")
        no_cam = sum(s.camid < 0 for s in samples)
        if no_cam:
            fatal.append(f"{no_cam} {split} images have no camera id (camid < 0)")
        junk = sum(s.pid == JUNK_PID for s in samples)
        if junk and split != "gallery":
            fatal.append(f"{junk} {split} images are junk (pid -1)")
    train_pids = {s.pid for s in ds.train}
    if not ds.train:
        warnings.append("train is empty: the dataset can only be used for evaluation")
    elif train_pids != set(range(len(train_pids))):
        fatal.append("train pids are not relabelled to 0..n-1 (see reidkit.datasets.base.relabel)")
    cams = {s.camid for s in (*ds.query, *ds.gallery)}
    if ds.query and ds.gallery and len(cams) < 2:
        fatal.append(
            f"query and gallery all come from camera {min(cams)}; "
            "the cross-camera protocol needs at least 2 cameras"
        )
    if fatal:
        raise DatasetError(f"{ds.name} at {ds.root}: " + "; ".join(fatal) + ".")

    gallery_cams: dict[int, set[int]] = defaultdict(set)
    for s in ds.gallery:
        if s.pid != JUNK_PID:
            gallery_cams[s.pid].add(s.camid)
    unmatched = [q for q in ds.query if not gallery_cams.get(q.pid, set()) - {q.camid}]
    if unmatched:
        ids = sorted({q.pid for q in unmatched})
        shown = ", ".join(map(str, ids[:5])) + (", ..." if len(ids) > 5 else "")
        warnings.append(
            f"{len(unmatched)} query images ({len(ids)} ids: {shown}) have no gallery image of "
            "the same id from another camera; the evaluation skips them"
        )
    return warnings
