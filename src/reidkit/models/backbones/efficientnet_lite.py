"""EfficientNet-Lite0 trunk with lukemelas-style parameter names.

Lite variants differ from EfficientNet-B0 by: no squeeze-excite, ReLU6 instead of swish and a
fixed stem (32) / head (1280) width. Parameter names (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` ...) match the ``efficientnet-lite0-57934424.pth`` ImageNet file, which
loads strictly once ``_fc.*`` is dropped. Those weights come from TensorFlow, so convolutions use
TF "SAME" padding by default (asymmetric for stride 2) and BatchNorm uses ``eps=1e-3``.
(The TF reference normalises inputs with mean 127 / std 128, i.e. to [-1, 1]; ImageNet mean/std
normalisation also works for fine-tuning.)
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import stochastic_depth

from reidkit.models.backbones.layers import Conv2dSame

__all__ = ["EfficientNetLite", "efficientnet_lite0"]

_BN_EPS = 1e-3
# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage, Lite0.
_LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class MBConvBlock(nn.Module):
    """Inverted residual (no SE): [1x1 expand] -> depthwise kxk -> 1x1 project, ReLU6."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        drop_rate: float = 0.0,
        tf_same: bool = True,
    ) -> None:
        super().__init__()
        mid = in_channels * expand_ratio
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_channels, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel_size, stride, groups=mid, tf_same=tf_same)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = nn.Conv2d(mid, out_channels, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_channels, eps=_BN_EPS)
        self.act = nn.ReLU6(inplace=True)
        self.use_skip = stride == 1 and in_channels == out_channels
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if self.use_skip:
            if self.drop_rate > 0:
                y = stochastic_depth(y, self.drop_rate, "row", self.training)
            y = y + x
        return y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 up to the 1280-channel head; ``forward`` -> ``(N, 1280, H/32, W/32)``.

    ``drop_connect_rate`` is the stochastic-depth rate of the last block (linearly increasing
    from 0, as in the reference); ``tf_same=False`` uses symmetric padding instead of TF "SAME".
    """

    pretrained_ignore_keys = ("_fc.",)

    def __init__(self, drop_connect_rate: float = 0.2, tf_same: bool = True) -> None:
        super().__init__()
        stem, head = 32, 1280
        self._conv_stem = Conv2dSame(3, stem, 3, stride=2, tf_same=tf_same)
        self._bn0 = nn.BatchNorm2d(stem, eps=_BN_EPS)
        specs = [
            (cin if i == 0 else cout, cout, k, s if i == 0 else 1, e)
            for reps, k, s, e, cin, cout in _LITE0_STAGES
            for i in range(reps)
        ]
        self._blocks = nn.ModuleList(
            MBConvBlock(*spec, drop_rate=drop_connect_rate * idx / len(specs), tf_same=tf_same)
            for idx, spec in enumerate(specs)
        )
        self._conv_head = nn.Conv2d(specs[-1][1], head, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(head, eps=_BN_EPS)
        self.act = nn.ReLU6(inplace=True)
        self.out_features = head
        self._init_params()

    def _init_params(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.act(self._bn1(self._conv_head(x)))


def efficientnet_lite0(drop_connect_rate: float = 0.2, tf_same: bool = True) -> EfficientNetLite:
    """EfficientNet-Lite0 trunk (1280 channels)."""
    return EfficientNetLite(drop_connect_rate, tf_same)
