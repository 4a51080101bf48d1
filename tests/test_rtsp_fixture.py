"""The real RTSP server of tests/rtsp.py serves what the live-ingest tests rely on (issue 20): several
cameras at once in real time, a camera that goes away and comes back, one that hangs, one that never
connects, opens that cannot hang, and no process left behind."""

from __future__ import annotations

import os
import threading
import time

import pytest
import rtsp


def _frames_in(url: str, seconds: float) -> int:
    cap = rtsp.open_capture(url, read_timeout=2)
    n, start = 0, time.monotonic()
    while time.monotonic() - start < seconds and cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_two_cameras_at_once_in_real_time(rtsp_server, rtsp_clip) -> None:
    urls = [rtsp_server.publish("front", rtsp_clip()), rtsp_server.publish("back", rtsp_clip("mirror"))]
    counts: dict[str, int] = {}
    readers = [threading.Thread(target=lambda u=u: counts.__setitem__(u, _frames_in(u, 3.0))) for u in urls]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    assert all(20 <= counts[u] <= 40 for u in urls), counts  # 10 frames/s each, no faster (ffmpeg -re)
    assert sorted(rtsp_server.published()) == ["back", "front"]
    rtsp_server.unpublish("front")
    rtsp_server.unpublish("back")


def test_camera_goes_away_and_comes_back(rtsp_server, rtsp_clip) -> None:
    url = rtsp_server.publish("door", rtsp_clip())
    cap = rtsp.open_capture(url, read_timeout=1)
    assert cap.read()[0]
    rtsp_server.unpublish("door")
    start = time.monotonic()
    while cap.read()[0]:  # two frames FFmpeg still held, each after the read timeout, then False
        assert time.monotonic() - start < 8, "reads still succeed long after the publisher stopped"
    cap.release()
    assert time.monotonic() - start >= 0.9  # nothing tells the reader: it finds out by timing out
    assert not rtsp.readable(url, timeout=2)  # the name is unmounted: a fresh open fails (404)
    assert rtsp_server.publish("door", rtsp_clip()) == url
    assert _frames_in(url, 2.0) >= 12


def test_crashed_publisher_leaves_a_hanging_camera(rtsp_server, rtsp_clip) -> None:
    url = rtsp_server.publish("stuck", rtsp_clip())
    rtsp_server.unpublish("stuck", crash=True)
    start = time.monotonic()
    assert not rtsp.readable(url, timeout=1.5)  # still mounted, no data: only the timeout ends the wait
    assert 1.0 <= time.monotonic() - start < 6
    with pytest.raises(RuntimeError, match="403"):
        rtsp_server.publish("stuck", rtsp_clip(), timeout=10)


def test_dead_camera_fails_at_once(rtsp_server) -> None:
    start = time.monotonic()
    cap = rtsp.open_capture(rtsp_server.dead_url(), open_timeout=2)
    assert not cap.isOpened()
    assert time.monotonic() - start < 1.5


@pytest.mark.parametrize("bound", ["opencv_open_timeout", "ffmpeg_timeout_option"])
def test_open_of_a_silent_camera_is_bounded(rtsp_server, bound) -> None:
    url = rtsp_server.silent_url()
    start = time.monotonic()
    if bound == "opencv_open_timeout":  # CAP_PROP_OPEN_TIMEOUT_MSEC (OpenCV's own; default 30 s)
        cap = rtsp.open_capture(url, open_timeout=1.5)
    else:  # FFmpeg's socket timeout in microseconds (FFmpeg >= 5; "stimeout" is ignored there)
        cap = rtsp.open_capture(url, open_timeout=30, options=rtsp.CAPTURE_OPTIONS + "|timeout;1500000")
    elapsed = time.monotonic() - start
    assert not cap.isOpened()
    assert 1.0 <= elapsed < 5, elapsed


def test_stop_leaves_no_process(tmp_path, rtsp_clip, rtsp_server) -> None:
    # rtsp_server only for its skip (or failure under REIDKIT_REQUIRE_DATA=1) without the tools
    with rtsp.RtspServer(tmp_path) as server:
        url = server.publish("cam", rtsp_clip())
        pids = server.pids()
        assert len(pids) == 2 and url.startswith("rtsp://127.0.0.1:")
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not rtsp.readable(url, timeout=1)
