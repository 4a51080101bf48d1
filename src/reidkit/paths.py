"""Where reidkit looks for datasets and third-party weights (never inside the repository)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "REIDKIT_DATA"
WEIGHTS_ENV = "REIDKIT_WEIGHTS"


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
