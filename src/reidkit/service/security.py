"""The service's ASGI middleware: the upload limit, the bearer token and the security headers.

:func:`reidkit.service.app.create_app` stacks them, innermost first: :class:`BodyLimit`, then
:class:`BearerAuth` (with a token), then :class:`SecurityHeaders` (then CORS, when origins are given).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import HTTPException

MB = 1024 * 1024


class TooLarge(HTTPException):
    """Raised from the body reader when the upload limit is passed (FastAPI re-raises HTTPExceptions
    from body parsing, so the client gets this 413, not a generic 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the {size_text(limit)} upload limit")


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


class BodyLimit:
    """ASGI middleware: 413 for request bodies over ``limit`` bytes, decided from Content-Length
    before reading, and by counting the bytes as they arrive (chunked uploads)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    await send_json(send, 413, {"detail": TooLarge(self.limit).detail}, [(b"connection", b"close")])
                    return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise TooLarge(self.limit)
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


class SecurityHeaders:
    """ASGI middleware: nosniff on everything; the page may load only its own scripts and styles."""

    CSP = (
        b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                if any(k == b"content-type" and v.startswith(b"text/html") for k, v in headers):
                    headers.append((b"content-security-policy", self.CSP))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
