"""torchreid's MobileNetV2 (``mobilenetv2_x1_0``, ``mobilenetv2_x1_4``) with its parameter names.

The layout follows torchreid's ``torchreid/reid/models/mobilenetv2.py`` (deep-person-reid, after
Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018), so torchreid
model-zoo checkpoints load with ``strict=True``. It differs from torchvision's MobileNetV2
(:mod:`reidkit.models.backbones.mobilenet`) in naming (``conv1`` ... ``conv9``), in channel rounding
(plain ``int(c * width)``, no rounding to multiples of 8) and in keeping the 1x1 expansion conv in
the first, expansion-1 bottleneck.

Trunk: ``conv1`` 3x3/2 conv-BN-ReLU6 -> ``conv2`` ... ``conv8`` inverted-residual stages -> ``conv9``
1x1 conv-BN-ReLU6 to 1280 channels (``int(1280 * width)`` when ``width > 1``); total stride 32.
Head: global average pool -> optional ``fc`` (Linear + BatchNorm1d + ReLU per entry of ``fc_dims``;
torchreid's two constructors use none) -> ``classifier``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reidkit.models.backbones.torchreid_common import TorchreidHead, init_params

__all__ = ["MOBILENETV2_WIDTHS", "TorchreidMobileNetV2", "torchreid_mobilenetv2"]

# torchreid constructor name -> width multiplier.
MOBILENETV2_WIDTHS: dict[str, float] = {"mobilenetv2_x1_0": 1.0, "mobilenetv2_x1_4": 1.4}
# Inverted-residual stages conv2 ... conv8: (expansion t, channels c, blocks n, first stride s).
_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class ConvBlock(nn.Module):
    """Conv (no bias) + BatchNorm + ReLU6."""

    def __init__(self, in_c: int, out_c: int, k: int, s: int = 1, p: int = 0, g: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, k, stride=s, padding=p, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(out_c)
        self.relu = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand -> 3x3 depthwise -> linear 1x1 project (+ identity if shapes allow)."""

    def __init__(self, in_c: int, out_c: int, expansion: int, stride: int = 1) -> None:
        super().__init__()
        mid = in_c * expansion
        self.use_residual = stride == 1 and in_c == out_c
        self.conv1 = ConvBlock(in_c, mid, 1)
        self.dwconv2 = ConvBlock(mid, mid, 3, stride, 1, g=mid)
        self.conv3 = nn.Sequential(nn.Conv2d(mid, out_c, 1, bias=False), nn.BatchNorm2d(out_c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.conv3(self.dwconv2(self.conv1(x)))
        return x + m if self.use_residual else m


class TorchreidMobileNetV2(TorchreidHead, nn.Module):
    """The full torchreid MobileNetV2 (same parameter names, same outputs).

    ``forward(x)``: in eval mode the ``(N, feat_dim)`` embedding (pooled ``conv9`` output, through
    ``fc`` when there is one), exactly what torchreid returns at test time; in train mode a dict
    ``{"logits", "features", "bn_features"}`` like :class:`reidkit.models.OSNet` (``logits``
    absent when ``num_classes == 0``, in which case there is no ``classifier``).
    """

    def __init__(
        self,
        num_classes: int = 0,
        width_mult: float = 1.0,
        fc_dims: Sequence[int] | None = None,
        dropout_p: float | None = None,
    ) -> None:
        super().__init__()
        in_c = int(32 * width_mult)
        self.conv1 = ConvBlock(3, in_c, 3, s=2, p=1)
        for i, (t, c, n, s) in enumerate(_STAGES, start=2):
            out_c = int(c * width_mult)
            blocks = [Bottleneck(in_c if j == 0 else out_c, out_c, t, s if j == 0 else 1) for j in range(n)]
            self.add_module(f"conv{i}", nn.Sequential(*blocks))
            in_c = out_c
        last = int(1280 * width_mult) if width_mult > 1 else 1280
        self.conv9 = ConvBlock(in_c, last, 1)
        self.out_features = last
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Sequential | None = None
        self.feat_dim = last
        if fc_dims:
            layers: list[nn.Module] = []
            for dim in fc_dims:
                layers += [nn.Linear(self.feat_dim, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True)]
                if dropout_p is not None:
                    layers.append(nn.Dropout(p=dropout_p))
                self.feat_dim = dim
            self.fc = nn.Sequential(*layers)
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.feat_dim, num_classes) if num_classes > 0 else None
        init_params(self)

    def featuremaps(self, x: torch.Tensor) -> torch.Tensor:
        """The ``conv9`` feature map, ``(N, C, H/32, W/32)``."""
        for i in range(1, 10):
            x = getattr(self, f"conv{i}")(x)
        return x


def torchreid_mobilenetv2(
    name: str = "mobilenetv2_x1_0", num_classes: int = 0, **kwargs: object
) -> TorchreidMobileNetV2:
    """torchreid's MobileNetV2 by constructor name; ``kwargs`` (``fc_dims``, ``dropout_p``) go to the model."""
    return TorchreidMobileNetV2(num_classes, MOBILENETV2_WIDTHS[name], **kwargs)  # type: ignore[arg-type]
