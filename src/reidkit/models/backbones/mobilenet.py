"""torchvision MobileNetV2 trunk (``features`` only, classifier removed)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models

__all__ = ["MobileNetV2Backbone", "mobilenet_v2"]


class MobileNetV2Backbone(nn.Module):
    """``torchvision.models.mobilenet_v2().features``; ``forward`` returns ``(N, 1280, H/32, W/32)``.

    ``last_stride=1`` makes the last downsampling block (``features.14``, the first 160-channel
    block) keep its resolution: ``(N, 1280, H/16, W/16)``, taller maps for part models (RRID).

    Parameter names are torchvision's ``features.*``, so an ImageNet file loads once the
    ``classifier.*`` keys (if any) are dropped.
    """

    pretrained_ignore_keys = ("classifier.",)

    def __init__(self, width_mult: float = 1.0, last_stride: int = 2) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        net = models.mobilenet_v2(weights=None, width_mult=width_mult)
        self.features = net.features
        self.out_features: int = net.last_channel
        self.last_stride = last_stride
        if last_stride == 1:
            depthwise = self.features[14].conv[1][0]
            assert isinstance(depthwise, nn.Conv2d) and depthwise.stride == (2, 2)
            depthwise.stride = (1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def mobilenet_v2(width_mult: float = 1.0, last_stride: int = 2) -> MobileNetV2Backbone:
    """MobileNetV2 trunk (output stride 32, or 16 with ``last_stride=1``)."""
    return MobileNetV2Backbone(width_mult, last_stride)
