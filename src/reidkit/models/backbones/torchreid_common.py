"""What torchreid's full models share: their weight init and their pooled-embedding head.

:class:`TorchreidHead` gives a model with ``featuremaps``, ``global_avgpool``, ``fc`` (or ``None``) and
``classifier`` (or ``None``) torchreid's test-time output (the embedding) and reidkit's train-time dict.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["TorchreidHead", "init_params"]


def init_params(module: nn.Module) -> None:
    """torchreid's init: kaiming (fan_out) convs, unit BN, N(0, 0.01) linears, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class TorchreidHead:
    """Mixin for an ``nn.Module``: pooled (``fc``-projected) embedding; train mode adds logits."""

    featuremaps: Callable[[torch.Tensor], torch.Tensor]
    global_avgpool: nn.Module
    fc: nn.Module | None
    classifier: nn.Module | None
    training: bool

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled (and ``fc``-projected) embedding, ``(N, feat_dim)``."""
        v = self.global_avgpool(self.featuremaps(x)).flatten(1)
        return v if self.fc is None else self.fc(v)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        v = self.embed(x)
        if not self.training:
            return v
        out = {"features": v, "bn_features": v}
        if self.classifier is not None:
            out["logits"] = self.classifier(v)
        return out
