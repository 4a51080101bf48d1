"""``reidkit train``: one experiment YAML through :func:`reidkit.engine.train`. Added to the main app by
:func:`register`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reidkit.cli import common
from reidkit.cli.common import failing


def train_cmd(
    config: Annotated[Path, typer.Argument(help="Experiment YAML, e.g. configs/market1501/bot_mobilenetv2.yaml.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="Dotted overrides, e.g. solver.max_epochs=12.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")] = False,
) -> None:
    """Train a model (strong-baseline recipe); checkpoints every epoch, metrics to metrics.jsonl."""
    from reidkit.config import ConfigError
    from reidkit.datasets.base import DatasetError
    from reidkit.engine import train

    with failing(ConfigError, DatasetError, FileNotFoundError):
        final = train(config, overrides or [], resume=resume)
    common.console.print(f"final model: {final}  (use it with: reidkit eval --weights {final})")


def register(app: typer.Typer) -> None:
    """Add ``train`` to ``app`` (extra arguments are the config overrides)."""
    app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(train_cmd)
