"""``build_model``: one entry point from a name to a ready re-id model.

Two heads:

* ``head="baseline"`` (default, any registered backbone): :class:`ReIDBaseline` = backbone ->
  pooling -> (optional linear reduction to ``feature_dim``) -> BNNeck -> bias-free classifier;
  ``pretrained`` initialises the backbone only.
* ``head="torchreid"`` (names in :data:`TORCHREID_MODELS`: ``osnet_*``, ``mobilenetv2_x1_0``,
  ``mobilenetv2_x1_4``): the torchreid model itself (:class:`OSNet` with its ``fc`` 512-d
  embedding, :class:`TorchreidMobileNetV2` with its pooled ``conv9`` output, plus the
  classifier), into which torchreid model-zoo checkpoints load strictly.

* ``head="rrid"`` (any registered backbone): :class:`~reidkit.models.rrid.RelationNet`, the
  Relation Network (parts at several granularities, one-vs-rest relation, GCP); its options
  ``parts``, ``dim``, ``relation``, ``gcp`` and ``embedding`` come in ``kwargs``.

All return a dict with ``"logits"`` and ``"features"`` in train mode and an ``(N, D)`` embedding in
eval mode, and expose the embedding size as ``feat_dim``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from reidkit.models.backbones.mobilenetv2_torchreid import MOBILENETV2_WIDTHS, torchreid_mobilenetv2
from reidkit.models.backbones.osnet import OSNET_IMAGENET_FILES, osnet
from reidkit.models.backbones.registry import IMAGENET_DIR, Pretrained, build_backbone
from reidkit.models.baseline import ReIDBaseline
from reidkit.models.horeid import HOReIDNet
from reidkit.models.rrid import RelationNet
from reidkit.models.weights import load_torchreid_checkpoint, resolve_weights_file

__all__ = ["HEADS", "TORCHREID_MODELS", "build_model"]

_BASELINE_DEFAULTS = {"pooling": "avg", "neck": "bnneck", "feat_after_bn": True}
# head="torchreid": name -> constructor ``(num_classes, **kwargs)`` of the full torchreid model.
TORCHREID_MODELS: dict[str, Callable[..., nn.Module]] = {
    **{name: partial(osnet, name) for name in OSNET_IMAGENET_FILES},
    **{name: partial(torchreid_mobilenetv2, name) for name in MOBILENETV2_WIDTHS},
}


def _build_baseline(
    name: str, num_classes: int, pretrained: Pretrained, head_kw: dict[str, Any], **kwargs: Any
) -> nn.Module:
    embed_dim = kwargs.pop("feature_dim", None)
    backbone = build_backbone(name, pretrained, **kwargs)
    return ReIDBaseline(backbone, num_classes, embed_dim=embed_dim, **head_kw)


def _build_torchreid(
    name: str, num_classes: int, pretrained: Pretrained, head_kw: dict[str, Any], **kwargs: Any
) -> nn.Module:
    if name not in TORCHREID_MODELS:
        raise ValueError(f"head='torchreid' is only available for {sorted(TORCHREID_MODELS)}, not {name!r}")
    changed = {k: v for k, v in head_kw.items() if v != _BASELINE_DEFAULTS[k]}
    if changed:
        raise ValueError(f"{sorted(changed)} only apply to head='baseline'")
    if pretrained is True and name not in OSNET_IMAGENET_FILES:
        raise ValueError(f"no known ImageNet weights for head='torchreid' {name!r}; pass a checkpoint path")
    model = TORCHREID_MODELS[name](num_classes, **kwargs)
    if pretrained is True:  # OSNet ImageNet file: its 1000-way classifier is dropped
        path = resolve_weights_file(Path(IMAGENET_DIR) / OSNET_IMAGENET_FILES[name])
        load_torchreid_checkpoint(model, path, allow_missing=("fc.",))
    elif pretrained is not None and pretrained is not False:
        load_torchreid_checkpoint(model, pretrained)  # type: ignore[arg-type]
    return model


RRID_OPTIONS = ("parts", "dim", "relation", "gcp", "embedding", "aux_ce")
HOREID_OPTIONS = ("relation", "topology", "gm_hidden")


def _head_on_backbone(
    head: str, cls: Callable[..., nn.Module], options: tuple[str, ...], why: str
) -> Callable[..., nn.Module]:
    """A builder for a head class wrapping a registry backbone: ``options`` go to the head, the
    other keyword arguments to the backbone; the baseline's pooling / neck settings are refused."""

    def build(name: str, num_classes: int, pretrained: Pretrained, head_kw: dict[str, Any], **kwargs: Any) -> nn.Module:
        changed = {k: v for k, v in head_kw.items() if v != _BASELINE_DEFAULTS[k]}
        if changed:
            raise ValueError(f"{sorted(changed)} only apply to head='baseline' ({why})")
        head_opts = {k: kwargs.pop(k) for k in options if k in kwargs}
        try:
            backbone = build_backbone(name, pretrained, **kwargs)
        except TypeError as err:
            label = {"rrid": "RRID", "horeid": "HOReID"}.get(head, head)
            raise ValueError(
                f"head={head!r} on {name!r}: unknown option(s) {sorted(kwargs)}; {label} takes {list(options)}, "
                f"the rest goes to the backbone ({err})"
            ) from None
        return cls(backbone, num_classes, **head_opts)

    return build


_build_rrid = _head_on_backbone("rrid", RelationNet, RRID_OPTIONS, "RRID max-pools its parts, no BNNeck")
_build_horeid = _head_on_backbone("horeid", HOReIDNet, HOREID_OPTIONS, "HOReID pools by keypoint heatmaps")


HEADS: dict[str, Callable[..., nn.Module]] = {
    "baseline": _build_baseline,
    "torchreid": _build_torchreid,
    "rrid": _build_rrid,
    "horeid": _build_horeid,
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
    ``head="torchreid"`` the whole torchreid model is loaded strictly, and a classifier with another
    class count than ``num_classes`` is dropped with a warning. ``pooling`` (``avg``/``max``/``gem``),
    ``neck`` (``bnneck``/``none``) and ``feat_after_bn`` configure the baseline head; other
    ``kwargs`` go to the backbone (e.g. ``last_stride=1``), to :class:`OSNet` (``feature_dim``,
    ``dropout_p``) or to :class:`TorchreidMobileNetV2` (``fc_dims``, ``dropout_p``).
    """
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose from {sorted(HEADS)}")
    head_kw = {"pooling": pooling, "neck": neck, "feat_after_bn": feat_after_bn}
    return HEADS[head](name, num_classes, pretrained, head_kw, **kwargs)
