"""Re-id heads: global pooling (avg, max, GeM), the BNNeck and the bias-free classifier."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["POOLINGS", "BNNeck", "GeM", "GlobalAvgPool", "GlobalMaxPool", "make_classifier"]


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
