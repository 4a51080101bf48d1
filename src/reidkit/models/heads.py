"""Re-id heads: global pooling (avg, max, GeM), the BNNeck, the bias-free classifier and the way a
model replaces its classifier (:class:`ResettableClassifier`)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["POOLINGS", "BNNeck", "GeM", "GlobalAvgPool", "GlobalMaxPool", "ResettableClassifier", "make_classifier"]


class GlobalAvgPool(nn.Module):
    """``(N, C, H, W) -> (N, C)`` mean over space."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


class GlobalMaxPool(nn.Module):
    """``(N, C, H, W) -> (N, C)`` max over space."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(-2, -1))


class GeM(nn.Module):
    """Generalized-mean pooling ``(mean(clamp(x, eps)^p))^(1/p)`` with a learnable ``p``.

    ``p = 1`` is average pooling (for non-negative inputs), ``p -> inf`` approaches max pooling.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 math: x^p overflows half precision quickly
        p = self.p.float()
        y = x.float().clamp(min=self.eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


POOLINGS: dict[str, type[nn.Module]] = {
    "avg": GlobalAvgPool,
    "max": GlobalMaxPool,
    "gem": GeM,
}


class BNNeck(nn.BatchNorm1d):
    """BatchNorm1d with a frozen zero bias (BoT, Luo et al. 2019): weight 1, bias 0 and no grad."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        self.bias.requires_grad_(False)


def make_classifier(in_features: int, num_classes: int) -> nn.Linear:
    """Bias-free linear classifier initialised ``N(0, 0.001)`` as in BoT."""
    fc = nn.Linear(in_features, num_classes, bias=False)
    nn.init.normal_(fc.weight, std=0.001)
    return fc


class ResettableClassifier:
    """Mixin for an ``nn.Module`` with an identity classifier sized by the number of classes.

    The model says how a classifier is made (:meth:`new_classifier`); :meth:`reset_classifier` (called
    by the model's ``__init__``, and to train on other identities) sets ``num_classes`` and replaces
    ``classifier`` by a fresh one, or by None for 0 classes.
    """

    num_classes: int
    classifier: nn.Module | None

    def new_classifier(self, num_classes: int) -> nn.Module:
        """A fresh classifier for ``num_classes`` (> 0) identities."""
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one for ``num_classes`` identities (0 removes it)."""
        self.num_classes = num_classes
        self.classifier = self.new_classifier(num_classes) if num_classes > 0 else None
