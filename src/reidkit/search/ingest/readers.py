"""One reader thread per live stream that always hands on the newest frame.

A live camera never waits for us: :class:`StreamReader` decodes its stream as it arrives (OpenCV's
FFmpeg backend; the decode releases the GIL) into a one-frame mailbox. :meth:`StreamReader.take`
returns the newest frame not yet taken; a frame replaced before anyone took it is *dropped* and
counted, so memory never grows with the backlog and a slow consumer only lowers the rate at which
each camera is processed, never the lag. A stream that cannot be opened, or stops delivering frames,
is reconnected with exponential backoff while the other readers go on; every change (online,
offline and why) is reported to ``on_event``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_OPEN_LOCK = threading.Lock()  # the FFmpeg options are a process-wide environment variable


@dataclass(frozen=True, slots=True)
class LiveFrame:
    """A frame as read: BGR pixels, the wall-clock time it was read and its index in this run's stream."""

    image_bgr: np.ndarray
    timestamp: float
    index: int


@dataclass(frozen=True)
class ReaderOptions:
    """How long to wait for a stream to open, how long without a frame before it counts as lost, and the
    reconnect backoff (first wait, longest wait; doubling in between)."""

    open_timeout_s: float = 5.0
    stall_s: float = 3.0
    backoff: tuple[float, float] = (1.0, 30.0)


@dataclass
class ReaderStats:
    """What a reader did: frames ``read`` from the stream, ``dropped`` (replaced before they were taken),
    ``capped`` (skipped by the camera's fps cap), ``taken``, read ``errors``, ``reconnects``, seconds
    ``offline`` and whether it ever connected."""

    read: int = 0
    dropped: int = 0
    capped: int = 0
    taken: int = 0
    errors: int = 0
    reconnects: int = 0
    offline_s: float = 0.0
    connected: bool = False
    ever_connected: bool = False
    last_error: str = ""


def open_capture(uri: str, transport: str = "udp", timeout_s: float = 5.0, read_timeout_s: float = 3.0) -> Any:
    """A ``cv2.VideoCapture`` on ``uri`` (RTSP over ``transport``), or None when it cannot be opened within
    ``timeout_s``; a read waits at most ``read_timeout_s``. (OpenCV's timeout properties, not FFmpeg's
    ``stimeout``/``timeout`` options, whose meaning changed across FFmpeg versions.)"""
    src: Any = int(uri) if uri.isdigit() else uri
    ms, read_ms = int(timeout_s * 1000), int(read_timeout_s * 1000)
    with _OPEN_LOCK:
        old = os.environ.get(_ENV)
        if isinstance(src, str) and src.lower().startswith("rtsp"):
            os.environ[_ENV] = f"rtsp_transport;{transport}"
        try:
            api = cv2.CAP_FFMPEG if isinstance(src, str) else cv2.CAP_ANY
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, read_ms]
            cap = cv2.VideoCapture(src, api, params)
        finally:
            if old is None:
                os.environ.pop(_ENV, None)
            else:
                os.environ[_ENV] = old
    if not cap.isOpened():
        cap.release()
        return None
    return cap


class StreamReader(threading.Thread):
    """Reads ``uri`` in a daemon thread; :meth:`take` gives the newest unread frame (see the module docstring).

    ``fps``: keep at most this many frames a second (the rest are ``capped``); ``options``: timeouts and
    backoff (:class:`ReaderOptions`). ``on_event(kind, detail)``
    is called (from this thread) with ``online`` / ``offline`` as the connection changes. A stream that
    sends no decodable frame for ``stall_s`` seconds is lost (a camera that goes away just stops sending
    over UDP: nothing says so) and is reopened; reads that fail in between (garbage the decoder
    rejects) are counted as ``errors`` and skipped.
    """

    def __init__(
        self,
        name: str,
        uri: str,
        *,
        fps: float | None = None,
        transport: str = "udp",
        options: ReaderOptions | None = None,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__(name=f"reader-{name}", daemon=True)
        self.camera, self.uri, self.fps, self.transport = name, uri, fps, transport
        o = options or ReaderOptions()
        self.timeout_s, self.backoff, self.stall_s = o.open_timeout_s, o.backoff, o.stall_s
        self.on_event = on_event
        self.stats = ReaderStats()
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._slot: LiveFrame | None = None
        self._index = 0
        self._offline_since: float | None = time.time()

    # -- consumer side ----------------------------------------------------------------------------------
    def take(self) -> LiveFrame | None:
        """The newest frame not taken yet, or None."""
        with self._lock:
            item, self._slot = self._slot, None
            if item is not None:
                self.stats.taken += 1
        return item

    def stop(self) -> None:
        self._halt.set()

    # -- the thread -------------------------------------------------------------------------------------
    def _event(self, kind: str, detail: str = "") -> None:
        now = time.time()
        if kind == "online":
            if self._offline_since is not None and self.stats.ever_connected:
                self.stats.offline_s += now - self._offline_since
            self._offline_since = None
            self.stats.connected = self.stats.ever_connected = True
        elif kind == "offline":
            self.stats.connected = False
            self.stats.last_error = detail
            if self._offline_since is None:
                self._offline_since = now
        log.info("%s: %s %s", self.camera, kind, detail)
        if self.on_event is not None:
            self.on_event(kind, detail)

    def run(self) -> None:
        delay = self.backoff[0]
        announced_offline = False
        while not self._halt.is_set():
            cap = open_capture(self.uri, self.transport, self.timeout_s, self.stall_s)
            if cap is None:
                if not announced_offline:
                    self._event("offline", "cannot connect")
                    announced_offline = True
                self._halt.wait(delay)
                delay = min(delay * 2, self.backoff[1])
                self.stats.reconnects += 1
                continue
            delay, announced_offline = self.backoff[0], False
            self._event("online")
            why = self._read_until_failure(cap)
            cap.release()
            if not self._halt.is_set():
                self._event("offline", why)
                announced_offline = True
                self.stats.reconnects += 1
        if self._offline_since is not None and self.stats.ever_connected:
            self.stats.offline_s += time.time() - self._offline_since

    def _read_until_failure(self, cap: Any) -> str:
        last_good = time.monotonic()
        last_kept = 0.0
        gap = 1.0 / self.fps if self.fps else 0.0
        while not self._halt.is_set():
            t_read = time.monotonic()
            try:
                ok, img = cap.read()
                # a read that waited out the timeout and still "succeeded" hands back the decoder's last
                # frame after the stream stopped (measured: the first two after a camera goes away)
                ok = ok and time.monotonic() - t_read < 0.9 * self.stall_s
            except cv2.error as exc:  # a garbage frame the decoder chokes on: counted, not fatal
                ok, img = False, None
                self.stats.last_error = str(exc).strip().splitlines()[-1]
            if not ok or img is None or img.ndim != 3:
                self.stats.errors += 1
                if time.monotonic() - last_good >= self.stall_s:
                    return f"no frame for {self.stall_s:g} s (stream ended or camera gone)"
                continue
            last_good = time.monotonic()
            now = time.time()
            self._index += 1
            self.stats.read += 1
            if gap and now - last_kept < gap:
                self.stats.capped += 1
                continue
            last_kept = now
            with self._lock:
                if self._slot is not None:
                    self.stats.dropped += 1
                self._slot = LiveFrame(img, now, self._index)
        return "stopped"
