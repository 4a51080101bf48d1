"""The application API: what the CLI (:mod:`reidkit.cli`) and the HTTP service (:mod:`reidkit.service`)
both call. A command or a route parses its input, calls one function here and words the answer.

* :func:`load_model`: the one model loader (an embedder for pictures, or only the model's identity
  for its calibrated match rule).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

Backend = Literal["torch", "onnx"]
BACKENDS: tuple[Backend, ...] = ("torch", "onnx")


class ApiError(ValueError):
    """A request that cannot be served as asked; the message says why (and names the file)."""


# --- models ------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A re-id model for search and ingest: its ``embedder`` (None when only its identity was needed)
    and ``info`` (:class:`reidkit.models.zoo.ModelInfo`; None: no shipped model, default match rule)."""

    embedder: Any
    info: Any


def load_model(
    model: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    *,
    backend: str = "torch",
    embedder: bool = True,
    batch_size: int = 32,
    threads: int | None = None,
) -> LoadedModel:
    """The model named by ``model`` / ``weights`` (default: the shipped one) as an embedder on ``backend``
    (``embedder=False``: only its identity, which picks its calibrated match rule). ApiError otherwise."""
    from reidkit.extract import make_embedder
    from reidkit.imaging import ImageError
    from reidkit.models.weights import WeightsMismatchError
    from reidkit.models.zoo import load_model as zoo_load

    if backend not in BACKENDS:
        raise ApiError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    try:
        if embedder:
            emb, info = make_embedder(model, weights, backend, batch_size=batch_size, threads=threads)  # type: ignore[arg-type]
            return LoadedModel(emb, info)
        if model is None and weights is None:
            try:
                return LoadedModel(None, zoo_load()[1])
            except FileNotFoundError:
                return LoadedModel(None, None)  # no shipped model: the default threshold applies
        return LoadedModel(None, zoo_load(model, weights)[1])
    except (FileNotFoundError, ValueError, WeightsMismatchError, ImageError) as exc:
        raise ApiError(str(exc)) from None
