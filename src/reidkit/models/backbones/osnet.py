"""OSNet: omni-scale feature learning for person re-id (Zhou et al., ICCV 2019).

Parameter names follow torchreid's ``osnet.py`` exactly, so torchreid model-zoo checkpoints
(e.g. ``osnet_x0_25_market1501.pth``) load with ``strict=True`` into :class:`OSNet`.

Two models share the same trunk (``conv1`` ... ``conv5``):

* :class:`OSNetBackbone` returns the ``conv5`` feature map ``(N, C, H/16, W/16)``; use it inside
  :class:`reidkit.models.ReIDBaseline` like any other backbone.
* :class:`OSNet` is the full torchreid model: trunk -> global average pool -> ``fc``
  (Linear + BatchNorm1d + ReLU, 512-d) -> ``classifier``.
"""

from __future__ import annotations

import torch
from torch import nn

from reidkit.models.backbones.layers import Conv2dSame
from reidkit.models.backbones.torchreid_common import TorchreidHead, init_params

__all__ = [
    "OSNET_CHANNELS",
    "OSNET_IMAGENET_FILES",
    "OSNet",
    "OSNetBackbone",
    "osnet",
    "osnet_backbone",
]

# Channels of conv1, conv2, conv3 and conv4/conv5 per width multiplier (as in torchreid).
OSNET_CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "osnet_x1_0": (64, 256, 384, 512),
    "osnet_x0_75": (48, 192, 288, 384),
    "osnet_x0_5": (32, 128, 192, 256),
    "osnet_x0_25": (16, 64, 96, 128),
}
# torchreid's ImageNet-pretrained file names (looked up under $REIDKIT_WEIGHTS/imagenet/).
OSNET_IMAGENET_FILES: dict[str, str] = {name: f"{name}_imagenet.pth" for name in OSNET_CHANNELS}
_LAYERS = (2, 2, 2)


class ConvLayer(nn.Module):
    """Conv (no bias, padding ``(kernel_size - 1) // 2``) + BatchNorm + ReLU; ``conv``: ``stride``, ``groups``
    (the conv is a :class:`~reidkit.models.backbones.layers.Conv2dSame` with symmetric padding)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, **conv: int) -> None:
        super().__init__()
        self.conv = Conv2dSame(in_channels, out_channels, kernel_size, tf_same=False, **conv)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Conv1x1(ConvLayer):
    """1x1 conv + BatchNorm + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, 1, stride=stride)


class Conv1x1Linear(nn.Module):
    """1x1 conv + BatchNorm, no activation."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class LightConv3x3(nn.Module):
    """Lite 3x3: pointwise 1x1 conv, then depthwise 3x3 conv, BatchNorm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False, groups=out_channels)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv2(self.conv1(x))))


class ChannelGate(nn.Module):
    """Unified aggregation gate: channel-wise sigmoid weights from a tiny bottleneck MLP.

    The same gate (shared weights) is applied to every stream of an :class:`OSBlock`.
    """

    def __init__(self, in_channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = in_channels // reduction
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(in_channels, hidden, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, in_channels, 1, bias=True)
        self.gate_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gate_activation(self.fc2(self.relu(self.fc1(self.global_avgpool(x)))))
        return x * g


class OSBlock(nn.Module):
    """Omni-scale residual bottleneck: 4 streams of 1-4 stacked Lite 3x3 convs, gated and summed."""

    def __init__(self, in_channels: int, out_channels: int, bottleneck_reduction: int = 4) -> None:
        super().__init__()
        mid = out_channels // bottleneck_reduction
        self.conv1 = Conv1x1(in_channels, mid)
        self.conv2a = LightConv3x3(mid, mid)
        self.conv2b = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(2)))
        self.conv2c = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(3)))
        self.conv2d = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(4)))
        self.gate = ChannelGate(mid)
        self.conv3 = Conv1x1Linear(mid, out_channels)
        self.downsample = Conv1x1Linear(in_channels, out_channels) if in_channels != out_channels else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = (
            self.gate(self.conv2a(x1))
            + self.gate(self.conv2b(x1))
            + self.gate(self.conv2c(x1))
            + self.gate(self.conv2d(x1))
        )
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv3(x2) + identity)


def _make_stage(num_blocks: int, in_channels: int, out_channels: int, reduce_spatial_size: bool) -> nn.Sequential:
    layers: list[nn.Module] = [OSBlock(in_channels, out_channels)]
    layers += [OSBlock(out_channels, out_channels) for _ in range(1, num_blocks)]
    if reduce_spatial_size:  # transition: 1x1 conv + 2x2 average pooling
        layers.append(nn.Sequential(Conv1x1(out_channels, out_channels), nn.AvgPool2d(2, stride=2)))
    return nn.Sequential(*layers)


class _OSNetTrunk(nn.Module):
    """conv1 (7x7/2) -> maxpool -> conv2..conv4 (OS blocks) -> conv5 (1x1); total stride 16."""

    def __init__(self, channels: tuple[int, int, int, int], layers: tuple[int, int, int] = _LAYERS) -> None:
        super().__init__()
        c0, c1, c2, c3 = channels
        self.conv1 = ConvLayer(3, c0, 7, stride=2)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = _make_stage(layers[0], c0, c1, reduce_spatial_size=True)
        self.conv3 = _make_stage(layers[1], c1, c2, reduce_spatial_size=True)
        self.conv4 = _make_stage(layers[2], c2, c3, reduce_spatial_size=False)
        self.conv5 = Conv1x1(c3, c3)
        self.out_features = c3

    def featuremaps(self, x: torch.Tensor) -> torch.Tensor:
        """The conv5 feature map, ``(N, C, H/16, W/16)``."""
        x = self.maxpool(self.conv1(x))
        x = self.conv4(self.conv3(self.conv2(x)))
        return self.conv5(x)


class OSNetBackbone(_OSNetTrunk):
    """OSNet trunk as a backbone: ``forward`` returns the feature map; ``out_features`` = C."""

    # Keys of a torchreid checkpoint that a backbone has no use for.
    pretrained_ignore_keys = ("fc.", "classifier.")

    def __init__(self, channels: tuple[int, int, int, int], layers: tuple[int, int, int] = _LAYERS) -> None:
        super().__init__(channels, layers)
        init_params(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.featuremaps(x)


class OSNet(TorchreidHead, _OSNetTrunk):
    """The full torchreid OSNet (same parameter names, same outputs).

    ``forward(x)``:

    * eval mode: the ``(N, feature_dim)`` embedding, i.e. the ``fc`` output (after its BN + ReLU),
      exactly what torchreid returns at test time;
    * train mode: a dict ``{"logits": (N, num_classes), "features": (N, feature_dim),
      "bn_features": same tensor as "features"}`` (keys match :class:`ReIDBaseline`; ``logits``
      is absent when ``num_classes == 0``).

    ``feature_dim=None`` drops ``fc`` (the embedding is then the pooled conv5 output).
    """

    def __init__(
        self,
        num_classes: int = 0,
        channels: tuple[int, int, int, int] = OSNET_CHANNELS["osnet_x1_0"],
        layers: tuple[int, int, int] = _LAYERS,
        feature_dim: int | None = 512,
        dropout_p: float | None = None,
    ) -> None:
        super().__init__(channels, layers)
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        c = channels[-1]
        if feature_dim is None:
            self.fc: nn.Sequential | None = None
            self.feat_dim = c
        else:
            fc: list[nn.Module] = [
                nn.Linear(c, feature_dim),
                nn.BatchNorm1d(feature_dim),
                nn.ReLU(inplace=True),
            ]
            if dropout_p is not None:
                fc.append(nn.Dropout(p=dropout_p))
            self.fc = nn.Sequential(*fc)
            self.feat_dim = feature_dim
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.feat_dim, num_classes) if num_classes > 0 else None
        init_params(self)


def osnet_backbone(name: str = "osnet_x1_0") -> OSNetBackbone:
    """OSNet trunk by variant name (``osnet_x1_0``, ``osnet_x0_75``, ``osnet_x0_5``, ``osnet_x0_25``)."""
    return OSNetBackbone(OSNET_CHANNELS[name])


def osnet(name: str = "osnet_x1_0", num_classes: int = 0, **kwargs: object) -> OSNet:
    """The torchreid-style :class:`OSNet` by variant name; ``kwargs`` go to :class:`OSNet`."""
    return OSNet(num_classes, OSNET_CHANNELS[name], **kwargs)  # type: ignore[arg-type]
