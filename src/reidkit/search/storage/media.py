"""A gallery's media: crop files, the frames and pictures sightings were seen in, boxes drawn on them."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def imread(path: str | os.PathLike[str] | None) -> np.ndarray | None:
    import cv2

    if path is None or not Path(path).is_file():
        return None
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def save_crop(
    image: Any,
    path: str | os.PathLike[str],
    *,
    box: Sequence[int] | None = None,
    bgr: bool = True,
    jpeg_quality: int = 90,
) -> Path:
    """Write a person crop as a JPEG file, atomically.

    ``image``: an H x W x 3 uint8 array (BGR, as OpenCV frames, unless ``bgr=False``) or a PIL image;
    with ``box=(x1, y1, x2, y2)`` the crop is cut from it first (clipped to the frame).
    """
    import cv2  # imported here: only crop writing needs OpenCV

    from reidkit.io import atomic_path

    if hasattr(image, "convert"):  # PIL
        image, bgr = np.asarray(image.convert("RGB")), False
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"crop image must be H x W x 3 uint8, got {arr.dtype} {arr.shape}")
    if box is not None:
        h, w = arr.shape[:2]
        x1, y1, x2, y2 = (int(v) for v in box)
        x1, x2, y1, y2 = max(0, x1), min(w, x2), max(0, y1), min(h, y2)
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"box {tuple(box)} is empty inside a {w}x{h} frame")
        arr = arr[y1:y2, x1:x2]
    if not bgr:
        arr = arr[:, :, ::-1]
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(arr), [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise ValueError(f"could not encode a JPEG of shape {arr.shape}")
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_bytes(buf.tobytes())
    return target


def lookup_photo(gallery_root: str | Path, source: str, frame: int | None) -> Path | None:
    """The picture of a photo source's ``frame``, read from ``gallery.db`` (read-only), else None."""
    if frame is None:
        return None
    db = Path(gallery_root) / "gallery.db"
    if not db.is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = conn.execute(
                "SELECT s.uri, p.name FROM photos p JOIN sources s ON s.id = p.source_id "
                "WHERE s.uri = ? AND p.frame = ?",
                (source, int(frame)),
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return None if row is None else Path(row[0]) / row[1]


class FrameReader:
    """Reads frames of video sources by index, keeping each video open, and the pictures of photo
    sources (by their ledger frame number); None where it cannot."""

    def __init__(self, gallery: str) -> None:
        self.gallery = Path(gallery)
        self.caps: dict[str, Any] = {}

    def _open(self, source: str) -> Any:
        import cv2

        if source in self.caps:
            return self.caps[source]
        cap = None
        if "://" not in source:
            for p in (Path(source), self.gallery / source):
                if p.is_file():
                    c = cv2.VideoCapture(str(p))
                    if c.isOpened():
                        cap = c
                        break
                    c.release()
        self.caps[source] = cap
        return cap

    def read(self, source: str, frame: int | None) -> np.ndarray | None:
        import cv2

        if frame is None or frame < 0:
            return None
        if "://" not in source and Path(source).is_dir():  # a photo folder: the picture the person was in
            from reidkit.imaging import PhotoError, read_photo

            path = lookup_photo(self.gallery, source, frame)
            try:
                return None if path is None else read_photo(path)
            except PhotoError:
                return None
        cap = self._open(source)
        if cap is None:
            return None
        try:
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(frame))
            ok, img = cap.read()
        except cv2.error:
            return None
        return img if ok else None

    def close(self) -> None:
        for cap in self.caps.values():
            if cap is not None:
                cap.release()
        self.caps.clear()


def draw_box(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    import cv2

    out = frame.copy()
    thick = max(2, round(max(out.shape[:2]) / 300))
    cv2.rectangle(out, (int(box[0]), int(box[1])), (int(box[2]), int(box[3])), (0, 220, 0), thick)
    return out


def cut_box(frame: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray | None:
    if box is None:
        return None
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3])
    return frame[y1:y2, x1:x2] if x2 > x1 and y2 > y1 else None


# -- HTML -------------------------------------------------------------------------------------------
