"""``build_model``: one entry point from a name to a ready re-id model.

Two heads:

* ``head="baseline"`` (default, any registered backbone): :class:`ReIDBaseline` = backbone ->
  pooling -> BNNeck -> bias-free classifier; ``pretrained`` initialises the backbone only.
* ``head="torchreid"`` (``osnet_*`` only): the torchreid-style :class:`OSNet` (``fc`` 512-d
  embedding + classifier), into which torchreid model-zoo checkpoints load strictly.

Both return ``{"logits", "features", "bn_features"}`` in train mode and an ``(N, D)`` embedding in
eval mode, and expose the embedding size as ``feat_dim``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from reidkit.models.backbones.osnet import OSNET_IMAGENET_FILES, osnet
from reidkit.models.backbones.registry import IMAGENET_DIR, Pretrained, build_backbone
from reidkit.models.baseline import ReIDBaseline
from reidkit.models.weights import load_torchreid_checkpoint, resolve_weights_file

__all__ = ["HEADS", "build_model"]

_BASELINE_DEFAULTS = {"pooling": "avg", "neck": "bnneck", "feat_after_bn": True}


def _build_baseline(
    name: str, num_classes: int, pretrained: Pretrained, head_kw: dict[str, Any], **kwargs: Any
) -> nn.Module:
    backbone = build_backbone(name, pretrained, **kwargs)
    return ReIDBaseline(backbone, num_classes, **head_kw)


def _build_torchreid(
    name: str, num_classes: int, pretrained: Pretrained, head_kw: dict[str, Any], **kwargs: Any
) -> nn.Module:
    if name not in OSNET_IMAGENET_FILES:
        raise ValueError(f"head='torchreid' is only available for osnet_* models, not {name!r}")
    changed = {k: v for k, v in head_kw.items() if v != _BASELINE_DEFAULTS[k]}
    if changed:
        raise ValueError(f"{sorted(changed)} only apply to head='baseline'")
    model = osnet(name, num_classes, **kwargs)
    if pretrained is True:  # ImageNet file: its 1000-way classifier is dropped
        path = resolve_weights_file(Path(IMAGENET_DIR) / OSNET_IMAGENET_FILES[name])
        load_torchreid_checkpoint(model, path, allow_missing=("fc.",))
    elif pretrained is not None and pretrained is not False:
        load_torchreid_checkpoint(model, pretrained)  # type: ignore[arg-type]
    return model


HEADS: dict[str, Callable[..., nn.Module]] = {
    "baseline": _build_baseline,
    "torchreid": _build_torchreid,
}


def build_model(
    name: str,
    num_classes: int = 0,
    pretrained: Pretrained = None,
    *,
    head: str = "baseline",
    pooling: str = "avg",
    neck: str = "bnneck",
    feat_after_bn: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build a re-id model by backbone name (see :func:`reidkit.models.list_backbones`).

    ``pretrained``: ``None``/``False`` random init, ``True`` ImageNet weights from
    ``$REIDKIT_WEIGHTS/imagenet/``, or a local file path. With ``head="baseline"`` it goes to the
    backbone (a torchreid checkpoint's ``fc``/``classifier`` are ignored); with
    ``head="torchreid"`` the whole OSNet is loaded strictly, and a classifier with another class
    count than ``num_classes`` is dropped with a warning. ``pooling`` (``avg``/``max``/``gem``),
    ``neck`` (``bnneck``/``none``) and ``feat_after_bn`` configure the baseline head; other
    ``kwargs`` go to the backbone (e.g. ``last_stride=1``) or to :class:`OSNet`
    (``feature_dim``, ``dropout_p``).
    """
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose from {sorted(HEADS)}")
    head_kw = {"pooling": pooling, "neck": neck, "feat_after_bn": feat_after_bn}
    return HEADS[head](name, num_classes, pretrained, head_kw, **kwargs)
