"""Reports of a :class:`~reidkit.search.query.search.SearchResult`: a self-contained HTML page, a terminal
table and JSON.

The HTML page is one file with every picture embedded as a base64 JPEG thumbnail, so it can be
mailed or archived on its own: the query picture(s), a per-camera summary, a timeline (inline SVG,
one lane per camera, one mark per appearance, linked to its card; one clock per timeline: dated
appearances and those timed only as offsets into their video are never put on one axis) and, per
camera in time order, a grid of the appearances with their best crop, time span and similarity.
For appearances from a video file the full frame is shown with the box drawn, read by seeking to the
frame index; a missing or unreadable video just leaves the frame out. The closest candidates that
failed the match rule (:attr:`SearchResult.near_misses`) follow in a separate, clearly labelled review
section (crops only), and in a second terminal table. Tracks are named everywhere by the gallery's
track number (:attr:`Track.id`, what ``--track`` takes), not by a tracker's id within its source.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from reidkit.search.query.search import Appearance, SearchResult
from reidkit.search.storage.media import FrameReader, cut_box, draw_box, imread
from reidkit.search.storage.records import Hit, Track, redact_uri

EPOCH_CUTOFF = 1e8  # timestamps above this are Unix times (after 1973), below: seconds into a video
MAX_FRAMES = 60  # full frames embedded per report (the best-scoring appearances get them)


# -- JSON -------------------------------------------------------------------------------------------
def save_json(result: SearchResult, path: str | os.PathLike[str]) -> Path:
    """Write the result as JSON (atomically); :func:`load_json` reads it back."""
    from reidkit.io import write_json

    write_json(path, result.to_dict())
    return Path(path)


def load_json(path: str | os.PathLike[str]) -> SearchResult:
    return SearchResult.from_dict(json.loads(Path(path).read_text()))


# -- formatting -------------------------------------------------------------------------------------
def format_time(ts: float) -> str:
    """Unix times as UTC date-times, smaller values as a video position (h:mm:ss.s)."""
    if ts >= EPOCH_CUTOFF:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
    sign, ts = ("-", -ts) if ts < 0 else ("", ts)
    h, rem = divmod(ts, 3600)
    m, s = divmod(rem, 60)
    return f"{sign}{int(h)}:{int(m):02d}:{s:04.1f}" if h else f"{sign}{int(m)}:{s:04.1f}"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 appearance``, ``2 appearances``."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def is_dated(ts: float) -> bool:
    """Whether a timestamp is a date (Unix time), not an offset into a video."""
    return ts >= EPOCH_CUTOFF


def format_span(a: Appearance) -> str:
    if a.end - a.start < 0.05:
        return format_time(a.start)
    end = format_time(a.end)
    start = format_time(a.start)
    if a.start >= EPOCH_CUTOFF and start[:10] == end[:10]:
        end = end[11:]
    return f"{start} – {end}"


def query_text(result: SearchResult) -> str:
    q = result.query
    if q.kind == "track" and q.track is not None:
        return track_text(q.track)
    names = [Path(label).name if q.kind == "images" else label for label in q.labels]
    return ", ".join(names) if len(names) <= 3 else f"{len(names)} pictures"


def track_text(t: Track) -> str:
    """A track as reidkit names it: its gallery track number, camera, source, crops and time span."""
    span = format_time(t.first_time)
    if t.last_time - t.first_time >= 0.05:
        span += f" – {format_time(t.last_time)}"
    return f"track {t.id} ({t.camera}, {_source_name(t.source)}, {plural(t.n_crops, 'crop')}, {span})"


def _source_name(uri: str) -> str:
    """A source in a table: a file's or folder's name, a stream's URL without credentials."""
    shown = redact_uri(uri)
    return shown if "://" in shown else Path(shown).name or shown


def match_rule(result: SearchResult) -> str:
    """The rule the matches passed, in words."""
    rule = f"cosine >= {result.threshold:.3f}"
    if result.z_threshold is not None and result.r_threshold is not None:
        rule += f" and (z >= {result.z_threshold:.2f} or r >= {result.r_threshold:.2f})"
    elif result.z_threshold is not None:
        rule += f" and z >= {result.z_threshold:.2f}"
    return rule


# -- terminal ---------------------------------------------------------------------------------------
def result_table(result: SearchResult, limit: int | None = None) -> Any:
    """A rich Table of the appearances, per camera in time order."""
    from rich.table import Table

    n_cams = len(result.by_camera())
    title = (
        f"{query_text(result)}: {plural(len(result.appearances), 'appearance')} on {plural(n_cams, 'camera')} "
        f"({len(result.hits)} of {result.n_candidates} candidates: {match_rule(result)})"
    )
    table = Table(title=title, caption=f"gallery {result.gallery}; thresholds {result.threshold_source}")
    for col, justify in (
        ("camera", "left"),
        ("time", "left"),
        ("duration", "right"),
        ("similarity", "right"),
        ("z", "right"),
        ("track", "right"),
        ("crops", "right"),
        ("source", "left"),
        ("best id", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    shown = result.appearances if limit is None else result.appearances[:limit]
    prev = None
    for a in shown:
        table.add_row(
            a.camera if a.camera != prev else "",
            format_span(a),
            f"{a.duration:.1f} s",
            f"{a.score:.3f}",
            "" if a.z is None else f"{a.z:.1f}",
            "" if a.track is None else str(a.track),
            f"{len(a.hit_ids)}/{a.n_crops}",
            _source_name(a.source),
            str(a.best.id),
        )
        prev = a.camera
    if limit is not None and len(result.appearances) > limit:
        table.add_row("…", f"{len(result.appearances) - limit} more", "", "", "", "", "", "", "")
    return table


REVIEW_TITLE = "closest candidates below the match rule (not matches; for review)"


def review_table(result: SearchResult) -> Any:
    """A rich Table of the near misses (closest non-matching candidates), most similar first."""
    from rich.table import Table

    floor = "" if result.review_floor is None else f"; none below similarity {result.review_floor:.3f}"
    table = Table(
        title=REVIEW_TITLE,
        caption=f"these did not pass {match_rule(result)}{floor}",
        title_style="yellow",
        min_width=len(REVIEW_TITLE),
    )
    for col, justify in (
        ("camera", "left"),
        ("time", "left"),
        ("similarity", "right"),
        ("z", "right"),
        ("track", "right"),
        ("source", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for a in result.near_misses:
        table.add_row(
            a.camera,
            format_span(a),
            f"{a.score:.3f}",
            "" if a.z is None else f"{a.z:.1f}",
            "" if a.track is None else str(a.track),
            _source_name(a.source),
        )
    return table


def print_result(result: SearchResult, console: Any = None, limit: int | None = None) -> None:
    """The appearances table (or a "no match" line), then the near misses, if any, for review."""
    from rich.console import Console

    console = console or Console()
    if result.appearances:
        console.print(result_table(result, limit))
    else:
        console.print(
            f"no match ({match_rule(result)}; {result.threshold_source}) among {result.n_candidates} candidates"
        )
    if result.near_misses:
        console.print(review_table(result))


# -- pictures ---------------------------------------------------------------------------------------
def _as_bgr(image: Any, bgr: bool) -> np.ndarray | None:
    """A query picture (path, PIL image, array) as a BGR array, or None."""
    if isinstance(image, str | os.PathLike):
        return imread(image)
    if hasattr(image, "convert"):  # PIL
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    if hasattr(image, "detach"):  # torch tensor, 3 x H x W RGB
        t = image.detach().cpu()
        arr = t.permute(1, 2, 0).numpy()
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
        return np.ascontiguousarray(arr[:, :, ::-1])
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
        return arr if bgr else np.ascontiguousarray(arr[:, :, ::-1])
    return None


def _data_uri(image: np.ndarray, height: int | None = None, width: int | None = None, quality: int = 85) -> str:
    """A downscaled BGR image as a ``data:image/jpeg;base64`` URI."""
    import cv2

    h, w = image.shape[:2]
    scale = 1.0
    if height is not None and h > height:
        scale = height / h
    if width is not None and w * scale > width:
        scale = width / w
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;background:#fafbfc}
h1{margin:0 0 4px;font-size:24px;overflow-wrap:anywhere}
h2{border-bottom:1px solid #d8dde6;padding-bottom:4px;margin-top:28px}
.thumbs{display:flex;flex-wrap:wrap;gap:10px}
.thumbs figure{margin:0;text-align:center;font-size:12px;color:#5a6475;max-width:180px;word-break:break-all}
img{border-radius:4px;box-shadow:0 1px 3px rgba(0,0,0,.25);background:#fff}
#appearances{display:flex;flex-wrap:wrap;gap:0 18px;align-items:flex-start}
#appearances>h2,#appearances>p{flex-basis:100%}
#appearances section.camera{flex:0 1 auto;min-width:0;max-width:100%}
#appearances .cards{display:flex;flex-wrap:wrap}
#appearances .appearance{width:200px}#appearances .appearance.has-frame{width:min(100%,760px)}
@media (max-width:600px){body{margin:12px}#appearances section.camera{flex-basis:100%}
#appearances .appearance{width:calc(50% - 6px)}#appearances .appearance.has-frame{width:100%}}
"""
# The classes of :func:`render_results` (the static report and the service's page both use them).
RESULTS_CSS = """
.meta{color:#5a6475;font-size:14px;margin:2px 0;overflow-wrap:anywhere}
table.summary{border-collapse:collapse;font-size:14px;max-width:100%}
table.summary td,table.summary th{padding:4px 10px;border-bottom:1px solid #e3e7ee;text-align:left}
.scroll{overflow-x:auto;max-width:100%}
.timeline svg{display:block;width:100%;min-width:520px;max-width:900px;height:auto}
.timeline .meta{margin:4px 0 2px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:12px;margin:8px 0}
.appearance{display:flex;flex-direction:column;gap:6px;background:#fff;border:1px solid #e3e7ee;
border-radius:8px;padding:8px;min-width:0}
.appearance .crop{display:flex;align-items:center;justify-content:center;height:260px;background:#eef1f5;
border-radius:6px}
.appearance .crop img{height:250px;max-width:100%;object-fit:contain;border-radius:4px;
box-shadow:0 1px 3px rgba(0,0,0,.25);background:#fff}
.appearance.has-frame{grid-column:1/-1;flex-direction:row;flex-wrap:wrap;align-items:flex-start}
.appearance.has-frame .crop{flex:0 0 190px}.appearance.has-frame .info{flex:1 1 200px}
.frame{flex:2 1 320px}.frame img{max-width:100%;height:auto}
.appearance:target{outline:3px solid #f0a202}
.info{font-size:13px;line-height:1.5;overflow-wrap:anywhere}.info .f{margin:0}
.info b{display:inline-block;min-width:74px;color:#5a6475;font-weight:500}
.clock{display:inline-block;font-size:11px;padding:0 5px;border-radius:8px;background:#fff3d6;color:#6b4e00}
.near{border-style:dashed;background:#fbfbf6}
.score{font-weight:600}.none{color:#5a6475;font-style:italic}
svg text{font-size:13px;fill:#1d2330}
"""
CSS = PAGE_CSS + RESULTS_CSS

# image_url(detection, kind) -> URL (or data: URI) of its "crop" or its "frame" (box drawn), or None.
ImageURL = Callable[[Hit, str], "str | None"]


def _score_colour(score: float, threshold: float) -> str:
    """Red at the threshold to green at similarity 1."""
    x = 0.0 if threshold >= 1 else min(max((score - threshold) / (1 - threshold), 0.0), 1.0)
    return f"hsl({round(10 + 110 * x)},70%,45%)"


# Tick steps of a timeline's axis, in seconds: the first that gives at most TICKS ticks is used.
TICK_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
              43200, 86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 91 * 86400, 365 * 86400)  # fmt: skip
TICKS = 6


def axis_ticks(t0: float, t1: float, dated: bool) -> tuple[list[tuple[float, str]], str]:
    """Round tick times between ``t0`` and ``t1`` with labels that differ from one another and say no
    more than the span needs (``14:05``, ``14:05:30``, ``11-24 14:00``, ``1:05`` into a video), and a
    caption for what the labels leave out (the date, the clock). ``dated``: Unix times (UTC), else offsets."""
    span = max(t1 - t0, 1e-9)
    step = next((s for s in TICK_STEPS if span / s <= TICKS), TICK_STEPS[-1])
    first = math.ceil(t0 / step - 1e-9) * step
    times = [first + i * step for i in range(int((t1 - first) / step + 1e-9) + 1)]
    if not dated:

        def offset(t: float) -> str:
            text = format_time(t)
            return text if step < 1 else text[:-2]  # whole seconds: no tenths

        return [(t, offset(t)) for t in times], "time into each video (no date: ingested without --start-time)"
    days = {datetime.fromtimestamp(t, UTC).date() for t in (t0, t1)}
    if step >= 86400:
        fmt = "%Y-%m-%d"
    elif len(days) > 1:
        fmt = "%m-%d %H:%M"
    else:
        fmt = "%H:%M" if step >= 60 else "%H:%M:%S" if step >= 1 else "%H:%M:%S.%f"
    labels = [(t, datetime.fromtimestamp(t, UTC).strftime(fmt)) for t in times]
    if fmt.endswith("%f"):
        labels = [(t, text[:-5]) for t, text in labels]  # tenths of a second
    day = min(days).isoformat() if len(days) == 1 else f"{min(days).isoformat()} – {max(days).isoformat()}"
    return labels, f"{day}, UTC"


def timeline_svg(result: SearchResult, width: int = 760, lane: int = 30) -> str:
    """One inline SVG per clock (dated appearances, and those timed only as offsets into a video), one lane
    per camera, one mark per appearance spanning its time, with a round, readable axis
    (:func:`axis_ticks`) and a caption that names the clock."""
    if not result.appearances:
        return '<p class="none">No appearances.</p>'
    dated = [a for a in result.appearances if is_dated(a.start)]
    offsets = [a for a in result.appearances if not is_dated(a.start)]
    index = {id(a): i for i, a in enumerate(result.appearances)}
    parts = []
    for apps, is_date in ((dated, True), (offsets, False)):
        if apps:
            parts.append(_timeline(result, apps, is_date, index, width, lane, both=bool(dated and offsets)))
    return "".join(parts)


def _timeline(
    result: SearchResult, apps: list[Appearance], dated: bool, index: dict[int, int], width: int, lane: int, both: bool
) -> str:
    esc = html.escape
    groups: dict[str, list[Appearance]] = {}
    for a in apps:
        groups.setdefault(a.camera, []).append(a)
    left, right, top = 110, 24, 10
    t0 = min(a.start for a in apps)
    t1 = max(a.end for a in apps)
    if t1 - t0 < 1.0:  # one instant (or nearly): a few seconds either side, so the axis can say when
        mid = (t0 + t1) / 2
        t0, t1 = mid - 2.5, mid + 2.5
    else:
        pad = (t1 - t0) * 0.02
        t0, t1 = t0 - pad, t1 + pad
    start = min(a.start for a in apps)
    if not dated and t0 < 0 <= start:  # a video's offsets start at 0:00
        t0, t1 = 0.0, t1 - t0
    span = t1 - t0
    plot = width - left - right
    height = top + lane * len(groups) + 30

    def x(t: float) -> float:
        return left + (t - t0) / span * plot

    ticks, caption = axis_ticks(t0, t1, dated)
    what = "dated appearances" if dated else "appearances timed as offsets into their video"
    parts = [
        f'<div class="timeline" data-clock="{"date" if dated else "offset"}">'
        + (f'<p class="meta"><b>{esc(what)}</b></p>' if both else "")
        + f'<div class="scroll"><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline of appearances per camera ({esc(caption)})">'
    ]
    for row, (cam, cam_apps) in enumerate(groups.items()):
        y = top + row * lane
        parts.append(f'<rect x="{left}" y="{y + 4}" width="{plot}" height="{lane - 8}" fill="#eef1f5"/>')
        name = cam if len(cam) <= 14 else cam[:13] + "…"
        parts.append(f'<text x="{left - 8}" y="{y + lane / 2 + 4}" text-anchor="end">{esc(name)}</text>')
        for a in cam_apps:
            x0, x1 = x(a.start), x(a.end)
            w = max(x1 - x0, 5.0)
            x0 = min(max(x0 - (w - (x1 - x0)) / 2, left), left + plot - w)  # short marks: centred, kept inside
            tip = f"{cam}: {format_span(a)}, similarity {a.score:.3f}"
            parts.append(
                f'<a href="#app-{index[id(a)]}"><rect class="mark" x="{x0:.1f}" y="{y + 6}" '
                f'width="{w:.1f}" height="{lane - 12}" rx="2" fill="{_score_colour(a.score, result.threshold)}">'
                f"<title>{esc(tip)}</title></rect></a>"
            )
    axis_y = top + lane * len(groups) + 4
    parts.append(f'<line x1="{left}" y1="{axis_y}" x2="{left + plot}" y2="{axis_y}" stroke="#8a93a3"/>')
    for t, label in ticks:
        xt = x(t)
        anchor = "start" if xt - left < 30 else "end" if left + plot - xt < 30 else "middle"
        parts.append(f'<line x1="{xt:.1f}" y1="{axis_y}" x2="{xt:.1f}" y2="{axis_y + 4}" stroke="#8a93a3"/>')
        parts.append(f'<text class="tick" x="{xt:.1f}" y="{axis_y + 18}" text-anchor="{anchor}">{esc(label)}</text>')
    parts.append(f'</svg></div><p class="meta axis">axis: {esc(caption)}</p></div>')
    return "".join(parts)


def _img_tag(uri: str, alt: str) -> str:
    if not uri:
        return f'<span class="none">{html.escape(alt)}</span>'
    return f'<img src="{html.escape(uri)}" alt="{html.escape(alt)}">'


class EmbeddedImages:
    """The ``image_url`` of the self-contained report: crops and frames as ``data:`` JPEG URIs.

    A crop is the stored crop file, else (no crop recorded, or its frame is shown anyway) cut from
    the video frame; frames (box drawn) only for the detections in ``frames_for``. Each frame is read
    once (kept between the crop and the frame of the same detection). :meth:`close` releases the videos.
    """

    def __init__(
        self, result: SearchResult, frames_for: Iterable[int] = (), thumb_height: int = 240, frame_width: int = 640
    ) -> None:
        self.result = result
        self.frames_for = set(frames_for)
        self.thumb_height = thumb_height
        self.frame_width = frame_width
        self.reader = FrameReader(result.gallery)
        self._full: dict[int, np.ndarray | None] = {}
        # by id: the hits of a public copy of the result (file names, no server path) are read as these
        self._hits = {h.id: h for h in [*result.hits, *(a.best for a in [*result.appearances, *result.near_misses])]}

    def _frame(self, hit: Hit) -> np.ndarray | None:
        if hit.id not in self._full:
            self._full[hit.id] = self.reader.read(hit.source, hit.frame)
        return self._full[hit.id]

    def __call__(self, hit: Hit, kind: str) -> str | None:
        hit = self._hits.get(hit.id, hit)
        if kind == "frame":
            if hit.id not in self.frames_for:
                return None
            full = self._frame(hit)
            self._full.pop(hit.id, None)
            if full is None:
                return None
            return _data_uri(draw_box(full, hit.box) if hit.box is not None else full, width=self.frame_width)
        crop = imread(self.result.crop_path(hit.crop))
        if crop is None and (not hit.crop or hit.id in self.frames_for):
            full = self._frame(hit)
            if hit.id not in self.frames_for:
                self._full.pop(hit.id, None)
            crop = None if full is None else cut_box(full, hit.box)
        return _data_uri(crop, self.thumb_height) if crop is not None else None

    def close(self) -> None:
        self.reader.close()
        self._full.clear()


def result_meta(result: SearchResult) -> list[str]:
    """The lines (HTML) that say what was searched and how: gallery, counts, match rule, filters, clocks."""
    esc = html.escape
    filters = []
    if result.cameras:
        filters.append("cameras " + ", ".join(result.cameras))
    if result.time_range:
        lo, hi = result.time_range
        filters.append(f"time {'…' if lo is None else format_time(lo)} – {'…' if hi is None else format_time(hi)}")
    n_cams = len(result.by_camera())
    meta = [
        f"gallery <code>{esc(result.gallery)}</code>" + (f", model {esc(result.model)}" if result.model else ""),
        f"{plural(len(result.appearances), 'appearance')} on {plural(n_cams, 'camera')} from "
        f"{plural(len(result.hits), 'matching detection')} (of {result.n_candidates} candidates, top {result.k}"
        + (", k-reciprocal re-ranked" if result.reranked else "")
        + ")",
        f"match rule: {esc(match_rule(result))} ({esc(result.threshold_source)})"
        + (
            f"; z standardises the similarity by the query's similarities to {result.reference['n']:,} random "
            f"gallery detections (median {result.reference['median'][0]:.3f}, "
            f"spread {result.reference['spread'][0]:.3f})"
            + (
                "; r is how far the similarity lies from that median towards 1, an identical picture"
                if result.r_threshold is not None
                else ""
            )
            if result.reference
            else "; no z test (gallery too small, or not adaptive)"
        ),
    ]
    if filters:
        meta.append("filters: " + esc("; ".join(filters)))
    if result.time_from:
        meta.append(esc(photo_times(result)))
    if offsets := offset_cameras(result):
        meta.append(esc(f"times of {', '.join(offsets)}: offsets from the start of their video or folder, not dates "
                        "(ingested without --start-time)"))  # fmt: skip
    meta.append("dates are UTC")
    return meta


def offset_cameras(result: SearchResult) -> list[str]:
    """The cameras of the result whose appearances are timed as offsets into a video (no date)."""
    apps = [*result.appearances, *result.near_misses]
    return sorted({a.camera for a in apps if not is_dated(a.start) and a.source not in result.time_from})


TIME_BASES = {
    "exif": "EXIF capture time",
    "sidecar": "sidecar file",
    "pattern": "file-name pattern",
    "mtime": "file modification time",
}


def photo_times(result: SearchResult) -> str:
    """Where the times of the result's photo sources came from, e.g. ``photo times from cam2: EXIF capture time``."""
    names = {a.source: a.camera for a in [*result.appearances, *result.near_misses]}
    said = ", ".join(
        f"{names.get(uri, Path(uri).name)}: {TIME_BASES.get(basis, basis)}" for uri, basis in result.time_from.items()
    )
    return f"photo times from {said}" if said else ""


def clock_of(result: SearchResult, a: Appearance) -> str | None:
    """What an appearance's time is when it is not a trusted date: ``file time`` (a photo timed by its
    file's modification time), ``offset, no date`` (seconds into a video, or a folder's frame count), else None."""
    basis = result.time_from.get(a.source)
    if basis is not None:
        return "file time" if basis == "mtime" else "some file times" if "mtime" in basis else None
    return None if is_dated(a.start) else "offset, no date"


def render_results(result: SearchResult, image_url: ImageURL, *, interactive: bool = False) -> str:
    """The results as an HTML fragment: per-camera summary, timeline, appearances by camera (a grid of
    cards), review.

    The one rendering behind both the static report (:func:`render_html`, ``image_url`` an
    :class:`EmbeddedImages`) and the search service's page (URLs of the service's ``/crops/{id}``
    and ``/frames/{id}``). ``interactive`` (the page): frames are not shown inline but named by a
    ``data-frame`` attribute for the page to open, and cards carry ``data-detection`` / ``data-track``
    (the gallery's track number) / ``data-box`` / ``data-score``, confirm and reject buttons and a
    "search from this" button.
    """
    esc = html.escape

    def card(a: Appearance, anchor: str, matched: bool = True) -> str:
        """One appearance: best crop, info and (static report) the frame with its box."""
        b = a.best
        crop_tag = _img_tag(image_url(b, "crop") or "", "no crop")
        frame = image_url(b, "frame")
        frame_tag, attrs, actions, classes = "", "", "", "appearance" + ("" if matched else " near")
        if interactive:
            attrs = f' data-detection="{b.id}"' + ("" if a.track is None else f' data-track="{a.track}"')
            attrs += f' data-score="{a.score:.3f}" data-camera="{esc(a.camera)}" data-time="{esc(format_span(a))}"'
            attrs += "" if b.box is None else f' data-box="{",".join(str(v) for v in b.box)}"'
            if frame:
                attrs += f' data-frame="{esc(frame)}"'
            actions = (
                '<div class="actions">'
                f'<button type="button" class="confirm" data-detection="{b.id}" aria-pressed="false" '
                'title="confirm: this is the person">✓ yes</button>'
                f'<button type="button" class="reject" data-detection="{b.id}" aria-pressed="false" '
                'title="reject: somebody else">✗ no</button>'
                f'<button type="button" class="search-from" data-detection="{b.id}">search from this</button></div>'
            )
        elif frame:
            frame_tag = f'<div class="frame">{_img_tag(frame, "frame")}</div>'
            classes += " has-frame"
        which = "matched" if matched else "among the candidates"
        track = "—" if a.track is None else f"{a.track} ({len(a.hit_ids)} of {a.n_crops} crops {which})"
        photo = a.source in result.time_from  # a photo folder: name the picture, not its ledger number
        where = ""
        if photo and result.pictures.get(b.id) is not None:
            where = f"<b>picture</b> {esc(result.pictures[b.id])}"
        elif not photo and b.frame is not None:
            where = f"<b>frame</b> {b.frame}"
        clock = clock_of(result, a)
        tag = "" if clock is None else f' <span class="clock">{clock}</span>'
        z = "" if a.z is None else f" (z {a.z:.1f})"

        def line(name: str, text: str) -> str:
            return f'<div class="f f-{name}">{text}</div>' if text else ""

        return (
            f'<div class="{classes}" id="{anchor}"{attrs}>'
            f'<div class="crop">{crop_tag}</div>'
            '<div class="info">'
            + ("" if matched else line("camera", f"<b>camera</b> {esc(a.camera)}"))
            + line("time", f"<b>time</b> {esc(format_span(a))}{tag}")
            + ("" if photo else line("duration", f"<b>duration</b> {a.duration:.1f} s"))
            + line("similarity", f'<b>similarity</b> <span class="score">{a.score:.3f}</span>{z}')
            + line("track", f"<b>track</b> {esc(track)}")
            + line("source", f"<b>source</b> {esc(redact_uri(a.source))}")
            + line("where", where)
            + line("detection", f"<b>detection</b> {b.id}")
            + f"</div>{actions}{frame_tag}</div>"
        )

    cards: dict[str, list[str]] = {}
    for i, a in enumerate(result.appearances):
        cards.setdefault(a.camera, []).append(card(a, f"app-{i}"))
    review = [card(a, f"rev-{i}", matched=False) for i, a in enumerate(result.near_misses)]

    summary_rows = []
    for cam, apps in result.by_camera().items():
        summary_rows.append(
            f"<tr><td>{esc(cam)}</td><td>{len(apps)}</td><td>{esc(format_time(apps[0].start))}</td>"
            f"<td>{esc(format_time(max(a.end for a in apps)))}</td><td>{max(a.score for a in apps):.3f}</td></tr>"
        )
    camera_sections = (
        "".join(
            f'<section class="camera" id="cam-{n}" data-camera="{esc(cam)}"><h3>{esc(cam)} '
            f"({plural(len(cs), 'appearance')})</h3><div class=\"cards\">{''.join(cs)}</div></section>"
            for n, (cam, cs) in enumerate(cards.items())
        )
        or '<p class="none">No appearance above the match threshold.</p>'
    )
    floor = "" if result.review_floor is None else f", none below similarity {result.review_floor:.3f}"
    return (
        '<section id="summary"><h2>Cameras</h2>'
        + (
            '<div class="scroll"><table class="summary"><thead><tr><th>camera</th><th>appearances</th>'
            "<th>first seen</th><th>last seen</th><th>best similarity</th></tr></thead>"
            f"<tbody>{''.join(summary_rows)}</tbody></table></div>"
            if summary_rows
            else '<p class="none">No matches.</p>'
        )
        + f'</section><section id="timeline"><h2>Timeline</h2>{timeline_svg(result)}</section>'
        f'<section id="appearances"><h2>Appearances by camera</h2>{camera_sections}</section>'
        + (
            '<section id="review"><h2>Closest non-matches (for review)</h2>'
            f"<p class=meta>Not matches: these candidates did not pass the match rule ({esc(match_rule(result))}); "
            f"the {len(review)} closest, most similar first{floor}, to judge by eye.</p>"
            f'<div class="cards">{"".join(review)}</div></section>'
            if review
            else ""
        )
    )


def render_html(
    result: SearchResult,
    *,
    frames: bool = True,
    max_frames: int = MAX_FRAMES,
    thumb_height: int = 240,
    frame_width: int = 640,
    public: bool = False,
) -> str:
    """The report as one HTML string (see the module docstring): the query, then :func:`render_results`
    with every picture embedded. ``public``: its text as :meth:`SearchResult.public` words it (no server
    path, no credential; what the search service's ``/search/report`` sends), its pictures still read from
    ``result``'s files."""
    esc = html.escape
    # Query pictures: the pictures in memory, else their files, else a query track's crops.
    shown = result.public() if public else result
    qpics: list[tuple[str, str]] = []
    if result.query_images:
        for label, im in zip(shown.query.labels, result.query_images, strict=False):
            arr = _as_bgr(im, result.query_bgr)
            qpics.append((_data_uri(arr, thumb_height) if arr is not None else "", label))
    elif result.query.kind == "images":
        for label, path in zip(shown.query.labels, result.query.labels, strict=False):
            arr = imread(path)
            qpics.append((_data_uri(arr, thumb_height) if arr is not None else "", label))
    for crop in result.query.crops:
        arr = imread(result.crop_path(crop))
        qpics.append((_data_uri(arr, thumb_height) if arr is not None else "", Path(crop).name))

    with_frame: set[int] = set()
    if frames:  # full frames for the best-scoring appearances
        ranked = sorted(result.appearances, key=lambda a: -a.score)
        with_frame = {a.best.id for a in ranked[:max_frames]}
    images = EmbeddedImages(result, with_frame, thumb_height, frame_width)
    try:
        body = render_results(shown, images)
    finally:
        images.close()

    query_figs = "".join(
        f'<figure title="{esc(label)}">{_img_tag(uri, "query picture")}<figcaption>{esc(Path(label).name)}</figcaption>'
        "</figure>"
        for uri, label in qpics
    )
    title = f"Person search: {query_text(shown)}"
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1>{''.join(f'<p class=meta>{m}</p>' for m in result_meta(shown))}</header>"
        f'<section id="query"><h2>Query</h2><div class="thumbs">'
        f"{query_figs or '<p class=none>No query picture.</p>'}</div></section>"
        f"{body}"
        f'<footer class="meta">Generated by reidkit on {generated}.</footer></body></html>\n'
    )


def write_html(result: SearchResult, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write the self-contained HTML report (atomically); keywords as :func:`render_html`."""
    from reidkit.io import atomic_path

    text = render_html(result, **kwargs)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)  # a report is for sharing: readable, not mkstemp's 0600
    return Path(path)
