"""Beyond one machine, with the real parts (issue 21): a gallery on a real Milvus server (``milvus_server`` in
conftest.py) built by two ``reidkit ingest`` processes at once and searched by ``reidkit search`` and by two
``reidkit serve`` processes, against a folder (FAISS) gallery of the same footage; ingest on a two-node
local Ray cluster (``ray.cluster_utils.Cluster``) with a worker killed mid-source; extraction on that cluster.

Footage: two 8-second cuts of vtest.avi (real pedestrians), written as MJPEG by OpenCV.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from reidkit.search import api
from reidkit.search.storage import open_gallery

VTEST = Path(os.environ.get("REIDKIT_VTEST", "/usr/share/doc/opencv-doc/examples/data/vtest.avi"))
CUTS = {"a.avi": (0, 80), "b.avi": (400, 480)}  # frames of vtest.avi (10 fps)
pytestmark = pytest.mark.data


def _unavailable(reason: str) -> None:
    if os.environ.get("REIDKIT_REQUIRE_DATA") == "1":
        pytest.fail(f"REIDKIT_REQUIRE_DATA=1 but: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    import cv2

    if not VTEST.is_file():
        _unavailable(f"{VTEST} missing: apt-get install opencv-doc (or set REIDKIT_VTEST)")
    folder = tmp_path_factory.mktemp("footage")
    cap = cv2.VideoCapture(str(VTEST))
    frames = []
    while len(frames) < max(b for _, b in CUTS.values()):
        ok, frame = cap.read()
        assert ok, "vtest.avi ended early"
        frames.append(frame)
    out = []
    for name, (a, b) in CUTS.items():
        w = cv2.VideoWriter(str(folder / name), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, frames[0].shape[1::-1])
        for f in frames[a:b]:
            w.write(f)
        w.release()
        out.append(folder / name)
    return out


@pytest.fixture(scope="module")
def model():
    return api.load_model()


@pytest.fixture(scope="module")
def folder_gallery(clips, model, tmp_path_factory) -> Path:
    """The reference: both clips ingested by one process into a folder (FAISS + SQLite) gallery."""
    root = tmp_path_factory.mktemp("faiss") / "gallery"
    summary = api.run_ingest(root, api.plan_ingest([str(c) for c in clips]), model)
    assert not summary.errors and summary.sightings > 20
    return root


def _milvus_uri(server, name: str, media: Path) -> str:
    return f"milvus://{server.host}:{server.port}/{name}?media={media}"


def _sightings(uri: str | Path) -> dict[tuple, np.ndarray]:
    """Every sighting by what it is (clip, frame, box), with its feature."""
    with open_gallery(uri, create=False, read_only=True) as g:
        recs = g.get(g.ids().tolist())
        feats = g.features([r.id for r in recs])
        n = len(g)
    keys = [(Path(r.source).name, r.frame, r.box) for r in recs]
    assert len(set(keys)) == len(keys) == n, "a sighting stored twice"
    return dict(zip(keys, feats, strict=True))


def _same_sightings(got: dict[tuple, np.ndarray], want: dict[tuple, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    cos = [float(got[k] @ want[k]) for k in want]
    assert min(cos) > 0.9999, min(cos)


def _reidkit(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "reidkit.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hits(answer: dict) -> list[tuple]:
    return [(Path(h["source"]).name, h["frame"], tuple(h["box"]), round(h["score"], 4)) for h in answer["hits"]]


def test_two_ingest_processes_on_milvus_answer_as_the_folder_gallery(
    milvus_server, clips, folder_gallery, tmp_path
) -> None:
    uri = _milvus_uri(milvus_server, "two_writers", tmp_path / "media")
    # two machines, each with its own camera, writing to one gallery at once
    procs = [_reidkit("ingest", str(clip), "--gallery", uri) for clip in clips]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    _same_sightings(_sightings(uri), _sightings(folder_gallery))

    # reidkit search, by a picture: the same hits, in the same order, with the same scores
    with open_gallery(folder_gallery, create=False, read_only=True) as g:
        crop = g.root / g.get([int(g.ids()[len(g) // 2])])[0].crop
    answers = {}
    for name, gallery in (("faiss", str(folder_gallery)), ("milvus", uri)):
        out = tmp_path / f"{name}.json"
        p = _reidkit("search", str(crop), "--gallery", gallery, "--json", str(out), "--top", "20")
        assert p.wait(timeout=180) == 0, p.stdout.read()
        answers[name] = _hits(json.loads(out.read_text()))
    assert answers["milvus"] == answers["faiss"] and len(answers["faiss"]) >= 5

    # reidkit cluster: the same albums (by their sightings)
    from typer.testing import CliRunner

    from reidkit.cli import app

    albums = {}
    for name, gallery in (("faiss", str(folder_gallery)), ("milvus", uri)):
        r = CliRunner().invoke(app, ["cluster", "--gallery", gallery, "--out", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        data = json.loads((tmp_path / name / "clusters.json").read_text())
        with open_gallery(gallery, create=False, read_only=True) as g:
            albums[name] = sorted(sorted((Path(x.source).name, x.frame, x.box) for x in g.get(c["records"]))
                                  for c in data["clusters"])  # fmt: skip
    assert albums["milvus"] == albums["faiss"] and albums["faiss"]

    # two services on the one Milvus gallery: POST /search answers as the command did
    ports = [_free_port(), _free_port()]
    servers = [_reidkit("serve", "--gallery", uri, "--port", str(port)) for port in ports]
    try:
        for port, srv in zip(ports, servers, strict=True):
            deadline = time.monotonic() + 120
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                    break
                except OSError:
                    assert srv.poll() is None and time.monotonic() < deadline, srv.stdout.read() if srv.poll() else ""
                    time.sleep(0.5)
        import httpx

        picture = [("image", ("q.jpg", crop.read_bytes(), "image/jpeg"))]
        for port in ports:
            r = httpx.post(f"http://127.0.0.1:{port}/search", files=picture, data={"top": "20"}, timeout=60)
            assert r.status_code == 200, r.text
            assert _hits(r.json()) == answers["faiss"]
            assert str(tmp_path) not in r.text  # no server path goes out
    finally:
        for srv in servers:
            srv.send_signal(signal.SIGTERM)
        for srv in servers:
            srv.wait(timeout=30)


# -- Ray -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    """A real two-node Ray cluster on this machine (a head and one more node, one CPU each)."""
    ray = pytest.importorskip("ray")
    from reidkit.raycluster import allow_slow_gcs_start

    allow_slow_gcs_start()  # a loaded machine can take longer than Ray's default 30 s (CI saw it once)
    # Ray's Cluster writes the head's address into Ray's default temp dir (/tmp/ray/ray_current_cluster) even
    # when the head runs in a temp dir of its own, and fails where that folder does not exist (a fresh machine).
    from ray._common.utils import get_default_ray_temp_dir

    os.makedirs(get_default_ray_temp_dir(), exist_ok=True)
    logs: list[str] = []
    for attempt in (1, 2):  # a private directory each time; one retry, then fail with the GCS's own words
        temp_dir = tempfile.mkdtemp(prefix="rk-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        try:
            cluster = _start_ray_cluster(temp_dir)
            break
        except Exception as exc:
            logs.append(f"try {attempt}: {exc}\n{_ray_gcs_logs(temp_dir)}")
            shutil.rmtree(temp_dir, ignore_errors=True)
    else:
        raise RuntimeError("the test Ray cluster did not start:\n" + "\n".join(logs))
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _start_ray_cluster(temp_dir: str):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "temp_dir": temp_dir})
    try:
        cluster.add_node(num_cpus=1)
    except Exception:
        cluster.shutdown()
        raise
    return cluster


def _ray_gcs_logs(temp_dir: str) -> str:
    """The tail of every GCS log under a Ray temp dir (why a head did not come up)."""
    parts = []
    for log in sorted(Path(temp_dir).glob("session_*/logs/gcs_server.*")):
        parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
    return "\n".join(parts) or "(no GCS log written)"


def test_ray_ingest_restarts_a_killed_worker_without_duplicates(
    milvus_server, ray_cluster, clips, folder_gallery, tmp_path
) -> None:
    import ray

    uri = _milvus_uri(milvus_server, "on_ray", tmp_path / "media")
    plan = api.plan_ingest([str(c) for c in clips], commit_interval=0.5)  # commit often: a kill lands mid-source
    events: list[tuple[str, dict]] = []
    killed: list[int] = []

    def kill_when_committed(source: str, pid: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with open_gallery(uri, create=False, read_only=True) as g:
                status = g.source_status(source)
            if status is not None and status.status == "done":
                return  # too late: the assertion below says so
            if status is not None and (status.progress or 0) >= 10:
                os.kill(pid, signal.SIGKILL)  # the worker process dies, as on a lost node
                killed.append(pid)
                return
            time.sleep(0.1)

    def on_event(kind: str, info: dict) -> None:
        events.append((kind, info))
        if kind == "started" and info["job"] == f"file:{clips[0]}" and not killed:
            threading.Thread(target=kill_when_committed, args=(str(clips[0]), info["pid"]), daemon=True).start()

    summary = api.run_ingest_ray(uri, plan, address=ray_cluster.address, workers=2, on_event=on_event)
    assert killed, "the worker finished before it could be killed"
    assert [r["job"] for r in summary.restarts] == [f"file:{clips[0]}"] and not summary.errors
    nodes = {info["node"] for kind, info in events if kind == "started"}
    assert len(nodes) == 2  # both nodes worked
    resumed = [r for r in summary.reports if Path(r.uri) == clips[0]]
    assert len(resumed) == 1 and resumed[0].status == "done" and resumed[0].resumed_from is not None
    _same_sightings(_sightings(uri), _sightings(folder_gallery))  # nothing lost, nothing twice
    assert ray.is_initialized()


def test_ray_ingest_of_a_live_camera_beside_a_file(
    milvus_server, ray_cluster, rtsp_server, rtsp_clip, clips, tmp_path
) -> None:
    """A cameras file with a real RTSP camera and a file, on the cluster: the camera on one worker until the
    driver stops it, the file on the other. The stop comes once the file is done and the camera has been read
    for 15 s (a fixed ``duration`` counts the workers' start-up too, which took over 30 s on a slow host with a
    training run beside the tests)."""
    uri = _milvus_uri(milvus_server, "ray_live", tmp_path / "media")
    cams = tmp_path / "cams.yaml"
    url = rtsp_server.publish("door", rtsp_clip("asis", seconds=30))
    cams.write_text(f"cameras:\n  - name: door\n    uri: {url}\n  - name: archive\n    uri: {clips[1]}\n")
    plan = api.plan_ingest([], cameras=cams)
    stop, door_started, archive_done = threading.Event(), threading.Event(), threading.Event()

    def on_event(kind: str, info: dict) -> None:
        if kind == "started" and info["job"] == "cameras:door":
            door_started.set()
        elif kind == "done" and info["job"].startswith("file:"):
            archive_done.set()

    def stop_when_ready() -> None:
        door_started.wait(300)
        time.sleep(15.0)
        archive_done.wait(300)
        stop.set()

    threading.Thread(target=stop_when_ready, daemon=True).start()

    summary = api.run_ingest_ray(
        uri, plan, address=ray_cluster.address, workers=2, stop=stop, duration=300, on_event=on_event
    )
    assert not summary.errors, summary.errors
    reports = {r.camera: r for r in summary.reports}
    assert reports["archive"].status == "done" and reports["archive"].frames == 80
    assert reports["door"].status == "stopped" and reports["door"].live["detected"] > 5, reports["door"]
    with open_gallery(uri, create=False, read_only=True) as g:
        assert {r.camera for r in g.get(g.ids().tolist())} == {"door", "archive"}


def test_ray_extract_gives_the_single_machine_features(ray_cluster, data_root) -> None:
    from reidkit.extract import embed_on_ray, make_embedder

    paths = sorted(str(p) for p in (data_root / "market1501" / "bounding_box_test").glob("*.jpg"))[:96]
    kwargs = {"batch_size": 16, "threads": 1}
    want = make_embedder(None, None, "torch", **kwargs)[0].embed(paths)
    got = embed_on_ray(paths, (None, None, "torch"), kwargs, address=ray_cluster.address, workers=2, shard=32)
    assert np.array_equal(got, want)
