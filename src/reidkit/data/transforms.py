"""Image transforms (torchvision v2) for training and testing re-id models.

Train (BoT): resize -> random horizontal flip -> pad + random crop -> to float -> ImageNet normalise
-> random erasing (filled with 0 = the mean colour after normalisation). Test: resize (bilinear) ->
normalise, the same pixels as :class:`reidkit.embed.Preprocess` gives at inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from reidkit.embed import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["build_test_transform", "build_train_transform"]


def _to_normalised() -> list[T.Transform]:
    return [
        T.ToImage(),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
    ]


def build_train_transform(
    height: int = 256,
    width: int = 128,
    hflip: float = 0.5,
    pad: int = 10,
    random_erasing: float = 0.5,
    erasing_scale: Sequence[float] = (0.02, 0.4),
    erasing_ratio: Sequence[float] = (0.3, 3.33),
) -> T.Compose:
    """PIL image -> augmented, normalised ``(3, height, width)`` float32 tensor."""
    ops: list[T.Transform] = [T.Resize((height, width), interpolation=InterpolationMode.BILINEAR)]
    if hflip > 0:
        ops.append(T.RandomHorizontalFlip(p=hflip))
    if pad > 0:
        ops += [T.Pad(pad), T.RandomCrop((height, width))]
    ops += _to_normalised()
    if random_erasing > 0:
        ops.append(T.RandomErasing(p=random_erasing, scale=tuple(erasing_scale), ratio=tuple(erasing_ratio), value=0))
    return T.Compose(ops)


def build_test_transform(height: int = 256, width: int = 128) -> T.Compose:
    """PIL image -> resized (bilinear), normalised ``(3, height, width)`` float32 tensor."""
    return T.Compose([T.Resize((height, width), interpolation=InterpolationMode.BILINEAR), *_to_normalised()])
