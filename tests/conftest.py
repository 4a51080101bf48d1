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


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """A real Milvus standalone server (the ``milvus`` package's), reachable on 127.0.0.1 only
    (``tests/milvus_local.py``), one per session, stopped at its end. ``.port``, ``.uri``. Skips when the
    server cannot start; under ``REIDKIT_REQUIRE_DATA=1`` that fails where the package is installable
    (Linux x86_64, where ``make test`` installs it with the ``cluster`` extra)."""
    import platform
    import sys

    import milvus_local

    installable = sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")
    missing = (installable and _unavailable) or pytest.skip
    if not milvus_local.installed():
        missing("the milvus package (a standalone Milvus server) is not installed: pip install -e '.[cluster]'")
    # A 20 ms time tick (default 200) makes reads right after a write wait less; a 100 ms query-coordinator
    # check (default 1 s) makes a collection load sooner.
    settings = {"proxy.timeTickInterval": 20, "queryCoord.checkInterval": 100}
    server = milvus_local.LoopbackMilvus(tmp_path_factory.mktemp("milvus"), settings)
    try:
        server.start()
    except milvus_local.MilvusUnavailable as exc:
        missing(f"the Milvus server did not start: {exc}")
    try:
        yield server
    finally:
        server.stop()
