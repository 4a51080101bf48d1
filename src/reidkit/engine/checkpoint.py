"""Crash-safe training checkpoints, loadable with ``torch.load(weights_only=True)``.

Layout of a checkpoint folder::

    epoch_001.pt  epoch_002.pt  ...   # full training state after that epoch
    latest                            # text: the file name of the newest complete checkpoint

Every file is written to a temporary name and renamed into place (:func:`reidkit.io.atomic_path`),
and ``latest`` is only updated after its checkpoint is complete, so a process killed at any moment
leaves the previous checkpoint intact. RNG states are stored as tensors and plain Python types.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidkit.io import atomic_path

__all__ = [
    "LATEST",
    "capture_rng_state",
    "checkpoint_name",
    "latest_checkpoint",
    "load_checkpoint",
    "prune_checkpoints",
    "restore_rng_state",
    "save_checkpoint",
]

LATEST = "latest"
_NAME = re.compile(r"epoch_(\d+)\.pt")


def checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pt"


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as tensors / plain types."""
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def save_checkpoint(directory: str | os.PathLike[str], epoch: int, state: dict[str, Any]) -> Path:
    """Write ``state`` as ``epoch_NNN.pt`` atomically, then point ``latest`` at it."""
    folder = Path(directory)
    path = folder / checkpoint_name(epoch)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    with atomic_path(folder / LATEST) as tmp:
        tmp.write_text(path.name + "\n")
    return path


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The checkpoint ``latest`` names; else the highest-numbered ``epoch_*.pt``; else None."""
    folder = Path(directory)
    pointer = folder / LATEST
    if pointer.is_file():
        candidate = folder / pointer.read_text().strip()
        if candidate.is_file():
            return candidate
    found = sorted((int(m.group(1)), p) for p in folder.glob("epoch_*.pt") if (m := _NAME.fullmatch(p.name)))
    return found[-1][1] if found else None


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code is unpickled)."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)


def prune_checkpoints(directory: str | os.PathLike[str], keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest ``epoch_*.pt`` (never the one ``latest`` names); 0 keeps all."""
    if keep <= 0:
        return []
    folder = Path(directory)
    latest = latest_checkpoint(folder)
    found = sorted((int(m.group(1)), p) for p in folder.glob("epoch_*.pt") if (m := _NAME.fullmatch(p.name)))
    removed = []
    for _, p in found[:-keep]:
        if p != latest:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
