"""Layers more than one backbone builds on."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Conv2dSame"]


class Conv2dSame(nn.Conv2d):
    """Conv2d (no bias) with TensorFlow "SAME" padding, or plain symmetric padding.

    Stride-1 convs pad ``(k - 1) // 2`` statically either way; strided ones pad dynamically
    (extra pixel on the right/bottom) when ``tf_same`` is true.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        tf_same: bool = True,
    ) -> None:
        dynamic = tf_same and stride > 1
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding=0 if dynamic else (kernel_size - 1) // 2,
            groups=groups,
            bias=False,
        )
        self.dynamic = dynamic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic:
            pads: list[int] = []
            for size, k, s in zip(
                reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride),
                strict=True,
            ):  # F.pad wants (left, right, top, bottom)
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)
