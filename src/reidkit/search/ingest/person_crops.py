"""Crops mode: folders of ready-made person crops (e.g. Market-1501's ``bounding_box_test``), every
image one sighting, nothing detected or tracked; and :func:`ingest_reid_split`, a dataset split added
that way (gallery ids returned in sample order). Resumes exactly: ``progress`` is the index of the
last committed image."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reidkit.embed import FeatureExtractor
from reidkit.search.ingest.report import IngestReport, Progress, ProgressFn
from reidkit.search.ingest.sources import IMAGE_EXTENSIONS, camera_from_uri, natural_key
from reidkit.search.storage import Gallery, GalleryError, Sighting

MARKET_CAMERA = r"_(c\d+)"  # 0002_c1s1_000451_03.jpg -> "c1"
MARKET_FRAME = r"c\d+s\d+_(\d+)"  # 0002_c1s1_000451_03.jpg -> 451


def check_dim(gallery: Gallery, embedder: FeatureExtractor) -> None:
    """Fail before any work when the embedder's feature width does not match the gallery's."""
    if gallery.dim is None:
        return
    dim = embedder.embed([np.zeros((64, 32, 3), np.uint8)], bgr=True).shape[1]
    if dim != gallery.dim:
        raise GalleryError(
            f"gallery {gallery.root} holds dim={gallery.dim} features but this model gives {dim}: "
            "use the model the gallery was built with, or another gallery"
        )


@dataclass(frozen=True)
class CropItem:
    """One ready-made person crop to add as a sighting."""

    path: str
    camera: str
    timestamp: float
    frame: int


def folder_items(
    root: str | os.PathLike[str],
    camera: str | Callable[[Path], str] | None = None,
    camera_pattern: str | None = MARKET_CAMERA,
    time_pattern: str | None = MARKET_FRAME,
    fps: float = 25.0,
    start_time: float = 0.0,
) -> list[CropItem]:
    """Every image below ``root`` (natural name order) as a :class:`CropItem` (see :func:`ingest`)."""
    root = Path(root)
    paths = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: natural_key(p.relative_to(root).as_posix()),
    )
    paths = [p for p in paths if not any(part.startswith(".") for part in p.relative_to(root).parts)]
    cam_re = re.compile(camera_pattern) if camera_pattern else None
    time_re = re.compile(time_pattern) if time_pattern else None
    order: dict[str, int] = {}
    items = []
    for p in paths:
        if callable(camera):
            cam = str(camera(p))
        elif camera is not None:
            cam = camera
        elif cam_re is not None and (m := cam_re.search(p.name)):
            cam = m.group(1)
        else:
            cam = p.parent.name if p.parent != root else camera_from_uri(root)
        n = order[cam] = order.get(cam, -1) + 1
        m = time_re.search(p.name) if time_re is not None else None
        frame = int(m.group(1)) if m else n
        items.append(CropItem(str(p.absolute()), cam, start_time + frame / fps, frame))
    return items


def ingest_crops(
    gallery: Gallery,
    sid: int,
    uri: str,
    items: Sequence[CropItem],
    embedder: FeatureExtractor,
    report: IngestReport,
    copy_crops: bool,
    batch_size: int,
    progress: ProgressFn | None = None,
) -> None:
    """Add ``items`` from the one after ``report.resumed_from`` on, ``batch_size`` per commit."""
    start = 0 if report.resumed_from is None else report.resumed_from + 1
    total = max(0, len(items) - start)
    root = Path(uri)
    try:
        for b in range(start, len(items), batch_size):
            chunk = items[b : b + batch_size]
            # paths, not decoded arrays: the same decoding as `reidkit eval`, so the features are identical
            feats = embedder.embed([it.path for it in chunk])
            crops = [gallery.copy_crop(sid, it.path, root) if copy_crops else it.path for it in chunk]
            sightings = [
                Sighting(uri, it.timestamp, camera=it.camera, frame=it.frame, crop=crop)
                for it, crop in zip(chunk, crops, strict=True)
            ]
            gallery.add(feats, sightings, progress=b + len(chunk) - 1)
            report.frames += len(chunk)
            report.crops += len(chunk)
            if progress is not None:
                progress(Progress(root.name, report.frames, total, "images", f"{report.crops} sightings"))
    finally:
        if progress is not None:
            progress(Progress(root.name, report.frames, total, "images", f"{report.crops} sightings", final=True))


def ingest_reid_split(
    gallery: Gallery,
    samples: Sequence[Any],
    embedder: FeatureExtractor,
    *,
    source: str | None = None,
    fps: float = 25.0,
    batch_size: int = 256,
) -> np.ndarray:
    """Add a re-id dataset split (:class:`~reidkit.datasets.base.Sample` list) as crops; returns the
    gallery ids in sample order (so ``ids[i]`` is sample ``i``, whose ``pid`` the caller knows).

    Cameras are ``c<camid + 1>`` (Market-1501's numbering); times come from ``extra["timestamp"]``,
    else the Market frame field / ``fps``, else the sample order. ``source`` (default: the split's
    folder) is registered with a fingerprint of the sample paths; re-running returns the stored ids.
    """
    if not samples:
        raise ValueError("no samples to add")
    paths = [str(Path(s.path).absolute()) for s in samples]
    if len(set(paths)) != len(paths):
        raise ValueError("the split lists an image twice; gallery ids would be ambiguous")
    folder = os.path.commonpath([str(Path(p).parent) for p in paths])
    uri = source or f"reid:{folder}"
    fingerprint = "samples:" + hashlib.sha1("\n".join(paths).encode()).hexdigest()
    time_re = re.compile(MARKET_FRAME)
    items = []
    for i, (s, p) in enumerate(zip(samples, paths, strict=True)):
        m = time_re.search(Path(p).name)
        frame = int(s.extra.get("frame", int(m.group(1)) if m else i))
        ts = float(s.extra["timestamp"]) if "timestamp" in s.extra else frame / fps
        items.append(CropItem(p, f"c{int(s.camid) + 1}", ts, frame))
    old = gallery.source_status(uri)
    if old is not None and old.fingerprint != fingerprint:
        gallery.remove_source(old.id)
        old = None
    if old is None or old.status != "done":
        check_dim(gallery, embedder)
        rec = gallery.add_source(uri, Path(folder).name or "split", fps, fingerprint)
        resumed = None if rec.progress is None else int(rec.progress)
        report = IngestReport(uri, rec.camera, rec.id, "done", resumed_from=resumed)
        ingest_crops(gallery, rec.id, uri, items, embedder, report, False, batch_size)
        gallery.set_source_status(rec.id, "done")
        gallery.save()
    by_path = {r.crop: r.id for r in gallery.records(uri)}
    return np.array([by_path[p] for p in paths], dtype=np.int64)
