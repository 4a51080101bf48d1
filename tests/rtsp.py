"""Real RTSP cameras on loopback for the live-ingest tests and benchmark (issue 20).

Debian's ``rtsp-server-perl`` relays what ``ffmpeg -re`` publishes to it; OpenCV (or any RTSP client)
reads it back. Everything binds 127.0.0.1 and every process is ours to stop.

* ``encode_clip(src, out, seconds=, start=, variant=, fps=)``: pre-encode footage to MPEG-4 Part 2
  (one keyframe a second) so publishers can send it with ``-c copy``; variants ``asis``, ``mirror``
  (hflip), ``zoom`` (centre 3/4 crop scaled back), ``dark`` (brightness -0.25). Cached: a second call
  with the same arguments returns at once while the output is newer than the source.
* ``RtspServer`` (context manager): ``url(name)`` to read, ``publish(name, clip)`` (returns once a
  reader gets a frame), ``unpublish(name)`` (a camera that goes away; ``crash=True``: one that hangs),
  ``silent_url()`` (accepts TCP, never answers), ``dead_url()`` (nothing listens), ``stop()``.
* ``open_capture(url, open_timeout=, read_timeout=)``: a ``cv2.VideoCapture`` with both waits bounded.
* ``python tests/rtsp.py``: re-measures the facts below.

Tests get a server per module from the ``rtsp_server`` fixture and clips from ``rtsp_clip``
(tests/conftest.py); a benchmark does ``sys.path.insert(0, <repo>)`` then ``from tests.rtsp import ...``.

Measured here (2026-12-06; opencv-python-headless 4.14 with its bundled FFmpeg, libavformat 62;
rtsp-server-perl 0.06; Debian ffmpeg 5.1; 768x576 10 fps MPEG-4; 2 busy cores):

* Transport: UDP only. ``rtsp_transport;udp`` is required; ``rtsp_transport;tcp`` (interleaved) fails to
  open in 0.1 s: the server only accepts a SETUP naming ``client_port``.
* Open: 0.25-0.35 s from ``VideoCapture(url)`` to opened, first ``read()`` 0.01 s later; then 10 frames/s.
  An unknown name: DESCRIBE 404, open fails in 0.04 s. Nothing listening: refused, fails in < 0.01 s.
* Bounding the open (a peer that accepts and never answers; without a bound OpenCV waits 30 s):
  ``VideoCapture(url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 2000,
  cv2.CAP_PROP_READ_TIMEOUT_MSEC, 2000])`` fails in 2.0 s, and so does
  ``OPENCV_FFMPEG_CAPTURE_OPTIONS="rtsp_transport;udp|timeout;2000000"`` (FFmpeg's socket timeout in
  microseconds; it bounds reads too). ``stimeout`` is IGNORED by this FFmpeg (removed in FFmpeg 5): 30 s.
  Prefer the OpenCV properties: they do not depend on the FFmpeg version (in FFmpeg 4, ``timeout`` on
  rtsp meant "listen as a server").
* Publisher gone (SIGTERM or SIGKILL): the server tells readers nothing; UDP just stops. Each ``read()``
  then blocks for the read timeout (default 30 s); the first two still return True (two last frames
  FFmpeg still held, not repeats), from the third on False: after 3 x the read timeout. So a reader
  should treat "no new frame for N s" as a loss rather than wait for False.
* Publisher back: the same ``VideoCapture`` never recovers (reads keep failing after the timeout);
  release it and open a new one: 0.3 s, then 10 frames/s again.
* A publisher killed with SIGKILL sends no TEARDOWN, and rtsp-server-perl only unmounts on TEARDOWN: the
  name stays mounted with no data. Readers then open (DESCRIBE succeeds) and get nothing until the open
  timeout, and a new publisher under that name is refused (ANNOUNCE 403) for the server's lifetime.
  ``unpublish(name, crash=True)`` reproduces this (a camera that hangs); plain ``unpublish`` is clean.
* rtsp-server-perl takes 2 UDP ports per publisher and per reader session from ``--rtp_start_port`` up,
  and falls back to a hard-coded 20000 when no name is mounted; ``RtspServer`` starts it through a
  ``perl -e`` wrapper that moves both to a free block, so several servers can run at once.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path

import cv2

VTEST = Path(os.environ.get("REIDKIT_VTEST", "/usr/share/doc/opencv-doc/examples/data/vtest.avi"))
HOST = "127.0.0.1"
CAPTURE_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
CAPTURE_OPTIONS = "rtsp_transport;udp"  # what OpenCV needs for this server (TCP interleaved fails)
VARIANTS = ("asis", "mirror", "zoom", "dark")
SERVER_BIN = "rtsp-server-perl"
RTP_BLOCK = 400  # UDP ports kept free above --rtp_start_port: 2 per publisher and per reader session
# Runs /usr/bin/rtsp-server-perl with RTSP::Server's hard-coded fallback RTP port moved to ours.
_WRAPPER = "$RTSP::Server::RTP_START_PORT = $ENV{REIDKIT_RTP_START}; do $ENV{REIDKIT_RTSP_BIN}; die $@ if $@;"


def missing_tools() -> list[str]:
    """The programs this module needs that are not on PATH (empty when it can serve)."""
    return [b for b in ("ffmpeg", "perl", SERVER_BIN) if shutil.which(b) is None]


# --- footage -------------------------------------------------------------------------------------


def _frame_size(src: Path) -> tuple[int, int]:
    cap = cv2.VideoCapture(str(src))
    try:
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    if w <= 0 or h <= 0:
        raise ValueError(f"cannot read the frame size of {src}")
    return w, h


def encode_clip(
    src: str | Path,
    out: str | Path,
    *,
    seconds: float | None = None,
    start: float = 0,
    variant: str = "asis",
    fps: float = 10,
) -> Path:
    """Encode ``seconds`` of ``src`` from ``start`` to an MPEG-4 file ``out`` that publishers send as is.

    ``variant``: ``asis``, ``mirror`` (flipped left-right), ``zoom`` (the centre 3/4 scaled back to full
    size) or ``dark`` (brightness -0.25). Same size as the source, ``fps`` frames/s, a keyframe every
    second (a reader joining a stream waits at most that long), no audio. Skipped when ``out`` exists,
    is newer than ``src`` and was made with the same arguments (recorded in ``out.json`` beside it).
    """
    src, out = Path(src), Path(out)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
    w, h = _frame_size(src)
    filters = {
        "asis": [],
        "mirror": ["hflip"],
        "zoom": [f"crop={w * 3 // 8 * 2}:{h * 3 // 8 * 2}", f"scale={w}:{h}"],
        "dark": ["eq=brightness=-0.25"],
    }[variant] + [f"fps={fps:g}"]
    cut = (["-ss", f"{start:g}"] if start else []) + (["-t", f"{seconds:g}"] if seconds is not None else [])
    codec = [
        "-an",
        "-vf",
        ",".join(filters),
        "-c:v",
        "mpeg4",
        "-q:v",
        "5",
        "-g",
        f"{max(1, round(fps))}",
        "-pix_fmt",
        "yuv420p",
    ]
    stamp = out.with_name(out.name + ".json")
    key = json.dumps({"src": str(src.resolve()), "bytes": src.stat().st_size, "cut": cut, "codec": codec})
    if out.is_file() and stamp.is_file() and stamp.read_text() == key and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f".{out.stem}.{os.getpid()}.part{out.suffix}")
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *cut, "-i", str(src), *codec, str(part)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        part.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg could not encode {src} -> {out}: {done.stderr.strip()[-2000:]}")
    os.replace(part, out)
    stamp.write_text(key)
    return out


# --- reading -------------------------------------------------------------------------------------

_env_lock = threading.Lock()


def open_capture(
    url: str, *, open_timeout: float = 3.0, read_timeout: float = 3.0, options: str = CAPTURE_OPTIONS
) -> cv2.VideoCapture:
    """``cv2.VideoCapture(url)`` over FFmpeg with ``OPENCV_FFMPEG_CAPTURE_OPTIONS=options`` for this open
    only, and the open and each ``read()`` bounded (seconds) by OpenCV's own timeouts (default 30 s)."""
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        int(open_timeout * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        int(read_timeout * 1000),
    ]
    with _env_lock:  # OpenCV reads the variable during the open, so set it just for that
        before = os.environ.get(CAPTURE_ENV)
        os.environ[CAPTURE_ENV] = options
        try:
            return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        finally:
            if before is None:
                os.environ.pop(CAPTURE_ENV, None)
            else:
                os.environ[CAPTURE_ENV] = before


def readable(url: str, *, timeout: float = 3.0) -> bool:
    """Whether a fresh reader opens ``url`` and decodes one frame within about ``timeout`` seconds."""
    cap = open_capture(url, open_timeout=timeout, read_timeout=timeout)
    try:
        return cap.isOpened() and cap.read()[0]
    finally:
        cap.release()


# --- processes and ports -------------------------------------------------------------------------


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _tcp_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _udp_free(first: int, count: int) -> bool:
    for port in range(first, first + count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                return False
    return True


def _free_udp_block(count: int = RTP_BLOCK) -> int:
    """An even port with ``count`` free UDP ports from it, below Linux's ephemeral range (32768-)."""
    for _ in range(50):
        first = random.randrange(20000, 32768 - count, 2)
        if _udp_free(first, count):
            return first
    raise RuntimeError(f"no block of {count} free UDP ports on {HOST} in 20000-32767")


def dead_url(name: str = "cam") -> str:
    """An rtsp URL on 127.0.0.1 where nothing listens (a camera that never connects): refused at once."""
    return f"rtsp://{HOST}:{_free_tcp_port()}/{name}"


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own process group, output to ``log``. Where util-linux's ``setpriv`` exists,
    the child also gets SIGTERM if the thread that started it dies (pytest killed with -9: no orphans)."""
    guard = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [*guard, *cmd],
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen, grace: float = 3.0, sig: int = signal.SIGTERM) -> None:
    """Signal ``proc``'s process group (``sig``, then SIGKILL after ``grace`` s) and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip()
    except OSError:
        return ""


_live: weakref.WeakSet[RtspServer] = weakref.WeakSet()
atexit.register(lambda: [s.stop() for s in list(_live)])


class RtspServer:
    """rtsp-server-perl on free loopback ports, and the ffmpeg publishers feeding it.

    ``with RtspServer(log_dir) as srv: url = srv.publish("cam1", clip)`` then read ``url`` over UDP.
    Logs go to ``log_dir`` (``rtsp-server.log``, ``publish-<name>.log``; a temporary folder removed at
    ``stop()`` when not given). ``stop()`` (also on leaving the ``with``, and at interpreter exit) ends
    every process it started.
    """

    def __init__(self, log_dir: str | Path | None = None, *, start_timeout: float = 10.0) -> None:
        self._own_dir = log_dir is None
        self.log_dir = Path(tempfile.mkdtemp(prefix="reidkit-rtsp-") if log_dir is None else log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.start_timeout = start_timeout
        self.client_port = self.source_port = self.rtp_start_port = 0
        self._server: subprocess.Popen | None = None
        self._publishers: dict[str, subprocess.Popen] = {}
        self._silent: list[socket.socket] = []

    @property
    def log(self) -> Path:
        return self.log_dir / "rtsp-server.log"

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> RtspServer:
        """Start the server on fresh ports (retried on a port race); returns once both ports accept."""
        if self._server is not None:
            return self
        binary = shutil.which(SERVER_BIN)
        if binary is None or shutil.which("perl") is None:
            raise RuntimeError(f"{SERVER_BIN} not found: apt-get install -y rtsp-server-perl ffmpeg (or make rtsp)")
        for _ in range(3):
            client, source = _free_tcp_port(), _free_tcp_port()
            if client == source or not (_tcp_free(client) and _tcp_free(source)):
                continue
            rtp = _free_udp_block()
            env = {**os.environ, "REIDKIT_RTP_START": str(rtp), "REIDKIT_RTSP_BIN": binary}
            cmd = [
                "perl",
                "-MRTSP::Server",
                "-e",
                _WRAPPER,
                "--",
                "--clientport",
                str(client),
                "--serverport",
                str(source),
                "--client_listen_address",
                HOST,
                "--source_listen_address",
                HOST,
                "--rtp_start_port",
                str(rtp),
            ]
            proc = _spawn(cmd, self.log, env)
            if self._wait_listening(proc, (client, source)):
                self._server, self.client_port, self.source_port, self.rtp_start_port = proc, client, source, rtp
                _live.add(self)
                return self
            _stop(proc)
        raise RuntimeError(f"{SERVER_BIN} did not start; its log {self.log}:\n{_tail(self.log)}")

    def _wait_listening(self, proc: subprocess.Popen, ports: tuple[int, ...]) -> bool:
        deadline = time.monotonic() + self.start_timeout
        pending = list(ports)
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection((HOST, pending[0]), timeout=0.5).close()
                pending.pop(0)
            except OSError:
                time.sleep(0.05)
            if not pending:
                time.sleep(0.1)  # a port taken by someone else answers too: make sure ours did not die
                return proc.poll() is None
        return False

    # --- cameras ---

    def url(self, name: str) -> str:
        """Where readers get camera ``name``."""
        return f"rtsp://{HOST}:{self.client_port}/{name}"

    def source_url(self, name: str) -> str:
        """Where a publisher sends camera ``name``."""
        return f"rtsp://{HOST}:{self.source_port}/{name}"

    def publish(self, name: str, clip: str | Path, *, timeout: float = 20.0) -> str:
        """Loop ``clip`` (an ``encode_clip`` output) in real time as camera ``name``; returns its read URL
        once a fresh reader has decoded a frame of it. Raises if the publisher dies or ``timeout`` passes
        (e.g. ANNOUNCE 403: the name is still mounted after ``unpublish(name, crash=True)``)."""
        if self._server is None:
            raise RuntimeError("RtspServer not started")
        old = self._publishers.get(name)
        if old is not None and old.poll() is None:
            raise ValueError(f"camera {name!r} is already published")
        log = self.log_dir / f"publish-{name}.log"
        cmd = [
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "warning",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
            str(clip),
            "-an",
            "-c",
            "copy",
            "-rtsp_transport",
            "udp",
            "-f",
            "rtsp",
            self.source_url(name),
        ]
        proc = self._publishers[name] = _spawn(cmd, log)
        deadline, probe = time.monotonic() + timeout, 1.0
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                del self._publishers[name]
                raise RuntimeError(f"publisher of {name!r} exited ({proc.returncode}); {log}:\n{_tail(log)}")
            # short probes first (a refused publisher exits within 0.1 s), longer ones on a busy machine
            if readable(self.url(name), timeout=min(probe, max(0.5, deadline - time.monotonic()))):
                return self.url(name)
            probe = min(3.0, probe + 1.0)
            time.sleep(0.2)
        self.unpublish(name)
        raise TimeoutError(
            f"camera {name!r} not readable after {timeout:g} s; {log}:\n{_tail(log)}\n{self.log}:\n{_tail(self.log)}"
        )

    def unpublish(self, name: str, *, crash: bool = False) -> None:
        """Camera ``name`` goes away. Plain: its publisher is stopped (SIGTERM: it says TEARDOWN, the name
        is unmounted, readers' opens fail at once with 404, ``publish`` may bring it back). ``crash=True``:
        SIGKILL, so the server keeps the name mounted with no data: opens hang until their timeout and
        the name cannot be published again on this server (see the module docstring)."""
        proc = self._publishers.pop(name, None)
        if proc is not None:
            _stop(proc, sig=signal.SIGKILL if crash else signal.SIGTERM)

    def published(self) -> list[str]:
        """Names whose publisher is running."""
        return [n for n, p in self._publishers.items() if p.poll() is None]

    def silent_url(self, name: str = "cam") -> str:
        """An rtsp URL on 127.0.0.1 that accepts connections and never answers (a camera that hangs at
        connect): an unbounded open waits 30 s there. Closed at ``stop()``."""
        sock = socket.socket()
        sock.bind((HOST, 0))
        sock.listen(64)  # the kernel completes handshakes into the backlog; nobody ever reads them
        self._silent.append(sock)
        return f"rtsp://{HOST}:{sock.getsockname()[1]}/{name}"

    dead_url = staticmethod(dead_url)

    def stop(self) -> None:
        """Stop every publisher, then the server; close the silent listeners. Safe to call twice."""
        for name in list(self._publishers):
            self.unpublish(name)
        if self._server is not None:
            _stop(self._server)
            self._server = None
        for sock in self._silent:
            sock.close()
        self._silent.clear()
        _live.discard(self)
        if self._own_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def pids(self) -> list[int]:
        """Process ids of the server and the running publishers (to check that nothing outlives stop())."""
        procs = [self._server, *self._publishers.values()]
        return [p.pid for p in procs if p is not None and p.poll() is None]


# --- measuring -----------------------------------------------------------------------------------


def measure(clip: Path | None = None) -> None:
    """Print the facts in the module docstring, measured again (about 75 s)."""

    def timed(f, *args, **kw):
        t = time.monotonic()
        return f(*args, **kw), time.monotonic() - t

    def rate(cap: cv2.VideoCapture, seconds: float = 2.0) -> float:
        n, t = 0, time.monotonic()
        while time.monotonic() - t < seconds and cap.read()[0]:
            n += 1
        return n / seconds

    def say(*a):
        print(*a, flush=True)

    with tempfile.TemporaryDirectory() as tmp, RtspServer() as srv:
        clip = clip or encode_clip(VTEST, Path(tmp) / "clip.mp4", seconds=20)
        url = srv.publish("cam1", clip)
        for _ in range(3):
            cap, dt = timed(open_capture, url)
            (ok, _), dr = timed(cap.read)
            say(f"udp open {cap.isOpened()} in {dt:.2f} s, first read {ok} {dr:.2f} s, then {rate(cap):.1f} frames/s")
            cap.release()
        cap, dt = timed(open_capture, url, options="rtsp_transport;tcp")
        say(f"tcp open {cap.isOpened()} in {dt:.2f} s")
        cap, dt = timed(open_capture, srv.url("nosuch"))
        say(f"unknown name: open {cap.isOpened()} in {dt:.2f} s")
        cap, dt = timed(open_capture, dead_url())
        say(f"dead url: open {cap.isOpened()} in {dt:.2f} s")
        silent = srv.silent_url()
        for opts, o in (
            ("rtsp_transport;udp|timeout;2000000", 30),
            ("rtsp_transport;udp|stimeout;2000000", 30),
            (CAPTURE_OPTIONS, 2),
        ):
            cap, dt = timed(open_capture, silent, open_timeout=o, read_timeout=o, options=opts)
            say(f"silent url, options {opts!r}, OPEN_TIMEOUT {o} s: open {cap.isOpened()} in {dt:.2f} s")
        for name, crash in (("gone", False), ("crash", True)):
            url = srv.publish(name, clip)
            cap = open_capture(url, read_timeout=2)
            cap.read()
            srv.unpublish(name, crash=crash)
            gone = time.monotonic()
            for _ in range(4):
                (ok, _), dt = timed(cap.read)
                say(f"{'SIGKILL' if crash else 'SIGTERM'}: read {ok} after {dt:.2f} s ({time.monotonic() - gone:.1f})")
            try:
                srv.publish(name, clip, timeout=10)
            except (RuntimeError, TimeoutError) as e:
                lines = str(e).splitlines()
                say(f"republish {name}: {next((x for x in lines if 'failed' in x), lines[-1])}")
                continue
            say(f"republished: same capture reads {[cap.read()[0] for _ in range(3)]}")
            cap.release()
            cap, dt = timed(open_capture, url)
            say(f"reopen {cap.isOpened()} in {dt:.2f} s, then {rate(cap):.1f} frames/s")
            cap.release()


if __name__ == "__main__":
    measure(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
