"""Write a short test clip (MJPG .avi) for the ingest front end.

    python scripts/make_test_clip.py out.avi                      # synthetic: two moving striped "persons"
    python scripts/make_test_clip.py out.avi --from vtest.avi --frames 30 --start 100 --scale 0.5

``--from`` cuts ``--frames`` frames from a real video (e.g. opencv-doc's
/usr/share/doc/opencv-doc/examples/data/vtest.avi), optionally resized; the clip keeps its fps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def synthetic_frames(n: int, width: int = 320, height: int = 240) -> list[np.ndarray]:
    persons = [((0, 0, 220), 20, 5, 60, 30, 80), ((220, 60, 0), width - 50, -4, 110, 34, 90)]
    frames = []
    for i in range(n):
        img = np.full((height, width, 3), 128, np.uint8)
        img[::8] = 110
        for colour, x0, v, y, w, h in persons:
            x = int(np.clip(x0 + v * i, 0, width - w))
            img[y : y + h, x : x + w] = colour
            img[y : y + h : 6, x : x + w] = 255
        frames.append(img)
    return frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--from", dest="src", type=Path, help="cut from this video instead of synthesising")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--start", type=int, default=0, help="first frame to cut (with --from)")
    ap.add_argument("--scale", type=float, default=1.0, help="resize factor (with --from)")
    ap.add_argument("--fps", type=float, default=10.0, help="fps of a synthetic clip")
    args = ap.parse_args()

    fps = args.fps
    if args.src:
        cap = cv2.VideoCapture(str(args.src))
        if not cap.isOpened():
            raise SystemExit(f"{args.src}: cannot open video")
        fps = cap.get(cv2.CAP_PROP_FPS) or fps
        cap.set(cv2.CAP_PROP_POS_FRAMES, args.start)
        frames = []
        while len(frames) < args.frames:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f if args.scale == 1 else cv2.resize(f, None, fx=args.scale, fy=args.scale))
        cap.release()
    else:
        frames = synthetic_frames(args.frames)
    if not frames:
        raise SystemExit("no frames to write")
    h, w = frames[0].shape[:2]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    vw = cv2.VideoWriter(str(args.out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not vw.isOpened():
        raise SystemExit(f"{args.out}: cannot write video")
    for f in frames:
        vw.write(f)
    vw.release()
    print(f"{args.out}: {len(frames)} frames {w}x{h} at {fps:g} fps")


if __name__ == "__main__":
    main()
