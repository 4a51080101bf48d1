"""The ``reidkit`` command line (Typer): one module per command group over :mod:`reidkit.search.api`."""

from reidkit.cli.research import app, main

__all__ = ["app", "main"]
