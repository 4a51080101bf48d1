"""Where reidkit looks for datasets and third-party weights (never inside the repository)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "REIDKIT_DATA"
WEIGHTS_ENV = "REIDKIT_WEIGHTS"
CACHE_ENV = "REIDKIT_CACHE"


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding datasets: ``explicit`` if given, else ``$REIDKIT_DATA``, else ``./data``."""
    if explicit is not None:
        return Path(explicit).expanduser()
    return Path(os.environ.get(DATA_ENV, "data")).expanduser()


def weights_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding model weights: ``explicit``, else ``$REIDKIT_WEIGHTS``, else ``./weights``."""
    if explicit is not None:
        return Path(explicit).expanduser()
    return Path(os.environ.get(WEIGHTS_ENV, "weights")).expanduser()


def cache_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where derived files (exported ONNX models) are kept: ``explicit``, else ``$REIDKIT_CACHE``,
    else ``$XDG_CACHE_HOME/reidkit``, else ``~/.cache/reidkit``."""
    if explicit is not None:
        return Path(explicit).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "reidkit"
