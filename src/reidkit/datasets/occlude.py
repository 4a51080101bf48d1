"""An occluded copy of a dataset's queries (Occluded-Market): real occluders over 20-50 % of the body.

:func:`make_occluded` writes ``out/query/<same names>.jpg`` and ``out/samples.csv`` (the CSV
dataset format of ``folder.py``: the occluded queries, and the source dataset's own gallery and
train images by absolute path; query and gallery pids unchanged), so ``reidkit eval --dataset folder --root out``
reads it. ``out/occlusion.csv`` lists, per query, the occluder kind, where it came from and the
fraction of the crop it covers; ``out/contact_sheet.jpg`` shows originals above their occluded copies.

Construction (deterministic: every image's random generator is seeded by ``seed`` and its file name,
so the result does not depend on order or on the other images). Each query gets one occluder
whose area is a fraction ``f ~ U(lo, hi)`` (default 0.2-0.5) of the crop; the crop is the body
(re-id crops are cut tight around the person). The occluder's pixels are always real pixels of
other images of the same dataset, never of the query's identity (the train split, whose identities
are disjoint from the test identities):

* ``person`` (40 %): another identity's whole crop, scaled to 0.9-1.15x the query's height, standing
  in front on the left or right so that it covers ``f`` of the crop (a passer-by);
* ``bottom`` (25 %): a horizontal band over the lower ``f`` of the crop, textured with the lower part
  of another image scaled to the band (a car, a counter, a bench, a railing);
* ``side`` (15 %): a vertical band over the left or right ``f`` of the crop, textured with a strip of
  another image (a pole, a wall edge, a door frame);
* ``block`` (20 %): a rectangle of area ``f`` (aspect 0.5-2, anywhere inside) textured with a random
  piece of another image (a bag, a sign, an umbrella, scenery).

Edges are feathered over 2 px so no occluder has an artificially sharp outline. Nothing here looks
at the re-id model, so the occluders are not tuned to any model's weaknesses.

``style="synthetic"`` (:func:`occlude_synthetic`) is a construction of another kind, to check that a
gain on the real occluders is not tied to them: one sharp rectangle of area ``f`` (aspect 0.3-3.3,
anywhere inside) filled with a solid random colour, uniform noise, or a heavy blur of what it covers,
a third each; no pixels of other images, nothing person-shaped.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from reidkit.datasets.base import DatasetError, ReIDDataset

KINDS = ("person", "bottom", "side", "block")
KIND_P = (0.40, 0.25, 0.15, 0.20)
SYNTHETIC_KINDS = ("solid", "noise", "blur")
STYLES = ("real", "synthetic")


@dataclass
class OccludedReport:
    """What :func:`make_occluded` wrote."""

    out: Path
    queries: int
    gallery: int
    train: int
    kinds: dict[str, int]
    mean_fraction: float
    sheet: Path | None


def _rng(seed: int, name: str) -> np.random.Generator:
    h = hashlib.sha1(f"{seed}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def _read(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"{path}: not a readable image")
    return img


def _feather(h: int, w: int, edges: tuple[bool, bool, bool, bool]) -> np.ndarray:
    """An (h, w, 1) alpha of 1 with its (top, bottom, left, right) edges ramped over 2 px."""
    a = np.ones((h, w), np.float32)
    ramp = np.array([0.33, 0.67], np.float32)
    top, bottom, left, right = edges
    n = min(2, h // 2, w // 2)
    if n:
        if top:
            a[:n] *= ramp[:n, None]
        if bottom:
            a[-n:] *= ramp[:n][::-1, None]
        if left:
            a[:, :n] *= ramp[:n][None]
        if right:
            a[:, -n:] *= ramp[:n][::-1][None]
    return a[..., None]


def _paste(img: np.ndarray, patch: np.ndarray, x: int, y: int, alpha: np.ndarray) -> None:
    h, w = patch.shape[:2]
    region = img[y : y + h, x : x + w].astype(np.float32)
    img[y : y + h, x : x + w] = (alpha * patch + (1 - alpha) * region).round().astype(np.uint8)


def _piece(src: np.ndarray, h: int, w: int, rng: np.random.Generator, part: str = "any") -> np.ndarray:
    """A piece of ``src`` resized to (h, w): its lower part, a vertical strip, or any window."""
    sh, sw = src.shape[:2]
    if part == "lower":
        y0 = int(rng.integers(sh // 2, max(sh // 2 + 1, sh - 8)))
        win = src[y0:, :]
    elif part == "strip":
        ww = max(2, int(sw * rng.uniform(0.15, 0.4)))
        x0 = int(rng.integers(0, sw - ww + 1))
        win = src[:, x0 : x0 + ww]
    else:
        wh, ww = max(4, int(sh * rng.uniform(0.2, 0.6))), max(4, int(sw * rng.uniform(0.3, 0.8)))
        y0, x0 = int(rng.integers(0, sh - wh + 1)), int(rng.integers(0, sw - ww + 1))
        win = src[y0 : y0 + wh, x0 : x0 + ww]
    return cv2.resize(win, (max(1, w), max(1, h)), interpolation=cv2.INTER_LINEAR)


def occlude(
    img: np.ndarray, donors: list[str], rng: np.random.Generator, lo: float, hi: float
) -> tuple[np.ndarray, dict]:
    """One occluded copy of ``img`` (BGR) and what was done (kind, donor, covered fraction)."""
    out = img.copy()
    h, w = img.shape[:2]
    f = float(rng.uniform(lo, hi))
    kind = KINDS[int(rng.choice(len(KINDS), p=KIND_P))]
    donor = donors[int(rng.integers(len(donors)))]
    src = _read(donor)
    if kind == "person":
        scale = rng.uniform(0.9, 1.15) * h / src.shape[0]
        ph, pw = max(1, round(src.shape[0] * scale)), max(1, round(src.shape[1] * scale))
        person = cv2.resize(src, (pw, ph), interpolation=cv2.INTER_LINEAR)
        cover = min(w, max(1, round(f * w * h / min(h, ph))))  # columns covered so that area = f
        left = bool(rng.integers(2))
        y = h - min(h, ph)  # feet on the ground line
        rows_ = person[ph - min(h, ph) :]
        if cover <= pw:  # the passer-by's inner side, standing at the crop's edge
            part = rows_[:, pw - cover :] if left else rows_[:, :cover]
        else:  # narrower than needed: stretch it to the width
            part = cv2.resize(rows_, (cover, rows_.shape[0]))
        ph2, pw2 = part.shape[:2]
        x = 0 if left else w - pw2
        _paste(out, part, x, y, _feather(ph2, pw2, (y > 0, False, not left, left)))
        covered = pw2 * ph2 / (w * h)
    elif kind == "bottom":
        bh = max(1, round(f * h))
        _paste(out, _piece(src, bh, w, rng, "lower"), 0, h - bh, _feather(bh, w, (True, False, False, False)))
        covered = bh / h
    elif kind == "side":
        bw = max(1, round(f * w))
        left = bool(rng.integers(2))
        alpha = _feather(h, bw, (False, False, not left, left))
        _paste(out, _piece(src, h, bw, rng, "strip"), 0 if left else w - bw, 0, alpha)
        covered = bw / w
    else:
        area = f * w * h
        aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))  # height / width
        bw = int(np.clip(round(np.sqrt(area / aspect)), 1, w))
        bh = int(np.clip(round(area / bw), 1, h))
        x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        _paste(out, _piece(src, bh, bw, rng), x, y, _feather(bh, bw, (y > 0, y + bh < h, x > 0, x + bw < w)))
        covered = bw * bh / (w * h)
    return out, {"kind": kind, "donor": Path(donor).name, "fraction": round(float(covered), 4)}


def occlude_synthetic(img: np.ndarray, rng: np.random.Generator, lo: float, hi: float) -> tuple[np.ndarray, dict]:
    """One copy of ``img`` (BGR) with a solid, noise or blurred rectangle (``style="synthetic"``)."""
    out = img.copy()
    h, w = img.shape[:2]
    area = float(rng.uniform(lo, hi)) * w * h
    aspect = float(np.exp(rng.uniform(np.log(0.3), np.log(3.3))))  # height / width
    bw = int(np.clip(round(np.sqrt(area / aspect)), 1, w))
    bh = int(np.clip(round(area / bw), 1, h))
    x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
    kind = SYNTHETIC_KINDS[int(rng.integers(len(SYNTHETIC_KINDS)))]
    region = out[y : y + bh, x : x + bw]
    if kind == "solid":
        region[:] = rng.integers(0, 256, 3, dtype=np.uint8)
    elif kind == "noise":
        region[:] = rng.integers(0, 256, region.shape, dtype=np.uint8)
    else:
        region[:] = cv2.GaussianBlur(region, (0, 0), sigmaX=max(bh, bw) / 4, borderType=cv2.BORDER_REFLECT)
    return out, {"kind": kind, "donor": "", "fraction": round(bw * bh / (w * h), 4)}


def make_occluded(
    ds: ReIDDataset,
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    fraction: tuple[float, float] = (0.2, 0.5),
    sheet: int = 40,
    style: str = "real",
) -> OccludedReport:
    """Write the occluded copy of ``ds``'s queries to ``out`` (see the module docstring); with
    ``style="real"`` ``ds`` needs a train split (the occluders' source; its pids are written as
    loaded, e.g. relabelled)."""
    lo, hi = fraction
    if not 0.0 < lo <= hi < 1.0:
        raise ValueError(f"fraction must satisfy 0 < lo <= hi < 1, got {fraction}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if style == "real" and not ds.train:
        raise DatasetError(f"{ds.name}: no train split to take occluders from")
    if not ds.query:
        raise DatasetError(f"{ds.name}: no query split to occlude")
    out = Path(out)
    qdir = out / "query"
    qdir.mkdir(parents=True, exist_ok=True)
    donors = sorted(str(s.path) for s in ds.train)
    rows, log, pairs = [], [], []
    names = set()
    step = max(1, len(ds.query) // max(1, sheet))  # sheet examples spread over the queries
    for i, s in enumerate(ds.query):
        name = Path(s.path).name
        if name in names:
            raise DatasetError(f"{ds.name}: two queries are named {name}; cannot write them side by side")
        names.add(name)
        img = _read(str(s.path))
        rng = _rng(seed, name)
        occluded, what = occlude(img, donors, rng, lo, hi) if style == "real" else occlude_synthetic(img, rng, lo, hi)
        target = qdir / (Path(name).stem + ".jpg")
        tmp = target.with_name(f".{target.name}.tmp.jpg")
        if not cv2.imwrite(str(tmp), occluded, [cv2.IMWRITE_JPEG_QUALITY, 95]):
            raise DatasetError(f"{tmp}: cannot write")
        os.replace(tmp, target)
        rows.append((f"query/{target.name}", s.pid, s.camid, "query"))
        log.append({"query": target.name, **what})
        if i % step == 0 and len(pairs) < sheet:
            pairs.append((img, occluded))
    rows += [(str(Path(g.path).absolute()), g.pid, g.camid, "gallery") for g in ds.gallery]
    rows += [(str(Path(t.path).absolute()), t.pid, t.camid, "train") for t in ds.train]
    _write_csv(out / "samples.csv", ("path", "pid", "camid", "split"), rows)
    _write_csv(out / "occlusion.csv", ("query", "kind", "donor", "fraction"), [tuple(d.values()) for d in log])
    sheet_path = _sheet(pairs, out / "contact_sheet.jpg") if pairs else None
    kinds = Counter(d["kind"] for d in log)
    return OccludedReport(
        out, len(ds.query), len(ds.gallery), len(ds.train), dict(sorted(kinds.items())),
        float(np.mean([d["fraction"] for d in log])), sheet_path,
    )  # fmt: skip


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)


def _sheet(pairs: list[tuple[np.ndarray, np.ndarray]], path: Path, columns: int = 20) -> Path:
    from reidkit.pose.sheet import contact_sheet

    columns = min(columns, len(pairs))
    pairs = pairs[: len(pairs) // columns * columns]  # whole rows only
    ordered = []  # originals on one row, their occluded copies on the row below
    for r in range(0, len(pairs), columns):
        chunk = pairs[r : r + columns]
        ordered += [cv2.resize(a, (64, 128)) for a, _ in chunk] + [cv2.resize(b, (64, 128)) for _, b in chunk]
    cv2.imwrite(str(path), contact_sheet(ordered, columns=min(columns, len(pairs))), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path
