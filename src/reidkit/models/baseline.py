"""The re-id strong baseline (BoT, Luo et al. 2019): backbone -> pooling -> BNNeck -> classifier."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from reidkit.models.heads import POOLINGS, BNNeck, ResettableClassifier, make_classifier

__all__ = ["NECKS", "ReIDBaseline"]


def _no_neck(num_features: int) -> nn.Module:
    return nn.Identity()


NECKS: dict[str, Callable[[int], nn.Module]] = {"bnneck": BNNeck, "none": _no_neck}


class ReIDBaseline(ResettableClassifier, nn.Module):
    """Strong-baseline re-id model around any backbone returning ``(N, C, H, W)`` maps.

    ``forward(x)``:

    * train mode: ``{"logits": (N, num_classes), "features": (N, D) pooled feature before the
      neck (for the triplet loss), "bn_features": (N, D) after the neck}``; ``logits`` is absent
      when ``num_classes == 0``;
    * eval mode: the ``(N, D)`` embedding, after the BNNeck (``feat_after_bn=True``) or before.

    ``neck``: ``"bnneck"`` (BatchNorm1d with frozen bias) or ``"none"``. ``embed_dim``: a bias-free
    linear reduction of the pooled feature to this width before the neck (e.g. to match a distillation
    teacher's embedding); None keeps the backbone's width.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int = 0,
        pooling: str = "avg",
        neck: str = "bnneck",
        feat_after_bn: bool = True,
        embed_dim: int | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose from {sorted(POOLINGS)}")
        if neck not in NECKS:
            raise ValueError(f"unknown neck {neck!r}; choose from {sorted(NECKS)}")
        dim = int(backbone.out_features)  # type: ignore[arg-type]
        if embed_dim is not None and embed_dim <= 0:
            raise ValueError(f"embed_dim must be > 0, got {embed_dim}")
        self.backbone = backbone
        self.pool = POOLINGS[pooling]()
        self.reduce = nn.Linear(dim, embed_dim, bias=False) if embed_dim else None
        dim = embed_dim or dim
        self.neck = NECKS[neck](dim)
        self.feat_dim = dim
        self.feat_after_bn = feat_after_bn
        self.reset_classifier(num_classes)

    def new_classifier(self, num_classes: int) -> nn.Linear:
        """The BoT classifier on the embedding: bias-free, ``N(0, 0.001)``."""
        return make_classifier(self.feat_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        feat = self.pool(self.backbone(x))
        if self.reduce is not None:
            feat = self.reduce(feat)
        bn_feat = self.neck(feat)
        if not self.training:
            return bn_feat if self.feat_after_bn else feat
        out = {"features": feat, "bn_features": bn_feat}
        if self.classifier is not None:
            out["logits"] = self.classifier(bn_feat)
        return out
