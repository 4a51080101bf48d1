"""A tiny gallery of real Market-1501 crops for the service tests (tests/test_service*.py).

* ``market``: a folder of 14 test-split identities (6 crops each, spread over their cameras) and
  24 distractors, stored as ``reidkit ingest --images`` stores them (crops referenced in place,
  camera from the file name, time = frame / 25);
* ``lobby.avi``: a 12-frame video whose frames show real crops of the query's identity (track 1)
  and of another identity (track 2) pasted on a background, so frames can be read and boxes drawn;
  two of track 1's sightings have a crop file in the gallery, the others are cut from the frame.

Every feature comes from the real shipped model (the Embedder ``reidkit search`` uses).
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

from reidkit.search.storage import Gallery, Sighting

N_IDS, PER_ID, N_DISTRACTORS = 14, 6, 24
FPS = 5.0
W, H = 320, 240
MARKET_NAME = re.compile(r"^(\d{4})_(c\d)s\d_(\d+)_\d+\.jpg$")


def _market_subset(market: Path) -> tuple[list[Path], str]:
    by_pid: dict[str, list[Path]] = defaultdict(list)
    for p in sorted((market / "bounding_box_test").iterdir()):
        m = MARKET_NAME.match(p.name)
        if m:
            by_pid[m.group(1)].append(p)
    pids = [
        pid
        for pid in sorted(by_pid)
        if pid != "0000" and len({MARKET_NAME.match(p.name).group(2) for p in by_pid[pid]}) >= 3
    ]
    chosen = []
    for pid in pids[:N_IDS]:
        imgs = by_pid[pid]
        step = max(1, len(imgs) // PER_ID)
        chosen += imgs[::step][:PER_ID]
    chosen += by_pid["0000"][:N_DISTRACTORS]
    return chosen, pids[0]


def _paste(frame: np.ndarray, crop: np.ndarray, x: int, y: int) -> tuple[int, int, int, int]:
    h, w = crop.shape[:2]
    frame[y : y + h, x : x + w] = crop
    return (x, y, x + w, y + h)


def build(root: Path, data_root: Path, embedder) -> SimpleNamespace:
    """Build the gallery under ``root`` (``root/gallery``); returns what the tests need to know."""
    market = data_root / "market1501"
    files, target = _market_subset(market)
    folder = root / "market"
    folder.mkdir(parents=True)
    for p in files:
        shutil.copy2(p, folder / p.name)
    copies = sorted(folder.iterdir())
    query = sorted((market / "query").glob(f"{target}_*.jpg"))[0]
    other = next(p for p in copies if not p.name.startswith(target) and not p.name.startswith("0000"))

    # the video: target crops walking right on track 1, another person standing on track 2
    target_crops = [cv2.imread(str(p)) for p in sorted((market / "bounding_box_test").glob(f"{target}_*.jpg"))[-2:]]
    other_crop = cv2.imread(str(other))
    video = root / "lobby.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert vw.isOpened()
    boxes: dict[int, tuple[tuple[int, int, int, int], tuple[int, int, int, int]]] = {}
    rng = np.random.default_rng(0)
    background = np.clip(rng.normal(120, 12, (H, W, 3)), 0, 255).astype(np.uint8)
    for i in range(12):
        frame = background.copy()
        b1 = _paste(frame, target_crops[i // 6], 10 + 12 * i, 70)
        b2 = _paste(frame, other_crop, 240, 90)
        boxes[i] = (b1, b2)
        vw.write(frame)
    vw.release()
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    assert len(frames) == 12

    gdir = root / "gallery"
    with Gallery.open(gdir) as g:
        recs = []
        for p in copies:
            m = MARKET_NAME.match(p.name)
            cam, frame_no = (m.group(2), int(m.group(3))) if m else ("c1", 0)
            recs.append(Sighting(str(folder), frame_no / 25.0, cam, frame=frame_no, crop=str(p)))
        feats = embedder.embed([str(p) for p in copies])
        g.add(feats, recs)
        g.set_source_status(str(folder), "done")
        g.add_source(str(video), "lobby", fps=FPS)
        vrecs, crops = [], []
        for tid, idx in ((1, (0, 3, 6, 9)), (2, (1, 5, 10))):
            for n, i in enumerate(idx):
                box = boxes[i][tid - 1]
                cut = frames[i][box[1] : box[3], box[0] : box[2]]
                crops.append(np.ascontiguousarray(cut[:, :, ::-1]))  # RGB for the embedder
                rel = g.save_crop(frames[i], str(video), f"{tid}_{i}", box=box) if tid == 1 and n < 2 else None
                vrecs.append(Sighting(str(video), i / FPS, frame=i, box=box, track_id=tid, crop=rel, quality=0.5))
        ids = g.add(embedder.embed(crops), vrecs)
        g.set_source_status(str(video), "done", progress=11)
        lobby_track = next(t.id for t in g.tracks() if t.track_id == 1)
        n = len(g)
    return SimpleNamespace(
        root=root,
        gallery=gdir,
        folder=folder,
        video=video,
        query=query,
        target=target,
        n=n,
        lobby_ids=[int(i) for i in ids],
        lobby_track=lobby_track,
        market_ids=list(range(1, len(copies) + 1)),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(app, **kwargs):
    """A TestClient that calls the app as a browser on this machine would (Host 127.0.0.1: the service
    answers to the loopback names only, unless told otherwise)."""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://127.0.0.1", **kwargs)


class Server:
    """uvicorn serving ``app`` on a free loopback port in a background thread (``with Server(app) as url``),
    with ``reidkit serve``'s settings (:func:`reidkit.service.server.config`; ``options`` go there).

    The app's lifespan is not run: it would close the app's search pool and gallery on exit, and tests share
    one app between servers and test clients."""

    def __init__(self, app, **options) -> None:
        import uvicorn

        from reidkit.service.server import config

        self.port = free_port()
        options = {"log_level": "warning", **options}
        self.server = uvicorn.Server(config(app, "127.0.0.1", self.port, lifespan="off", **options))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
