"""The service's ASGI middleware: the upload limit and read timeout, the bearer token, the Host allow-list,
same-origin POSTs and the security headers.

:func:`reidkit.service.app.create_app` stacks them, innermost first: :class:`BodyLimit` (size and read
timeout of a request body), then :class:`BearerAuth` (with a token), then :class:`SameOrigin` (no
cross-site POST), then :class:`HostCheck` (DNS rebinding), then :class:`SecurityHeaders` on every answer,
then CORS when origins are given. :func:`allowed_hosts` gives the Host names a service bound to an
address answers to.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException

MB = 1024 * 1024
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CLOSE = {"connection": "close"}


class TooLarge(HTTPException):
    """Raised from the body reader when the upload limit is passed (FastAPI re-raises HTTPExceptions
    from body parsing, so the client gets this 413, not a generic 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the {size_text(limit)} upload limit", headers=CLOSE)


class TooSlow(HTTPException):
    """Raised from the body reader when a request body does not arrive in time (408; the connection closes)."""

    def __init__(self, seconds: float, got: int) -> None:
        super().__init__(
            408,
            f"request body not received in time ({size_text(got)} in {seconds:.0f} s): send it faster",
            headers=CLOSE,
        )


def size_text(n: int) -> str:
    """``10 MB``, or ``50,000 bytes`` under a megabyte."""
    return f"{n / MB:g} MB" if n >= MB else f"{n:,} bytes"


async def send_json(send: Callable[..., Awaitable[None]], status: int, body: dict, headers: Sequence = ()) -> None:
    """Answer with ``body`` as JSON, from middleware (before any route ran)."""
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


class BodyLimit:
    """ASGI middleware: 413 for request bodies over ``limit`` bytes, decided from Content-Length
    before reading, and by counting the bytes as they arrive (chunked uploads); 408 for a body that
    arrives too slowly: all of it within ``timeout`` seconds of the request's headers, plus one second
    per ``min_rate`` bytes received (as Apache's mod_reqtimeout: a slow link gets time for a large
    upload, a client that trickles a few bytes to hold a connection is cut off). Either way the
    connection is closed."""

    def __init__(self, app: Any, limit: int, timeout: float | None = None, min_rate: float = 10_000) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout
        self.min_rate = min_rate

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        try:
            too_big = length is not None and int(length) > self.limit
        except ValueError:
            too_big = False
        if too_big:
            await send_json(send, 413, {"detail": TooLarge(self.limit).detail}, [(b"connection", b"close")])
            return
        seen = 0
        done = False
        start = time.monotonic()

        async def counted() -> dict:
            nonlocal seen, done
            if done or self.timeout is None:
                message = await receive()
            else:
                left = start + self.timeout + seen / self.min_rate - time.monotonic()
                try:
                    message = await asyncio.wait_for(receive(), max(left, 0.0))
                except TimeoutError:
                    raise TooSlow(time.monotonic() - start, seen) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if seen > self.limit:
                    raise TooLarge(self.limit)
            else:
                done = True
            return message

        await self.app(scope, counted, send)


class BearerAuth:
    """ASGI middleware: every path but ``open_paths`` needs ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str, open_paths: set[str]) -> None:
        self.app = app
        self.token = token.encode()
        self.open_paths = open_paths

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    given = b""
        if not given or not secrets.compare_digest(given.strip(), self.token):
            detail = "missing or wrong token: send the header Authorization: Bearer <token>"
            await send_json(send, 401, {"detail": detail}, [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)


def host_name(value: str) -> str:
    """The name in a Host header or an origin's netloc, lower case, without the port (``[::1]:8000`` -> ``::1``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def allowed_hosts(bind: str, extra: Iterable[str] = ()) -> list[str]:
    """The Host names a service listening on ``bind`` answers to: the loopback names, the address itself,
    and for a wildcard address (``0.0.0.0``, ``::``) this machine's name and addresses; then ``extra``
    (``--allow-host``; ``*.example.org`` for a domain's names, ``*`` for any). A browser page on another
    name (a DNS-rebinding attack against a service without a token) gets 400."""
    names = [*LOOPBACK_HOSTS]
    try:
        wildcard = ipaddress.ip_address(bind).is_unspecified
    except ValueError:
        wildcard = False
    if wildcard:
        hostname = socket.gethostname()
        names += [hostname, socket.getfqdn()]
        with contextlib.suppress(OSError):
            names += [str(info[4][0]) for info in socket.getaddrinfo(hostname, None)]
    else:
        names.append(bind)
    names += list(extra)
    out: list[str] = []
    for n in names:
        n = host_name(n) if n != "*" else n
        if n and n not in out:
            out.append(n)
    return out


class HostCheck:
    """ASGI middleware: 400 unless the Host header names one of ``hosts`` (``*.example.org`` matches the
    domain's names, ``*`` anything). A page on an attacker's name that rebinds to this address sends its
    own name as Host: refused, so it reads nothing. ``open_paths`` (/health: a load balancer's probe) are
    not checked; a request without a Host header (HTTP/1.0, not a browser) passes."""

    def __init__(self, app: Any, hosts: Sequence[str], open_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.any = "*" in hosts
        self.exact = {host_name(h) for h in hosts if not h.startswith("*")}
        self.suffixes = tuple(h[1:].lower() for h in hosts if h.startswith("*.") and len(h) > 2)
        self.open_paths = set(open_paths)

    def allows(self, host: str) -> bool:
        name = host_name(host)
        return self.any or name in self.exact or (bool(self.suffixes) and name.endswith(self.suffixes))

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or self.any or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if host is not None and not self.allows(host.decode("latin-1")):
            name = host_name(host.decode("latin-1"))[:100]
            detail = (
                f"this service does not answer to the host name {name!r} "
                f"(start it with --allow-host {name} if that is its name)"
            )
            await send_json(send, 400, {"detail": detail})
            return
        await self.app(scope, receive, send)


class SameOrigin:
    """ASGI middleware: 403 for a POST (any method but GET, HEAD, OPTIONS) that a browser sends from
    another site: its ``Origin`` is not this service's own (the Host it was sent to) nor one of the CORS
    ``origins``, or its ``Sec-Fetch-Site`` says ``cross-site`` / ``same-site``. A form on a web page
    could otherwise make a visitor's browser search a service without a token (a "simple" multipart
    POST needs no CORS pre-flight). Clients that are not browsers send neither header and pass."""

    def __init__(self, app: Any, origins: Sequence[str] = ()) -> None:
        self.app = app
        self.origins = {o.rstrip("/").lower() for o in origins}

    def allowed(self, scope: dict) -> bool:
        origin = _header(scope, b"origin")
        site = _header(scope, b"sec-fetch-site")
        if origin is not None:
            o = origin.decode("latin-1").strip().lower()
            if o in self.origins:
                return True
            host = _header(scope, b"host")
            if o == "null" or host is None or urlsplit(o).netloc != host.decode("latin-1").strip().lower():
                return False
        return site is None or site in (b"same-origin", b"none")

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        detail = (
            "cross-site request refused: this service takes searches from its own page only (a page elsewhere: "
            "reidkit serve --cors ORIGIN; behind a proxy, pass the Host header on)"
        )
        await send_json(send, 403, {"detail": detail}, [(b"connection", b"close")])


class SecurityHeaders:
    """ASGI middleware: on every answer nosniff, no referrer (a URL with a search or an id does not leak
    to another site), and the resource for this origin only (no other site may embed a crop or a frame
    with ``<img>``); the page may load only its own scripts and styles, and no site may frame it."""

    CSP = (
        b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    ALWAYS = (
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-resource-policy", b"same-origin"),
    )

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *self.ALWAYS]
                if any(k == b"content-type" and v.startswith(b"text/html") for k, v in headers):
                    headers += [(b"content-security-policy", self.CSP), (b"x-frame-options", b"DENY")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
