"""Process-level CPU tuning: glibc malloc settings that make torch on CPU up to 2.5x faster.

torch allocates and frees large activation buffers on every forward pass. glibc serves allocations
over 128 KiB with ``mmap`` and returns freed memory to the OS, so each pass pays page faults and
zeroing again. Keeping big blocks on the heap (``M_MMAP_MAX = 0``) and never trimming it
(``M_TRIM_THRESHOLD``) removes that: osnet_x0_25, batch 64, 2 threads, channels-last went from
~290 to ~720 img/s on this project's 2-core machine (the environment variables
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` do the same when set before Python starts).
The cost: freed memory stays with the process (RSS stays near its peak), as for a long-running
server. ``REIDKIT_MALLOC_TUNING=0`` opts out; non-glibc systems are left alone.

:func:`flush_denormals` treats floats below 1.2e-38 as zero (x86 FTZ/DAZ). A model file saved in float32 from a
run keeps tiny weights whose products are denormal, and every multiply with one takes a slow path: OSNet x0.25
from a 40-epoch run embedded at 100 img/s without it and 332 with it (BENCHMARKS.md, "train_denormal"). The mode
belongs to each thread and new threads copy it, so it must be set before torch starts its thread pool: the
``reidkit`` command does it first thing; in a library user's process a CPU ``TorchBackend`` does it for the thread
that builds it, and the Embedder's own workers (ONNX Runtime, OpenVINO) for themselves only, leaving the
caller's thread alone. ``REIDKIT_FLUSH_DENORMAL=0`` opts out.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done = False
_flushed: bool | None = None


def tune_malloc() -> bool:
    """Apply the malloc settings once per process; True if they are in effect (see the module doc)."""
    global _done
    if _done:
        return True
    if os.environ.get("REIDKIT_MALLOC_TUNING", "1") == "0" or platform.system() != "Linux":
        return False
    if "MALLOC_MMAP_MAX_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        _done = True  # the user chose their own settings
        return True
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1 and libc.mallopt(_M_MMAP_MAX, 0) == 1
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok


def flush_denormals(on: bool | None = None) -> bool:
    """Flush denormal floats to zero in this thread and the threads it starts later (``on``; by default on
    unless ``REIDKIT_FLUSH_DENORMAL=0``, decided once per process, so a later default call keeps an explicit
    choice). Returns whether the mode is on. For torch's thread pool, call it before the first parallel op."""
    global _flushed
    import torch

    if on is not None:
        _flushed = on
    elif _flushed is None:
        _flushed = os.environ.get("REIDKIT_FLUSH_DENORMAL", "1") != "0"
    return bool(torch.set_flush_denormal(_flushed)) and _flushed
