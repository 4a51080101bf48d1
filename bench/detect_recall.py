"""Person-detection recall on full-HD pictures with hand-labelled boxes, and what search then finds.

The pictures are frames of Debian's ``vtest.avi`` (real pedestrians on a campus, 768x576) scaled to
1440x1080 and set on a grey 1920x1080 canvas: the full-HD camera pictures of issue 22, in which a
walking person is about 50x150 pixels. Every person in them was boxed by hand
(``bench/labels/vtest_people.json``: the boxes, not the pictures, are committed). The same run
measures each detector's recall (IoU >= 0.5 with a labelled box, each label matched at most once),
its false boxes per picture and its time per picture on this machine's cores, and, per detector,
whether a search with one crop of the labelled target person finds her in each picture (a hit whose
box overlaps her labelled box, IoU >= 0.3, among the hits the search reports).

    .venv/bin/python bench/detect_recall.py [--detectors ssd,ssd-tiled] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from _common import command_line, machine, write_section

VTEST = Path(os.environ.get("REIDKIT_VTEST", "/usr/share/doc/opencv-doc/examples/data/vtest.avi"))
LABELS = Path(__file__).parent / "labels" / "vtest_people.json"
SCALE, BORDER = 1440 / 768, 240  # vtest 768x576 -> 1440x1080, then 240 px of grey each side


def to_full_hd(box: list[float]) -> tuple[float, float, float, float]:
    return (box[0] * SCALE + BORDER, box[1] * SCALE, box[2] * SCALE + BORDER, box[3] * SCALE)


def make_pictures(root: Path, labels: dict) -> list[dict]:
    """Write the labelled frames as full-HD JPEGs into ``root/<camera>/``; returns one record per picture
    (path, camera, labelled boxes in its pixels, the target's box or None)."""
    wanted = {e["frame"]: cam for cam, entries in labels["cameras"].items() for e in entries}
    frames: dict[int, np.ndarray] = {}
    cap = cv2.VideoCapture(str(VTEST))
    index = 0
    while len(frames) < len(wanted):
        ok, frame = cap.read()
        if not ok:
            break
        if index in wanted:
            frames[index] = frame
        index += 1
    cap.release()
    if len(frames) < len(wanted):
        raise SystemExit(f"{VTEST}: frames {sorted(set(wanted) - set(frames))} not found")
    pictures = []
    for cam, entries in labels["cameras"].items():
        (root / cam).mkdir(parents=True, exist_ok=True)
        for e in entries:
            big = cv2.resize(frames[e["frame"]], (1440, 1080), interpolation=cv2.INTER_CUBIC)
            big = cv2.copyMakeBorder(big, 0, 0, BORDER, BORDER, cv2.BORDER_CONSTANT, value=(128, 128, 128))
            path = root / cam / f"IMG_{e['frame']:05d}.jpg"
            cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
            os.utime(path, (1.7e9 + e["frame"] / 10, 1.7e9 + e["frame"] / 10))
            boxes = [to_full_hd(p["box"]) for p in e["people"]]
            target = next((to_full_hd(p["box"]) for p in e["people"] if p.get("target")), None)
            pictures.append({"path": path, "camera": cam, "frame": e["frame"], "boxes": boxes, "target": target})
    return pictures


def area(b) -> float:
    return (b[2] - b[0]) * (b[3] - b[1])


def iou(a, b) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes (the tracker's ``iou_matrix``)."""
    from reidkit.search.ingest.track import iou_matrix

    return float(iou_matrix(np.asarray([a], dtype=float), np.asarray([b], dtype=float))[0, 0])


def match(dets: list, truth: list, threshold: float = 0.5) -> int:
    """Labelled boxes found: greedy by IoU, each label and each detection used at most once."""
    pairs = sorted(((iou(d, t), i, j) for i, d in enumerate(dets) for j, t in enumerate(truth)), reverse=True)
    used_d, used_t = set(), set()
    for v, i, j in pairs:
        if v < threshold:
            break
        if i not in used_d and j not in used_t:
            used_d.add(i)
            used_t.add(j)
    return len(used_t)


def parse_spec(spec: str) -> tuple[str, dict]:
    """``name`` or ``name:key=value,key=value`` (numbers and 0/1 switches) -> build_detector's arguments."""
    name, _, rest = spec.partition(":")
    opts: dict = {}
    for kv in filter(None, rest.split(",")):
        k, v = kv.split("=")
        opts[k] = float(v) if "." in v else int(v)
        if k in ("verify", "split_groups"):
            opts[k] = bool(opts[k])
    return name, opts


def detection_scores(name: str, pictures: list[dict]) -> dict:
    from reidkit.search.ingest.detect import build_detector

    kind, opts = parse_spec(name)
    det = build_detector(kind, **opts)
    images = [cv2.imread(str(p["path"])) for p in pictures]
    det.detect(images[0])  # warm-up (network load, first allocation)
    found = labelled = boxes = 0
    t0 = time.perf_counter()
    all_dets = [det.detect(im) for im in images]
    seconds = (time.perf_counter() - t0) / len(images)
    for p, dets in zip(pictures, all_dets, strict=True):
        d = [x.box for x in dets]
        found += match(d, p["boxes"])
        labelled += len(p["boxes"])
        boxes += len(d)
    return {
        "detector": name,
        "recall": found / labelled,
        "found": found,
        "labelled": labelled,
        "precision": found / boxes if boxes else 0.0,
        "false_per_picture": (boxes - found) / len(pictures),
        "ms_per_picture": 1000 * seconds,
    }


def search_scores(
    name: str, pictures: list[dict], root: Path, query: Path, weights: str | None, adaptive: bool
) -> dict:
    """As an operator would: ``reidkit ingest`` the two camera folders with detector ``name`` (``weights``:
    a model file, default the shipped default), ``reidkit search --json`` with the query crop (``adaptive``:
    the calibrated rule with its standing-out test, else the calibrated cosine threshold alone), and count
    the pictures where a hit (named by its picture) lies on the target's labelled box."""
    tag = f"{name}-{Path(weights).stem if weights else 'default'}"
    gallery, out = root / f"gallery-{tag}", root / f"search-{tag}-{adaptive}.json"
    model = ["--weights", weights] if weights else []
    reidkit = str(Path(sys.executable).with_name("reidkit"))
    if not gallery.exists():
        subprocess.run([reidkit, "ingest", str(root / "cam1"), str(root / "cam3"), "--gallery", str(gallery),
                        "--detector", name, *model], check=True, capture_output=True)  # fmt: skip
    rule = [] if adaptive else ["--no-adaptive"]
    subprocess.run([reidkit, "search", str(query), "--gallery", str(gallery), "--json", str(out), *model, *rule],
                   check=True, capture_output=True)  # fmt: skip
    hits = json.loads(out.read_text())["hits"]
    by_picture: dict[str, list] = {}
    for hit in hits:
        by_picture.setdefault(f"{Path(hit['source']).name}/{hit['picture']}", []).append(hit["box"])
    found: dict[str, list[str]] = {}
    present: dict[str, int] = {}
    for p in pictures:
        if p["target"] is None:
            continue
        present[p["camera"]] = present.get(p["camera"], 0) + 1
        if any(iou(b, p["target"]) >= 0.3 for b in by_picture.get(f"{p['camera']}/{p['path'].name}", [])):
            found.setdefault(p["camera"], []).append(p["path"].name)
    wrong = sum(
        1
        for key, boxes in by_picture.items()
        for b in boxes
        if not any(
            iou(b, p["target"]) >= 0.3 for p in pictures if p["target"] and f"{p['camera']}/{p['path'].name}" == key
        )
    )
    model_name = Path(weights).name if weights else "shipped default"
    rule_name = "calibrated rule" if adaptive else "calibrated cosine threshold only"
    return {"detector": f"{name}, {model_name}, {rule_name}", "found": found, "present": present, "hits": len(hits),
            "wrong": wrong}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detectors", default="ssd,ssd-tiled")
    ap.add_argument("--weights", action="append", default=[], help="Also search with this model file (repeatable).")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    labels = json.loads(LABELS.read_text())
    names = args.detectors.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pictures = make_pictures(root, labels)
        rows = [detection_scores(n, pictures) for n in names]
        # the query: the target's largest labelled box (her clearest view), cut from its picture
        first = max((p for p in pictures if p["target"] is not None), key=lambda p: area(p["target"]))
        x1, y1, x2, y2 = (round(v) for v in first["target"])
        query = root / "query.png"
        cv2.imwrite(str(query), cv2.imread(str(first["path"]))[y1:y2, x1:x2])
        searches = [
            search_scores(n, pictures, root, query, w, adaptive)
            for n in names
            if n != "hog"
            for w in [None, *args.weights]
            for adaptive in (True, False)
        ]
    base = rows[0]["ms_per_picture"]
    lines = [
        "| detector | recall (IoU 0.5) | labelled people found | precision | false boxes / picture | ms / picture | x first row |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['detector']} | {r['recall']:.3f} | {r['found']} / {r['labelled']} | {r['precision']:.3f} | "
            f"{r['false_per_picture']:.2f} | {r['ms_per_picture']:.0f} | {r['ms_per_picture'] / base:.1f}x |"
        )
    lines += ["", "| detector, model, match rule | target found: cam1 | cam3 | hits | hits on someone else | pictures named |",
              "|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for s in searches:
        f, n = s["found"], s["present"]
        named = ", ".join(sorted(n for names in f.values() for n in names))
        lines.append(
            f"| {s['detector']} | {len(f.get('cam1', []))} of {n.get('cam1', 0)} | "
            f"{len(f.get('cam3', []))} of {n.get('cam3', 0)} | {s['hits']} | {s['wrong']} | {named} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return
    n_pics = len(pictures)
    write_section(
        "detect_recall",
        f"""## Person detection on full-HD pictures (issue 22)
{n_pics} pictures: frames of `vtest.avi` (real pedestrians, 768x576) scaled to 1440x1080 on a grey 1920x1080
canvas, in two camera folders (cam1: 13 pictures 1 s apart; cam3: 3 others). Every person labelled by hand
(`bench/labels/vtest_people.json`, {sum(len(p["boxes"]) for p in pictures)} boxes). Recall: labelled boxes
matched by a detection at IoU >= 0.5. Time: one picture at a time, both cores, same run. Search: each
detector's gallery, one query crop of the target (her largest labelled box, in {first["path"].name}),
hits counted on her labelled box at IoU >= 0.3 (she is in {sum(p["target"] is not None for p in pictures)} of the pictures; the
labeller found her nowhere else in the video, so cam3 has no picture of her). {machine()}

{table}

Command: `{command_line()}`""",
    )


if __name__ == "__main__":
    main()
