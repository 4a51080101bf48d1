"""Reaching a Ray cluster, for the commands that spread work over one (``reidkit ingest --ray``,
``reidkit extract --ray``). Ray comes with the ``cluster`` extra; nothing imports it otherwise.

``address``: ``HOST:PORT`` of a running cluster's head (``ray start --head`` prints it), ``ray://HOST:10001``
(Ray Client), ``auto`` (the cluster this machine is part of, or ``$RAY_ADDRESS``), or ``local`` / None: a
Ray started for this process on this machine alone (for trials; it stops with the process).
"""

from __future__ import annotations

import os
from typing import Any

GCS_START_WAIT_S = 120  # Ray's default, 30 s, was too short for a GCS on a busy machine (seen in CI)


def allow_slow_gcs_start() -> None:
    """Let a Ray head started from this process wait ``GCS_START_WAIT_S`` for its GCS to come up (a value
    already set in ``RAY_gcs_server_port_wait_time_s`` wins)."""
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", str(GCS_START_WAIT_S))


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached (the message says which and how to fix it)."""


def connect(address: str | None) -> Any:
    """The ``ray`` module, connected to the cluster at ``address`` (see the module docstring); a process
    already connected stays on its cluster. RayUnavailable says what is wrong."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--ray needs Ray: pip install 'reidkit[cluster]'") from None
    if ray.is_initialized():
        return ray
    try:
        if address in (None, "", "local"):
            allow_slow_gcs_start()
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address!r}: {exc}") from None
    return ray


def worker_threads(threads: int | None, cpus_per_worker: float) -> int:
    """Inference threads of a worker: as asked, else the CPUs it holds (never the node's whole count, which
    would oversubscribe a node running several workers)."""
    return int(threads) if threads else max(1, int(cpus_per_worker))
