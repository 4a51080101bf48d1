"""A real Milvus standalone server on this machine for the gallery tests and benchmark (issue 21).

The ``milvus`` PyPI package (2.3.5, no dependencies) ships the standalone server binary (embedded etcd,
rocksmq, local storage). Its gRPC and HTTP listeners bind every interface (``*:19530``, ``*:9091`` and
seven internal ports, seen with ``ss -ltn``; only etcd keeps to 127.0.0.1) and no setting changes that.
So :class:`LoopbackMilvus` runs it in a network namespace of its own that has nothing but a loopback
interface: nothing off this machine can reach it, and it cannot collide with the ports of another server.
A launcher process (this file, run as a script) opens the one listener clients use on 127.0.0.1 of the
host (a free port), then leaves the host's network (``unshare(CLONE_NEWNET)``; unprivileged:
``CLONE_NEWUSER | CLONE_NEWNET``), brings its ``lo`` up, starts the server there and forwards every
connection it accepts to the server's 127.0.0.1:19530 inside the namespace (a socket keeps the namespace
it was made in). Where namespaces are not allowed, the server does not start (:class:`MilvusUnavailable`
says why) rather than listen on every interface.

* ``LoopbackMilvus(folder, settings={"proxy.timeTickInterval": 20})`` (context manager; ``settings``
  override the package's milvus.yaml by dotted key): ``start()``, ``uri`` (``http://127.0.0.1:PORT``),
  ``host``/``port``, ``stop()`` (SIGTERM to the launcher, which stops the server; SIGKILL to the process
  group after a grace). The launcher and the server die with the process that started them (pdeathsig).
* The binaries are unpacked once into ``$REIDKIT_MILVUS_HOME`` (default ``~/.cache/reidkit-milvus``), not
  per folder; ``folder`` holds the server's config, logs and data.
* ``isolate()`` then ``start_server(folder)``: a benchmark leaves the host's network itself and runs the
  server beside it, talking to it directly (no forwarder); ``stop_server(proc)``.
* ``python tests/milvus_local.py [seconds]``: start one, print its start time and address, stop it.

Measured here (2026-12-06, 2 busy cores, milvus 2.3.5 with pymilvus 3.0.2): unpacking the binaries
(246 MB) takes ~4 s once; the server then answers ``/healthz`` in 2.4-3.7 s (the package's own
``MilvusServer.start`` takes ~13 s: it polls slowly and sleeps); stopped in < 1 s. A new collection takes
~0.5 s to index and ~2.3 s to load; reads right after a write wait for the next time tick (200 ms by
default; the tests set 20 ms).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1


class MilvusUnavailable(RuntimeError):
    """The server cannot be started here (the message says why)."""


def installed() -> bool:
    """Whether the ``milvus`` package (the standalone server) is installed."""
    import importlib.util

    return importlib.util.find_spec("milvus") is not None


def binaries() -> Path:
    """The folder holding the unpacked server binary and its libraries (unpacked on first use)."""
    import milvus

    home = Path(os.environ.get("REIDKIT_MILVUS_HOME") or Path.home() / ".cache" / "reidkit-milvus") / milvus.__version__
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:  # two sessions unpacking at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        milvus._initialize_data_files(str(home))
    return home / "bin"


def _pdeathsig(sig: int = signal.SIGKILL) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def _leave_host_network() -> None:
    """Move this process into a new network namespace with only ``lo``, up."""
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWNET) != 0:
        first = os.strerror(ctypes.get_errno())
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
            second = os.strerror(ctypes.get_errno())
            raise MilvusUnavailable(
                f"cannot give the Milvus server a network of its own (unshare: {first}; as a user namespace: "
                f"{second}); it would listen on every interface, so it is not started"
            )
        with contextlib.suppress(OSError):
            Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH", fcntl.ioctl(s, siocgifflags, struct.pack("16sH14x", b"lo", 0))[:18])[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def _configure(folder: Path, settings: dict[str, Any]) -> tuple[int, int]:
    """Write ``folder/configs/milvus.yaml`` (the package's template, this folder's paths, ``settings`` by
    dotted key); returns (gRPC port, HTTP port) inside the namespace."""
    from milvus import MilvusServerConfig

    cfg = MilvusServerConfig(data_dir=str(folder))
    for key, value in settings.items():
        cfg.set(key, value)
    cfg.resolve()  # inside the new namespace every default port is free
    return int(cfg.get("proxy_port")), 9091


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _forward(conn: socket.socket, port: int) -> None:
    try:
        up = socket.create_connection((HOST, port), timeout=10)
    except OSError:
        conn.close()
        return
    up.settimeout(None)
    for s in (conn, up):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    a = threading.Thread(target=_pump, args=(conn, up), daemon=True)
    a.start()
    _pump(up, conn)
    a.join()
    conn.close()
    up.close()


def isolate() -> None:
    """Move this process (before it starts threads) into a network namespace of its own with only a
    loopback interface, as the launcher does; a benchmark then runs :func:`start_server` beside itself and
    talks to it directly (no forwarder in the way). MilvusUnavailable where namespaces are not allowed."""
    _leave_host_network()


def start_server(
    folder: Path, settings: dict[str, Any] | None = None, timeout: float = 180.0
) -> tuple[subprocess.Popen, int]:
    """Start the server in this process's network namespace (see :func:`isolate`; never in the host's:
    it binds every interface); returns it, healthy, and its gRPC port. MilvusUnavailable if it fails."""
    folder.mkdir(parents=True, exist_ok=True)
    grpc_port, http_port = _configure(folder, settings or {})
    bindir = binaries()
    env = dict(os.environ, DEPLOY_MODE="STANDALONE", METRICS_PORT=str(http_port), MILVUS_RUN_DIR=str(folder / "run"))
    env["LD_LIBRARY_PATH"] = f"{bindir}:{os.environ.get('LD_LIBRARY_PATH', '')}"
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "milvus-stdout.log", "ab") as out:
        server = subprocess.Popen(
            [str(bindir / "milvus"), "run", "standalone"], cwd=folder, env=env, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, preexec_fn=_pdeathsig,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    health = f"http://{HOST}:{http_port}/healthz"
    while True:
        if server.poll() is not None:
            raise MilvusUnavailable(f"the server exited with {server.returncode}; see {logs}")
        with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=2) as r:
            if b"OK" in r.read():
                return server, grpc_port
        if time.monotonic() > deadline:
            stop_server(server)
            raise MilvusUnavailable(f"not healthy after {timeout:.0f} s; see {logs}")
        time.sleep(0.2)


def stop_server(server: subprocess.Popen, grace: float = 10.0) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(grace)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _serve(folder: Path, settings: dict[str, Any]) -> int:
    """The launcher (a process of its own): see the module docstring. Prints ``READY <port>`` when up."""
    _pdeathsig(signal.SIGTERM)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        _leave_host_network()
        server, grpc_port = start_server(folder, settings)
    except MilvusUnavailable as exc:
        print(f"FAILED {exc}", flush=True)
        return 2
    try:
        print(f"READY {port}", flush=True)
        sel = selectors.DefaultSelector()
        listener.setblocking(False)
        sel.register(listener, selectors.EVENT_READ)
        while not stop.is_set() and server.poll() is None:
            if sel.select(timeout=0.2):
                with contextlib.suppress(BlockingIOError):
                    conn, _ = listener.accept()
                    conn.setblocking(True)
                    threading.Thread(target=_forward, args=(conn, grpc_port), daemon=True).start()
        return 0
    finally:
        listener.close()
        stop_server(server)


class LoopbackMilvus:
    """A Milvus standalone server reachable at 127.0.0.1 only (see the module docstring)."""

    def __init__(
        self, folder: str | os.PathLike[str], settings: dict[str, Any] | None = None, start_timeout: float = 180.0
    ) -> None:
        self.folder = Path(folder)
        self.settings = dict(settings or {})
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.started_in: float | None = None
        self._proc: subprocess.Popen | None = None

    host = HOST

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> LoopbackMilvus:
        if not installed():
            raise MilvusUnavailable("the milvus package (the standalone server) is not installed: pip install milvus")
        self.folder.mkdir(parents=True, exist_ok=True)
        binaries()  # unpack here (the launcher would too), so a failure shows in this process
        guard = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []
        t0 = time.perf_counter()
        with open(self.folder / "launcher.log", "ab") as err:
            self._proc = subprocess.Popen(
                [*guard, sys.executable, __file__, "--serve", str(self.folder), json.dumps(self.settings)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, start_new_session=True, text=True,
            )  # fmt: skip
        line = self._read_line()
        if not line.startswith("READY "):
            self.stop()
            raise MilvusUnavailable(line.removeprefix("FAILED ").strip() or f"the launcher died; see {self.folder}")
        self.port = int(line.split()[1])
        self.started_in = time.perf_counter() - t0
        return self

    def _read_line(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self._proc.stdout, selectors.EVENT_READ)
        if not sel.select(self.start_timeout):
            return f"FAILED not started in {self.start_timeout:.0f} s; see {self.folder}/logs"
        return self._proc.stdout.readline()

    def stop(self, grace: float = 15.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> LoopbackMilvus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        sys.exit(_serve(Path(sys.argv[2]), json.loads(sys.argv[3])))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="milvus-") as tmp, LoopbackMilvus(tmp) as srv:
        print(f"started in {srv.started_in:.1f} s at {srv.uri} (folder {tmp})")
        time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0)
        t = time.perf_counter()
    print(f"stopped in {time.perf_counter() - t:.1f} s")
