"""Process tuning: the malloc settings and the denormal mode take effect (in a fresh interpreter) and can be
turned off."""

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


@pytest.mark.parametrize("opt_out", [False, True])
def test_the_reidkit_command_flushes_denormals_in_every_torch_thread(opt_out: bool) -> None:
    # importing the command line sets the mode before torch starts its threads; a multiply over 2^22 values
    # on 2 threads (every chunk), and a convolution, then turn 1e-39 (below float32's smallest normal) into zero
    code = (
        "import reidkit.cli, torch\n"
        "torch.set_num_threads(2)\n"
        "x = torch.full((1 << 22,), 1e-39) * 1.0\n"
        "w = torch.full((8, 8, 1, 1), 1e-20)\n"
        "y = torch.nn.functional.conv2d(torch.full((4, 8, 64, 64), 1e-20), w)\n"
        "print(int(x.count_nonzero()), int(y.count_nonzero()), y.numel())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "REIDKIT_FLUSH_DENORMAL"}
    if opt_out:
        env["REIDKIT_FLUSH_DENORMAL"] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    nx, ny, n = map(int, out.stdout.split())
    if opt_out:
        assert (nx, ny) == (1 << 22, n)  # 1e-20 * 1e-20 * 8 = 8e-40: denormal, kept
    else:
        assert (nx, ny) == (0, 0)


def test_an_embedder_flushes_denormals_where_its_model_runs_and_leaves_other_threads_alone() -> None:
    # a library user's process (no reidkit.cli): ONNX-like parallel backends run in the Embedder's workers, which
    # flush for themselves; the caller's thread keeps IEEE denormals until a CPU torch model is built on it
    code = (
        "import numpy as np, torch\n"
        "from reidkit.embed import Embedder, TorchBackend\n"
        "flushes = lambda: bool((torch.tensor([1e-39]) * 1.0).item() == 0)\n"
        "class Par:\n"
        "    concurrency, channels_last, seen = 2, False, []\n"
        "    def __call__(self, x):\n"
        "        self.seen.append(flushes())\n"
        "        return x.mean(dim=(2, 3)).numpy()\n"
        "ims = [np.zeros((8, 4, 3), np.uint8)] * 6\n"
        "par = Par()\n"
        "Embedder(par, height=8, width=4, batch_size=2).embed(ims)\n"
        "print(all(par.seen), flushes())\n"
        "Embedder(TorchBackend(torch.nn.Conv2d(3, 2, 1)), height=8, width=4).embed(ims)\n"
        "print(flushes())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "REIDKIT_FLUSH_DENORMAL"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "True"]
