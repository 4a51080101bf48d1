"""Image transforms (torchvision v2) for training and testing re-id models.

Train (BoT): resize -> random horizontal flip -> pad + random crop -> to float -> ImageNet normalise
-> random erasing (filled with 0 = the mean colour after normalisation). Test: resize (bilinear) ->
normalise, the same pixels as :class:`reidkit.embed.Preprocess` gives at inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from reidkit.embed import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["KeypointTrainTransform", "TrainAugmentation", "build_test_transform", "build_train_transform"]


def _to_normalised() -> list[T.Transform]:
    return [
        T.ToImage(),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
    ]


@dataclass(frozen=True)
class TrainAugmentation:
    """The train augmentation's settings (BoT defaults), the one list of them that
    :func:`build_train_transform` and :class:`KeypointTrainTransform` take: resize to ``height`` x
    ``width``, horizontal flip with probability ``hflip``, pad by ``pad`` px and random crop back,
    random erasing with probability ``random_erasing`` (area ``erasing_scale``, aspect ``erasing_ratio``).
    """

    height: int = 256
    width: int = 128
    hflip: float = 0.5
    pad: int = 10
    random_erasing: float = 0.5
    erasing_scale: Sequence[float] = (0.02, 0.4)
    erasing_ratio: Sequence[float] = (0.3, 3.33)


def build_train_transform(height: int = 256, width: int = 128, **augmentation: Any) -> T.Compose:
    """PIL image -> augmented, normalised ``(3, height, width)`` float32 tensor; ``augmentation``: the
    other :class:`TrainAugmentation` settings (``hflip``, ``pad``, ``random_erasing``, ``erasing_scale``,
    ``erasing_ratio``)."""
    a = TrainAugmentation(height, width, **augmentation)
    ops: list[T.Transform] = [T.Resize((a.height, a.width), interpolation=InterpolationMode.BILINEAR)]
    if a.hflip > 0:
        ops.append(T.RandomHorizontalFlip(p=a.hflip))
    if a.pad > 0:
        ops += [T.Pad(a.pad), T.RandomCrop((a.height, a.width))]
    ops += _to_normalised()
    if a.random_erasing > 0:
        scale, ratio = tuple(a.erasing_scale), tuple(a.erasing_ratio)
        ops.append(T.RandomErasing(p=a.random_erasing, scale=scale, ratio=ratio, value=0))
    return T.Compose(ops)


def build_test_transform(height: int = 256, width: int = 128) -> T.Compose:
    """PIL image -> resized (bilinear), normalised ``(3, height, width)`` float32 tensor."""
    return T.Compose([T.Resize((height, width), interpolation=InterpolationMode.BILINEAR), *_to_normalised()])


class KeypointTrainTransform:
    """The train augmentation of :func:`build_train_transform` for a HOReID model: the image and its
    keypoints move together, and the result is ``(3 + 13, height, width)`` (RGB, then the keypoint
    maps of :func:`reidkit.pose.skeleton.render_nodes`).

    ``__call__(image, keypoints)``: a PIL image and its COCO ``(17, 3)`` keypoints in its pixels.
    Resize scales the keypoints; a horizontal flip mirrors them and swaps left and right nodes; pad
    + random crop shifts them; random erasing blanks the image *and* the keypoint maps inside the
    rectangle (a pose model would not see a keypoint under an occluder). Randomness comes from the
    torch RNG, as the other transforms (so :class:`reidkit.data.loaders.SeededBatches` seeds it).
    ``augmentation``: the :class:`TrainAugmentation` settings past ``height`` and ``width``;
    ``sigma_px``: the keypoint maps' Gaussian radius (default: the pose source's, scaled to ``height``).
    """

    wants_keypoints = True

    def __init__(
        self, height: int = 256, width: int = 128, *, sigma_px: float | None = None, **augmentation: Any
    ) -> None:
        from reidkit.pose.source import SIGMA, STRIDE

        a = TrainAugmentation(height, width, **augmentation)
        self.size = (a.height, a.width)
        self.hflip, self.pad, self.erasing = a.hflip, a.pad, a.random_erasing
        self.erasing_scale, self.erasing_ratio = tuple(a.erasing_scale), tuple(a.erasing_ratio)
        self.sigma = sigma_px if sigma_px is not None else SIGMA * STRIDE * height / 256
        self.normalise = T.Compose(_to_normalised())

    def __call__(self, image: Any, keypoints: Any) -> torch.Tensor:
        import numpy as np
        from PIL import Image

        from reidkit.pose.skeleton import FLIP_NODES, coco_to_horeid, render_nodes

        h, w = self.size
        nodes = coco_to_horeid(np.asarray(keypoints, np.float32)).copy()
        sx, sy = w / image.width, h / image.height
        nodes[:, 0] = (nodes[:, 0] + 0.5) * sx - 0.5
        nodes[:, 1] = (nodes[:, 1] + 0.5) * sy - 0.5
        image = image.resize((w, h), Image.Resampling.BILINEAR)
        if self.hflip > 0 and torch.rand(1).item() < self.hflip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            nodes[:, 0] = (w - 1) - nodes[:, 0]
            nodes = nodes[list(FLIP_NODES)]
        x = self.normalise(image)
        if self.pad > 0:
            x = _pad_black(x, self.pad)
            oy = int(torch.randint(0, 2 * self.pad + 1, (1,)).item())
            ox = int(torch.randint(0, 2 * self.pad + 1, (1,)).item())
            x = x[:, oy : oy + h, ox : ox + w]
            nodes[:, 0] += self.pad - ox
            nodes[:, 1] += self.pad - oy
        maps = torch.from_numpy(render_nodes(nodes, (h, w), (h, w), self.sigma))
        if self.erasing > 0 and torch.rand(1).item() < self.erasing:
            box = _erasing_box(h, w, self.erasing_scale, self.erasing_ratio)
            if box is not None:
                y0, x0, eh, ew = box
                x[:, y0 : y0 + eh, x0 : x0 + ew] = 0.0
                maps[:, y0 : y0 + eh, x0 : x0 + ew] = 0.0
        return torch.cat([x, maps], 0)


def _pad_black(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad a normalised ``(3, H, W)`` image with black, as ``T.Pad`` on the uint8 image before
    normalising does in :func:`build_train_transform`."""
    from reidkit.embed import IMAGENET_MEAN, IMAGENET_STD

    fill = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]).view(3, 1, 1)
    out = fill.expand(x.shape[0], x.shape[1] + 2 * pad, x.shape[2] + 2 * pad).clone()
    out[:, pad : pad + x.shape[1], pad : pad + x.shape[2]] = x
    return out


def _erasing_box(
    h: int, w: int, scale: Sequence[float], ratio: Sequence[float], tries: int = 10
) -> tuple[int, int, int, int] | None:
    """A random-erasing rectangle ``(y, x, height, width)`` as torchvision draws it, or None."""
    import math

    area = h * w
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(tries):
        target = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = math.exp(torch.empty(1).uniform_(float(log_ratio[0]), float(log_ratio[1])).item())
        eh, ew = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if eh < h and ew < w:
            y0 = int(torch.randint(0, h - eh + 1, (1,)).item())
            x0 = int(torch.randint(0, w - ew + 1, (1,)).item())
            return y0, x0, eh, ew
    return None
