"""``reidkit serve``: the search service and its web page over one gallery (see :mod:`reidkit.service.app`).
Added to the main app by :func:`register`."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from reidkit.cli.common import Backend, Model, Weights, console, fail, failing, warn


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


def serve_cmd(
    gallery: Annotated[Path, typer.Option(help="Gallery folder (built by reidkit ingest; may still be empty).")],
    host: Annotated[str, typer.Option(help="Address to listen on (default: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="REIDKIT_TOKEN",
            show_envvar=True,
            help="Require `Authorization: Bearer <token>` on every endpoint but /health and the page.",
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
    refresh: Annotated[
        float, typer.Option(min=0.0, help="Seconds between looks for sightings added by reidkit ingest.")
    ] = 1.0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve searches over HTTP, with a web page at / (drop a picture, see every appearance)."""
    import uvicorn

    from reidkit.search.api import ApiError
    from reidkit.search.storage import GalleryError
    from reidkit.service.app import create_app
    from reidkit.service.security import MB

    if gallery.exists() and not gallery.is_dir():
        fail(f"{gallery} is a file, not a gallery folder")
    if not (gallery / "gallery.db").is_file():
        console.print(
            f"note: no gallery at {gallery} yet: the page says so until `reidkit ingest ... --gallery {gallery}` "
            "has written one (it is picked up without a restart)",
            style="yellow",
            highlight=False,
        )
    if not _loopback(host) and not token:
        warn(
            f"listening on {host} without a token: anyone who can reach it can search the gallery "
            "(set --token or REIDKIT_TOKEN)"
        )
    with failing(ApiError, GalleryError):
        app = create_app(
            gallery, model=model, weights=weights, backend=backend, token=token or None,
            max_upload=int(max_upload_mb * MB), cors=cors or None, workers=workers, refresh_s=refresh,
        )  # fmt: skip
    auth = "token required" if token else "no token"
    console.print(f"serving {gallery} on http://{host}:{port}/ ({auth}; schema at /openapi.json)", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
