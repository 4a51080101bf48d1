"""Process tuning: the malloc settings take effect (in a fresh interpreter) and can be turned off."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CHECK = "from reidkit.runtime import tune_malloc; print(tune_malloc())"


def _run(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", CHECK], env={**base, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_tune_malloc_applies_and_opts_out() -> None:
    assert _run() == "True"
    assert _run(REIDKIT_MALLOC_TUNING="0") == "False"
    assert _run(MALLOC_MMAP_MAX_="0") == "True"  # the user's own settings count as tuned
