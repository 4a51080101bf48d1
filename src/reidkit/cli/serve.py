"""``reidkit serve``: the search service and its web page over one gallery (see :mod:`reidkit.service.app`).
Added to the main app by :func:`register`."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path
from typing import Annotated

import typer

from reidkit.cli.common import GALLERY_HELP, Backend, Model, Weights, console, fail, failing, warn


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""
    app.command("serve")(serve_cmd)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _on_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)  # typer's own click's ParameterSource: compared by name
    return getattr(source, "name", None) == "COMMANDLINE"


def _token(ctx: typer.Context, token: str | None, token_file: Path | None) -> str | None:
    """The token from --token-file, REIDKIT_TOKEN or --token (warned: every user of the machine sees a
    command line in ps); None for none."""
    if token_file is not None:
        if _on_command_line(ctx, "token"):
            fail("give the token once: --token-file or --token, not both")
        try:
            text = token_file.read_text(encoding="utf-8").strip()
            mode = token_file.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"--token-file {token_file}: cannot read it ({getattr(exc, 'strerror', None) or exc})")
        if not text or len(text.splitlines()) != 1:
            fail(f"--token-file {token_file}: want the token on one line, got {'nothing' if not text else 'more'}")
        if os.name == "posix" and mode & (stat.S_IRGRP | stat.S_IROTH):
            warn(f"{token_file} can be read by other users of this machine (chmod 600 {token_file})")
        return text
    if token and _on_command_line(ctx, "token"):
        warn(
            "--token on a command line is visible to every user of this machine (ps): use --token-file or REIDKIT_TOKEN"
        )
    return token or None


def serve_cmd(
    ctx: typer.Context,
    gallery: Annotated[str, typer.Option(help=GALLERY_HELP + " (may still be empty).", show_default=False)],
    host: Annotated[str, typer.Option(help="Address to listen on (default: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="REIDKIT_TOKEN",
            show_envvar=True,
            help="Require `Authorization: Bearer <token>` on every endpoint but /health and the page (prefer "
            "--token-file or the environment variable: a command line is visible in ps).",
        ),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="Read the token from this file (one line; keep it chmod 600).")
    ] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Also answer to this Host name (repeatable; *.example.org for a domain, * for any). Default: "
            "the loopback names and the --host address (a wildcard address: this machine's names).",
        ),
    ] = None,
    weights: Weights = None,
    model: Model = None,
    backend: Backend = "torch",
    max_upload_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body (query pictures), MB.")] = 10.0,
    cors: Annotated[
        list[str] | None, typer.Option("--cors", help="Allow this browser origin (repeatable; default: no CORS).")
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Search threads (default: the CPU count).")] = None,
    max_queue: Annotated[
        int, typer.Option(min=0, help="Searches that may wait for a search thread; more are answered 429.")
    ] = 64,
    read_timeout: Annotated[
        float,
        typer.Option(min=1.0, help="Seconds for a request's headers, and for its body (plus one per 10 kB)."),
    ] = 20.0,
    refresh: Annotated[
        float, typer.Option(min=0.0, help="Seconds between looks for sightings added by reidkit ingest.")
    ] = 1.0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve searches over HTTP, with a web page at / (drop a picture, see every appearance)."""
    from reidkit.search.api import ApiError
    from reidkit.search.storage import GalleryError, is_milvus
    from reidkit.search.storage.records import redact_uri
    from reidkit.service import server
    from reidkit.service.app import create_app
    from reidkit.service.security import MB, allowed_hosts

    folder = Path(gallery)
    if not is_milvus(gallery) and folder.exists() and not folder.is_dir():
        fail(f"{gallery} is a file, not a gallery folder")
    if not is_milvus(gallery) and not (folder / "gallery.db").is_file():
        console.print(
            f"note: no gallery at {gallery} yet: the page says so until `reidkit ingest ... --gallery {gallery}` "
            "has written one (it is picked up without a restart)",
            style="yellow",
            highlight=False,
        )
    secret = _token(ctx, token, token_file)
    if not _loopback(host) and not secret:
        warn(
            f"listening on {host} without a token: anyone who can reach it can search the gallery "
            "(set --token-file or REIDKIT_TOKEN)"
        )
    hosts = allowed_hosts(host, allow_host or ())
    with failing(ApiError, GalleryError):
        app = create_app(
            gallery, model=model, weights=weights, backend=backend, token=secret, max_upload=int(max_upload_mb * MB),
            cors=cors or None, hosts=hosts, workers=workers, max_queue=max_queue, read_timeout=read_timeout,
            refresh_s=refresh,
        )  # fmt: skip
    auth = "token required" if secret else "no token"
    names = "any Host name" if "*" in hosts else "Host " + ", ".join(hosts)
    console.print(
        f"serving {redact_uri(gallery)} on http://{host}:{port}/ ({auth}; {names}; schema at /openapi.json)",
        highlight=False,
    )
    server.run(app, host, port, log_level=log_level, read_timeout=read_timeout)
