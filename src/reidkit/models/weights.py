"""Loading weights from local files: checkpoint unwrapping, strict key checks, torchreid files.

Every loader reads with ``torch.load(path, map_location="cpu", weights_only=True)``, never
falls back to a random init, and reports missing / unexpected keys by name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from reidkit.paths import WEIGHTS_ENV, weights_root

__all__ = [
    "LoadReport",
    "WeightsMismatchError",
    "load_state_dict_file",
    "load_torchreid_checkpoint",
    "load_weights",
    "resolve_weights_file",
]

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
PathLike = str | os.PathLike[str]

# Keys under which training scripts commonly nest the actual state dict.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")


class WeightsMismatchError(RuntimeError):
    """A checkpoint's keys or shapes do not match the model (the message lists them)."""


@dataclass
class LoadReport:
    """What a loader did: how many tensors were loaded and which keys it dropped or left fresh."""

    source: str
    loaded: int
    dropped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _not_found(path: Path, what: str = "weights file") -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} not found: {path} (weights are read from ${WEIGHTS_ENV}, currently "
        f"{os.environ.get(WEIGHTS_ENV, '<unset>')!s}; set it to the folder holding the weights "
        "or pass an explicit path)"
    )


def resolve_weights_file(relative: PathLike) -> Path:
    """``weights_root() / relative``; raises ``FileNotFoundError`` naming the path and env var."""
    path = weights_root() / relative
    if not path.is_file():
        raise _not_found(path)
    return path


def _unwrap(obj: object, source: str) -> StateDict:
    """Pull the tensor dict out of a (possibly wrapped) checkpoint and strip ``module.``."""
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise WeightsMismatchError(f"{source}: expected a state dict, got {type(obj).__name__}")
    out: StateDict = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        out[key.removeprefix("module.")] = value
    if not out:
        raise WeightsMismatchError(f"{source}: checkpoint holds no tensors")
    return out


def load_state_dict_file(path: PathLike) -> StateDict:
    """Read a checkpoint file and return its flat state dict (unwrapped, ``module.`` stripped)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise _not_found(p)
    obj = torch.load(p, map_location="cpu", weights_only=True)
    return _unwrap(obj, str(p))


def _fmt(keys: Iterable[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def _head_name(keys: Iterable[str]) -> str:
    """Which reidkit head a state dict's keys belong to (for error messages)."""
    keys = list(keys)
    if any(k.startswith("heads.") for k in keys):
        return "head='rrid'"
    if any(k.startswith("backbone.") for k in keys):
        return "head='baseline'"
    return "bare backbone / torchreid"


def load_weights(
    model: nn.Module,
    weights: PathLike | Mapping[str, torch.Tensor],
    *,
    ignore_prefixes: Iterable[str] = (),
    allow_missing: Iterable[str] = (),
    source: str | None = None,
) -> LoadReport:
    """Load ``weights`` (a file or a state dict) into ``model``, checking every key.

    Checkpoint keys starting with one of ``ignore_prefixes`` (e.g. an ImageNet classifier) are
    dropped. Model keys starting with one of ``allow_missing`` may be absent from the checkpoint
    (they keep their fresh init). Anything else that is missing, unexpected or of the wrong shape
    raises :class:`WeightsMismatchError`.
    """
    if isinstance(weights, Mapping):
        src = source or "<state dict>"
        sd = _unwrap(weights, src)
    else:
        src = source or str(weights)
        sd = load_state_dict_file(weights)
    ignore = tuple(ignore_prefixes)
    allowed = tuple(allow_missing)
    dropped = [k for k in sd if ignore and k.startswith(ignore)]
    for k in dropped:
        del sd[k]

    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad_shape = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sd
        if k in own and sd[k].shape != own[k].shape
    ]
    not_allowed = [k for k in missing if not (allowed and k.startswith(allowed))]
    if not_allowed or unexpected or bad_shape:
        parts = []
        if not_allowed:
            parts.append(f"missing keys: {_fmt(not_allowed)}")
        if unexpected:
            parts.append(f"unexpected keys: {_fmt(unexpected)}")
        if bad_shape:
            parts.append(f"shape mismatches: {_fmt(bad_shape)}")
        ours, theirs = _head_name(own), _head_name(sd)
        if ours != theirs:  # the usual cause, said first
            parts.insert(0, f"it holds a {theirs} model, this is a {ours} model")
        raise WeightsMismatchError(
            f"{src} does not fit {type(model).__name__}: " + "; ".join(parts)
        )
    model.load_state_dict(sd, strict=not missing)
    if dropped:
        logger.info("%s: dropped checkpoint keys %s", src, _fmt(dropped))
    if missing:
        logger.warning("%s: keys left at their fresh init: %s", src, _fmt(missing))
    logger.info("loaded %d tensors from %s into %s", len(sd), src, type(model).__name__)
    return LoadReport(source=src, loaded=len(sd), dropped=dropped, missing=missing)


def load_torchreid_checkpoint(
    model: nn.Module,
    path: PathLike,
    num_classes: int | None = None,
    *,
    allow_missing: Iterable[str] = (),
) -> LoadReport:
    """Load a torchreid model-zoo checkpoint (e.g. ``osnet_x0_25_market1501.pth``) strictly.

    Wrapped checkpoints (``{"state_dict": ...}``) and ``module.`` prefixes are handled. The
    checkpoint's ``classifier.*`` is kept only if its class count equals ``num_classes``
    (default: the model's own classifier size, 0 when the model has none); otherwise it is dropped
    with a logged warning and the model's classifier keeps its fresh init. All other keys must
    match exactly (except model keys starting with one of ``allow_missing``).
    """
    classifier = getattr(model, "classifier", None)
    model_classes = classifier.out_features if isinstance(classifier, nn.Linear) else 0
    if num_classes is None:
        num_classes = model_classes
    elif num_classes != model_classes:
        raise ValueError(
            f"num_classes={num_classes} but the model's classifier has {model_classes} classes"
        )
    sd = load_state_dict_file(path)
    ckpt_w = sd.get("classifier.weight")
    allowed = tuple(allow_missing)
    if ckpt_w is not None and ckpt_w.shape[0] != num_classes:
        dropped = [k for k in sd if k.startswith("classifier.")]
        if num_classes == 0:  # an embedding model: the classifier is simply not needed
            logger.info("%s: dropping %s (the model has no classifier)", path, ", ".join(dropped))
        else:
            logger.warning(
                "%s: checkpoint classifier has %d classes but the model expects %d; dropping %s "
                "(the model's classifier keeps its fresh init)",
                path,
                ckpt_w.shape[0],
                num_classes,
                ", ".join(dropped),
            )
        report = load_weights(
            model,
            sd,
            ignore_prefixes=("classifier.",),
            allow_missing=(*allowed, "classifier."),
            source=str(path),
        )
        return report
    if ckpt_w is None and num_classes:  # e.g. a packaged reidkit file (classifier dropped) as a start
        allowed = (*allowed, "classifier.")
    return load_weights(model, sd, allow_missing=allowed, source=str(path))
