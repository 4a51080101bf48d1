"""Live cameras (issue 20) against a real RTSP server on loopback (tests/rtsp.py): several streams at once,
a camera that goes away and comes back, one that never connects, SIGTERM, kill -9 and a re-run, the
cameras file, and the search service seeing new sightings while the ingest runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reidkit.search.ingest.cameras import CameraError, load_cameras
from reidkit.search.storage import Gallery

ROOT = Path(__file__).resolve().parents[1]
REIDKIT = [sys.executable, "-m", "reidkit.cli"]


def _cameras(path: Path, cams: dict[str, str]) -> Path:
    path.write_text("cameras:\n" + "".join(f"  - name: {n}\n    uri: {u}\n" for n, u in cams.items()))
    return path


def _start(tmp: Path, cams: Path, gallery: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [*REIDKIT, "ingest", "--cameras", str(cams), "--gallery", str(gallery), "--detector", "ssd",
           "--json", str(tmp / "report.json"), *extra]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=(tmp / "out.txt").open("w"), stderr=subprocess.STDOUT)


def _stop(p: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[int, float]:
    t = time.monotonic()
    p.send_signal(sig)
    rc = p.wait(timeout=60)
    return rc, time.monotonic() - t


def _sightings_by_camera(gallery: Path) -> dict[str, int]:
    with Gallery.open(gallery, read_only=True) as g:
        out: dict[str, int] = {}
        for r in g.records():
            out[r.camera] = out.get(r.camera, 0) + 1
        return out


def test_cameras_file_errors_name_the_file_and_the_camera(tmp_path: Path) -> None:
    ok = _cameras(tmp_path / "ok.yaml", {"a": "rtsp://127.0.0.1:1/a", "b": "/data/b.mp4"})
    assert [c.name for c in load_cameras(ok)] == ["a", "b"]
    cases = {
        "cameras:\n  - name: a\n": r"bad\.yaml: camera 1 \('a'\): uri is missing",
        "cameras:\n  - name: a\n    uri: x\n    fsp: 3\n": r"camera 1 \('a'\): fsp is not a known option",
        "cameras:\n  - name: a b\n    uri: x\n": r"camera 1 \('a b'\): name must be 1-64 letters",
        "cameras:\n  - name: a\n    uri: x\n    fps: -1\n": r"camera 1 \('a'\): fps",
        "cameras:\n  - {name: a, uri: x}\n  - {name: a, uri: y}\n": r"two cameras are named 'a'",
        "cameras: [\n": r"bad\.yaml: not valid YAML",
        "cameras: []\n": r"bad\.yaml: cameras",
    }
    for text, pattern in cases.items():
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(CameraError, match=pattern):
            load_cameras(tmp_path / "bad.yaml")
    with pytest.raises(CameraError, match=r"nope\.yaml: cannot read"):
        load_cameras(tmp_path / "nope.yaml")
    r = subprocess.run([*REIDKIT, "ingest", "--cameras", str(tmp_path / "bad.yaml"), "--gallery", str(tmp_path / "g")],
                       cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "bad.yaml" in r.stdout and not (tmp_path / "g").exists()


def test_streams_at_once_a_camera_that_leaves_and_returns_one_that_never_connects(
    rtsp_server, rtsp_clip, tmp_path: Path
) -> None:
    import rtsp
    from fastapi.testclient import TestClient

    from reidkit.service import create_app

    clip, mirrored = rtsp_clip("asis", seconds=30), rtsp_clip("mirror", seconds=30)
    cams = {"cam1": rtsp_server.publish("cam1", clip), "cam2": rtsp_server.publish("cam2", mirrored),
            "dead": rtsp.dead_url().replace("rtsp://", "rtsp://admin:s3cret@")}  # fmt: skip
    gallery = tmp_path / "g"
    p = _start(tmp_path, _cameras(tmp_path / "cams.yaml", cams), gallery)
    try:
        deadline = time.monotonic() + 60
        while not (gallery / "gallery.db").is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        seen: dict[str, int] = {}
        with TestClient(create_app(gallery, refresh_s=0.5)) as client:
            while time.monotonic() < deadline and not {"cam1", "cam2"} <= {k for k, v in seen.items() if v}:
                time.sleep(1.0)
                r = client.get("/gallery")
                if r.status_code == 200:
                    seen = {c["camera"]: c["sightings"] for c in r.json()["cameras"]}
        assert {"cam1", "cam2"} <= {k for k, v in seen.items() if v}, f"the service saw only {seen} while ingesting"
        rtsp_server.unpublish("cam2")
        time.sleep(6)
        back = time.time()
        rtsp_server.publish("cam2", mirrored)
        time.sleep(8)
        rc, took = _stop(p)
    finally:
        if p.poll() is None:
            p.kill()
    out = (tmp_path / "out.txt").read_text()
    assert rc == 2, out  # the camera that never connected makes the run fail at the end ...
    assert took < 10, f"SIGTERM took {took:.1f} s"
    assert f"{cams['dead'].replace('admin:s3cret@', '')}: could not be read" in out and "s3cret" not in out
    report = json.loads((tmp_path / "report.json").read_text())
    status = {r["camera"]: r["status"] for r in report["reports"]}
    assert status == {"cam1": "stopped", "cam2": "stopped", "dead": "failed"}  # ... the others unaffected
    live = {r["camera"]: r["live"] for r in report["reports"]}
    assert live["cam1"]["read"] > 100 and live["cam1"]["detected"] > 30 and live["cam2"]["reconnects"] >= 1
    with Gallery.open(gallery, read_only=True) as g:
        by_id = {s.id: s for s in g.sources()}
        assert {s.camera: s.status for s in by_id.values()} == status
        events = [(by_id[e.source_id].camera, e.event, e.time) for e in g.events()]
        cam2 = [(ev, t) for c, ev, t in events if c == "cam2"]
        assert [ev for ev, _ in cam2] == ["online", "offline", "online", "stopped"], cam2
        assert ("dead", "offline") in {(c, ev) for c, ev, _ in events}
        after = [r for r in g.records() if r.camera == "cam2" and r.timestamp > back]
        assert after, "nothing stored from cam2 after it came back"


def test_kill_9_then_a_rerun_continues(rtsp_server, rtsp_clip, tmp_path: Path) -> None:
    cams = _cameras(tmp_path / "cams.yaml", {"cam3": rtsp_server.publish("cam3", rtsp_clip("dark", seconds=30))})
    gallery = tmp_path / "g"
    p = _start(tmp_path, cams, gallery)
    time.sleep(14)
    p.kill()
    p.wait(30)
    before = _sightings_by_camera(gallery).get("cam3", 0)
    assert before > 0, "nothing committed in the first 14 s"
    p = _start(tmp_path, cams, gallery)
    time.sleep(10)
    rc, took = _stop(p, signal.SIGINT)
    assert rc == 0 and took < 10, (rc, took, (tmp_path / "out.txt").read_text())
    with Gallery.open(gallery, read_only=True) as g:
        rows = [(r.track_id, r.frame) for r in g.records()]
        assert len(rows) > before and len(set(rows)) == len(rows)  # appended, no (track, frame) twice
        assert [s.status for s in g.sources()] == ["stopped"]


def test_a_file_beside_a_stream_and_duration(rtsp_server, rtsp_clip, tmp_path: Path) -> None:
    """A file listed with the streams is ingested whole, as fast as the machine allows; --duration ends the run."""
    short = rtsp_clip("asis", seconds=4, start=20)
    cams = _cameras(tmp_path / "cams.yaml", {"cam5": rtsp_server.publish("cam5", rtsp_clip("mirror", seconds=30)),
                                             "archive": str(short)})  # fmt: skip
    p = _start(tmp_path, cams, tmp_path / "g", "--duration", "12")
    rc = p.wait(timeout=120)
    assert rc == 0, (tmp_path / "out.txt").read_text()
    report = {r["camera"]: r for r in json.loads((tmp_path / "report.json").read_text())["reports"]}
    archive = report["archive"]
    assert archive["status"] == "done" and archive["frames"] == 40 and archive["live"] is None
    assert report["cam5"]["status"] == "stopped" and report["cam5"]["live"]["detected"] > 10
    assert set(_sightings_by_camera(tmp_path / "g")) == {"archive", "cam5"}
