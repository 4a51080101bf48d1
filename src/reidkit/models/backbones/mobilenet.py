"""torchvision MobileNetV2 trunk (``features`` only, classifier removed)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models

__all__ = ["MobileNetV2Backbone", "mobilenet_v2"]


class MobileNetV2Backbone(nn.Module):
    """``torchvision.models.mobilenet_v2().features``; ``forward`` returns ``(N, 1280, H/32, W/32)``.

    Parameter names are torchvision's ``features.*``, so an ImageNet file loads once the
    ``classifier.*`` keys (if any) are dropped.
    """

    pretrained_ignore_keys = ("classifier.",)

    def __init__(self, width_mult: float = 1.0) -> None:
        super().__init__()
        net = models.mobilenet_v2(weights=None, width_mult=width_mult)
        self.features = net.features
        self.out_features: int = net.last_channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def mobilenet_v2(width_mult: float = 1.0) -> MobileNetV2Backbone:
    """MobileNetV2 trunk."""
    return MobileNetV2Backbone(width_mult)
