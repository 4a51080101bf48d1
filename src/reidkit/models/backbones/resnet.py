"""torchvision ResNet trunks (fc and avgpool removed) with an optional last stride of 1."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision import models

__all__ = ["ResNetBackbone", "resnet18", "resnet50"]


class ResNetBackbone(nn.Module):
    """A torchvision ResNet up to ``layer4``; ``forward`` returns ``(N, C, H/s, W/s)``.

    Parameter names equal torchvision's, so an ImageNet state dict loads once ``fc.*`` is dropped.
    ``last_stride=1`` (the re-id "strong baseline" default) keeps ``layer4`` at stride 16 overall.
    """

    pretrained_ignore_keys = ("fc.",)

    def __init__(self, factory: Callable[..., models.ResNet], last_stride: int = 1) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        net = factory(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        if last_stride == 1:
            for m in self.layer4[0].modules():  # conv1/conv2 (basic/bottleneck) + downsample
                if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
                    m.stride = (1, 1)
        self.out_features: int = net.fc.in_features
        self.last_stride = last_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def resnet50(last_stride: int = 1) -> ResNetBackbone:
    """ResNet-50 trunk, 2048 channels."""
    return ResNetBackbone(models.resnet50, last_stride)


def resnet18(last_stride: int = 1) -> ResNetBackbone:
    """ResNet-18 trunk, 512 channels."""
    return ResNetBackbone(models.resnet18, last_stride)
