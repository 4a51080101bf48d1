"""Shared fixtures: the real datasets and weights under ``$REIDKIT_DATA`` / ``$REIDKIT_WEIGHTS``.

Tests that need them skip with a reason when they are absent, unless ``REIDKIT_REQUIRE_DATA=1``
(as in CI), where a missing asset fails the test instead.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Exported ONNX models go to a throw-away cache, never the user's ~/.cache/reidkit.
os.environ["REIDKIT_CACHE"] = tempfile.mkdtemp(prefix="reidkit-test-cache-")


def _external_root(env: str, marker: str, hint: str) -> Path:
    value = os.environ.get(env)
    root = Path(value).expanduser() if value else None
    if root is not None and (root / marker).exists():
        return root
    found = f"${env}={value}" if value else f"${env} is not set"
    reason = f"{hint} ({found}; {marker} not found there)"
    if os.environ.get("REIDKIT_REQUIRE_DATA") == "1":
        pytest.fail(f"REIDKIT_REQUIRE_DATA=1 but: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """``$REIDKIT_DATA``, the folder holding ``market1501/``."""
    hint = "set REIDKIT_DATA to the folder holding market1501"
    return _external_root("REIDKIT_DATA", "market1501", hint)


@pytest.fixture(scope="session")
def weights_root() -> Path:
    """``$REIDKIT_WEIGHTS``, the folder holding ``reid/osnet_x0_25_market1501.pth``."""
    return _external_root(
        "REIDKIT_WEIGHTS",
        "reid/osnet_x0_25_market1501.pth",
        "set REIDKIT_WEIGHTS to the folder holding reid/osnet_x0_25_market1501.pth",
    )
