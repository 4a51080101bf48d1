"""Shared fixtures: the real datasets and weights under ``$REIDKIT_DATA`` / ``$REIDKIT_WEIGHTS``, and
live cameras (``rtsp_server``, ``rtsp_clip``: a real RTSP server on loopback, see tests/rtsp.py).

Tests that need them (or ffmpeg, rtsp-server-perl, vtest.avi) skip with a reason when they are absent,
unless ``REIDKIT_REQUIRE_DATA=1`` (as in CI), where a missing asset fails the test instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Exported ONNX models go to a throw-away cache, never the user's ~/.cache/reidkit.
os.environ["REIDKIT_CACHE"] = tempfile.mkdtemp(prefix="reidkit-test-cache-")


def _external_root(env: str, marker: str, hint: str) -> Path:
    value = os.environ.get(env)
    root = Path(value).expanduser() if value else None
    if root is not None and (root / marker).exists():
        return root
    found = f"${env}={value}" if value else f"${env} is not set"
    reason = f"{hint} ({found}; {marker} not found there)"
    if os.environ.get("REIDKIT_REQUIRE_DATA") == "1":
        pytest.fail(f"REIDKIT_REQUIRE_DATA=1 but: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """``$REIDKIT_DATA``, the folder holding ``market1501/``."""
    hint = "set REIDKIT_DATA to the folder holding market1501"
    return _external_root("REIDKIT_DATA", "market1501", hint)


@pytest.fixture(scope="session")
def weights_root() -> Path:
    """``$REIDKIT_WEIGHTS``, the folder holding ``reid/osnet_x0_25_market1501.pth``."""
    return _external_root(
        "REIDKIT_WEIGHTS",
        "reid/osnet_x0_25_market1501.pth",
        "set REIDKIT_WEIGHTS to the folder holding reid/osnet_x0_25_market1501.pth",
    )


def _unavailable(reason: str) -> None:
    if os.environ.get("REIDKIT_REQUIRE_DATA") == "1":
        pytest.fail(f"REIDKIT_REQUIRE_DATA=1 but: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def rtsp_server(tmp_path_factory):
    """A real RTSP server on loopback (``tests/rtsp.py``'s ``RtspServer``), one per test module, stopped
    with every publisher at the module's end. ``rtsp_server.publish(name, rtsp_clip())`` gives a URL."""
    import rtsp

    missing = rtsp.missing_tools()
    if missing:
        _unavailable(f"{', '.join(missing)} missing: apt-get install -y ffmpeg rtsp-server-perl (or make rtsp)")
    with rtsp.RtspServer(tmp_path_factory.mktemp("rtsp")) as server:
        yield server


@pytest.fixture(scope="session")
def rtsp_clip(tmp_path_factory):
    """``rtsp_clip(variant="asis", seconds=20, start=0)``: a cut of vtest.avi encoded for publishing
    (``rtsp.encode_clip``; each distinct cut encoded once per session)."""
    import rtsp

    if not rtsp.VTEST.is_file():
        _unavailable(f"{rtsp.VTEST} missing: apt-get install opencv-doc (or set REIDKIT_VTEST)")
    if shutil.which("ffmpeg") is None:
        _unavailable("ffmpeg missing: apt-get install -y ffmpeg (or make rtsp)")
    folder = tmp_path_factory.mktemp("clips")

    def clip(variant: str = "asis", *, seconds: float = 20, start: float = 0) -> Path:
        out = folder / f"vtest-{variant}-{start:g}-{seconds:g}.mp4"
        return rtsp.encode_clip(rtsp.VTEST, out, seconds=seconds, start=start, variant=variant)

    return clip
