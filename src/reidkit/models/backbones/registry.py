"""Backbone registry: name -> constructor + where its ImageNet weights live.

Every backbone returns a feature map ``(N, C, H, W)`` from ``forward`` and exposes
``out_features`` (= C) and ``pretrained_ignore_keys`` (checkpoint key prefixes it drops, e.g. an
ImageNet classifier).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from reidkit.models.backbones.efficientnet_lite import efficientnet_lite0
from reidkit.models.backbones.mobilenet import mobilenet_v2
from reidkit.models.backbones.osnet import OSNET_IMAGENET_FILES, osnet_backbone
from reidkit.models.backbones.resnet import resnet18, resnet50
from reidkit.models.weights import LoadReport, load_state_dict_file, load_weights, resolve_weights_file
from reidkit.paths import WEIGHTS_ENV, weights_root

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "Pretrained",
    "build_backbone",
    "list_backbones",
    "load_backbone_weights",
    "register_backbone",
]

logger = logging.getLogger(__name__)

Pretrained = str | os.PathLike[str] | bool | None
IMAGENET_DIR = "imagenet"


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and find its ImageNet weights.

    ``imagenet_file``: file name under ``$REIDKIT_WEIGHTS/imagenet/``. ``torchvision_weights``:
    a torchvision weight enum (``"ResNet50_Weights.IMAGENET1K_V1"``) used when no file name is
    known; its file is first looked up under ``imagenet/`` by its original name.
    """

    factory: Callable[..., nn.Module]
    imagenet_file: str | None = None
    torchvision_weights: str | None = None


BACKBONES: dict[str, BackboneSpec] = {
    "resnet50": BackboneSpec(resnet50, torchvision_weights="ResNet50_Weights.IMAGENET1K_V1"),
    "resnet18": BackboneSpec(resnet18, torchvision_weights="ResNet18_Weights.IMAGENET1K_V1"),
    "mobilenet_v2": BackboneSpec(
        mobilenet_v2, imagenet_file="mobilenet_v2_imagenet_torchvision.pth"
    ),
    "efficientnet_lite0": BackboneSpec(
        efficientnet_lite0, imagenet_file="efficientnet-lite0-57934424.pth"
    ),
    **{
        name: BackboneSpec(partial(osnet_backbone, name), imagenet_file=file)
        for name, file in OSNET_IMAGENET_FILES.items()
    },
}


def register_backbone(name: str, spec: BackboneSpec, *, overwrite: bool = False) -> None:
    """Add a backbone to the registry (``overwrite=True`` to replace an existing name)."""
    if name in BACKBONES and not overwrite:
        raise ValueError(f"backbone {name!r} is already registered")
    BACKBONES[name] = spec


def list_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(BACKBONES)


def get_spec(name: str) -> BackboneSpec:
    """The registry entry for ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(
            f"unknown backbone {name!r}; known: {', '.join(list_backbones())}"
        ) from None


def _torchvision_weights(name: str, enum_name: str) -> Path | dict[str, torch.Tensor]:
    """ImageNet weights of a torchvision enum: a local copy under imagenet/, else a download."""
    from torchvision.models import get_weight

    weights = get_weight(enum_name)
    local = weights_root() / IMAGENET_DIR / Path(weights.url).name
    if local.is_file():
        return local
    try:
        return weights.get_state_dict(progress=False)
    except Exception as exc:  # network errors come in many types
        raise RuntimeError(
            f"no local ImageNet weights for {name!r} at {local} (${WEIGHTS_ENV}/{IMAGENET_DIR}/) "
            f"and downloading torchvision's {enum_name} failed ({type(exc).__name__}: {exc}); "
            "put the file there or pass pretrained=<path>"
        ) from exc


def _imagenet_source(name: str) -> tuple[Path | dict[str, torch.Tensor], str]:
    """Where ``pretrained=True`` reads from for ``name``: (file or state dict, label)."""
    spec = get_spec(name)
    if spec.imagenet_file is not None:
        path = resolve_weights_file(Path(IMAGENET_DIR) / spec.imagenet_file)
        return path, str(path)
    if spec.torchvision_weights is not None:
        found = _torchvision_weights(name, spec.torchvision_weights)
        label = str(found) if isinstance(found, Path) else f"torchvision {spec.torchvision_weights}"
        return found, label
    raise ValueError(f"backbone {name!r} has no known ImageNet weights; pass a path")


def load_backbone_weights(backbone: nn.Module, name: str, pretrained: Pretrained) -> LoadReport:
    """Load ``pretrained`` (a path, or ``True`` for ImageNet) into a registry backbone."""
    ignore = getattr(backbone, "pretrained_ignore_keys", ())
    if pretrained is True:
        source, label = _imagenet_source(name)
    elif isinstance(pretrained, str | os.PathLike):
        label = str(Path(pretrained).expanduser())
        source = _backbone_part(load_state_dict_file(pretrained), backbone)
    else:
        raise TypeError(f"pretrained must be a path, True, False or None, got {pretrained!r}")
    return load_weights(backbone, source, ignore_prefixes=ignore, source=label)


def _backbone_part(sd: dict[str, torch.Tensor], backbone: nn.Module) -> dict[str, torch.Tensor]:
    """A whole reidkit model's state dict (a trained baseline, say) reduced to its ``backbone.``
    tensors, so a new head can start from a trained trunk; a bare backbone's dict as it is."""
    own = backbone.state_dict()
    if any(k in own for k in sd) or not any(k.startswith("backbone.") for k in sd):
        return sd
    return {k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")}


def build_backbone(name: str, pretrained: Pretrained = None, **kwargs: object) -> nn.Module:
    """Build a registered backbone; ``kwargs`` go to its constructor (e.g. ``last_stride=1``).

    ``pretrained``: ``None``/``False`` -> random init; a path -> that local file; ``True`` ->
    ImageNet weights from ``$REIDKIT_WEIGHTS/imagenet/<known file>`` (``FileNotFoundError`` if
    absent), or for torchvision models without a known file, torchvision's weight enum (a
    ``RuntimeError`` if it cannot be downloaded). Keys are checked strictly except the
    backbone's ``pretrained_ignore_keys`` (classifier heads).
    """
    backbone = get_spec(name).factory(**kwargs)
    if pretrained is not None and pretrained is not False:
        load_backbone_weights(backbone, name, pretrained)
    return backbone
