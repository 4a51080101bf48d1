"""Running the service: uvicorn with read timeouts (``reidkit serve``, and the tests' servers).

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive`` seconds but waits for a
request's headers without end, so a client that opens connections and sends a header line now and then
(slowloris) would hold them for ever. :class:`GuardedH11` closes a connection whose request line and
headers are not all in within ``read_timeout`` seconds of its opening or of its previous answer; the
body's own deadline is :class:`reidkit.service.security.BodyLimit`'s (408).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

READ_TIMEOUT = 20.0  # seconds for a request's headers, and (plus one per 10 kB) for its body
KEEP_ALIVE = 5.0  # seconds an idle connection stays open between requests


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers (``header_timeout`` seconds)."""

    header_timeout = READ_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._await_headers()

    def _await_headers(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _headers_in(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closed a connection that sent no whole request in %.0f s", self.header_timeout)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # still no whole request line and headers
            self._await_headers()
        else:
            self._headers_in()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._await_headers()  # the next request's headers, if it comes (keep-alive closes an idle one sooner)

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_in()
        super().connection_lost(exc)


def config(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    log_level: str = "info",
    read_timeout: float = READ_TIMEOUT,
    keep_alive: float = KEEP_ALIVE,
    lifespan: str = "on",
) -> uvicorn.Config:
    """uvicorn's settings for the service: the guarded protocol with ``read_timeout`` for headers,
    ``keep_alive`` for idle connections, no ``server`` header."""
    protocol = type("GuardedH11", (GuardedH11,), {"header_timeout": float(read_timeout)})
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=protocol,
        timeout_keep_alive=int(max(1, round(keep_alive))),
        server_header=False,
        lifespan=lifespan,  # type: ignore[arg-type]
    )


def run(app: Any, host: str, port: int, **options: Any) -> None:
    """Serve ``app`` until interrupted (options as :func:`config`)."""
    uvicorn.Server(config(app, host, port, **options)).run()
