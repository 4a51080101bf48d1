"""The ``reidkit`` command line: every command is a thin call into the Python API."""

from __future__ import annotations

import typer

from reidkit.runtime import flush_denormals, tune_malloc

tune_malloc()  # before torch allocates anything (see reidkit.runtime)
flush_denormals()  # before torch starts its threads

# One module per command group; each adds its commands with ``register(app)``, in the order of ``reidkit --help``.
from reidkit.cli import cluster, datasets, evaluate, ingest, pose, search, serve, train  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
for _module in (evaluate, train, ingest, search, cluster, serve, pose, datasets):
    _module.register(app)


def main() -> None:  # pragma: no cover - console-script entry
    app()


__all__ = ["app", "main"]
