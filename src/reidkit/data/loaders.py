"""Image datasets and the P x K training loader.

Augmentation randomness does not come from the loader workers' RNG: the batch sampler is wrapped
by :class:`SeededBatches`, which gives every drawn item its own seed derived from
``(seed, epoch, rank, batch, position)``, and :class:`ImageDataset` runs the transform under that
seed. Training is therefore reproducible whatever ``num_workers`` is and across resumes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from reidkit.data.samplers import PKBatchSampler
from reidkit.data.transforms import build_train_transform
from reidkit.datasets.base import Sample
from reidkit.imaging import to_pil

__all__ = ["ImageDataset", "SeededBatches", "build_train_loader", "seed_worker"]

Item = tuple[torch.Tensor, int, int, int]


class ImageDataset(Dataset[Item]):
    """Samples -> ``(image, pid, camid, index)``: the image decoded as RGB and transformed (a
    transform with ``wants_keypoints`` also gets the sample's ``extra["keypoints"]``).

    Indexing with ``(index, seed)`` runs the transform with the torch RNG seeded by ``seed`` (the
    caller's RNG state is restored afterwards).
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Any], torch.Tensor]) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> Item:
        index, seed = key if isinstance(key, tuple) else (key, None)
        s = self.samples[index]
        image = to_pil(s.path)
        args = (image, s.extra["keypoints"]) if getattr(self.transform, "wants_keypoints", False) else (image,)
        if seed is None:
            x = self.transform(*args)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                x = self.transform(*args)
        return x, s.pid, s.camid, index


class SeededBatches(Sampler[list[tuple[int, int]]]):
    """Wraps a batch sampler: yields ``[(index, item_seed), ...]`` with per-item augmentation seeds."""

    def __init__(self, batch_sampler: PKBatchSampler, seed: int = 0) -> None:
        self.batch_sampler = batch_sampler
        self.seed = seed

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        bs = self.batch_sampler
        for b, batch in enumerate(bs):
            seeds = np.random.SeedSequence([self.seed, bs.epoch, bs.rank, b]).generate_state(len(batch))
            yield [(i, int(s)) for i, s in zip(batch, seeds, strict=True)]

    def __len__(self) -> int:
        return len(self.batch_sampler)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed ``random`` and numpy from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def build_train_loader(
    samples: Sequence[Sample],
    *,
    height: int = 256,
    width: int = 128,
    ids_per_batch: int = 16,
    instances_per_id: int = 4,
    workers: int = 2,
    persistent_workers: bool = True,
    pin_memory: bool = False,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    transform: Callable[[Any], torch.Tensor] | None = None,
    transform_kwargs: dict[str, Any] | None = None,
) -> tuple[DataLoader[Item], PKBatchSampler]:
    """The P x K training loader and its batch sampler (call ``sampler.set_epoch(e)`` each epoch).

    ``transform`` defaults to :func:`build_train_transform` ``(height, width, **transform_kwargs)``.
    """
    if transform is None:
        transform = build_train_transform(height, width, **(transform_kwargs or {}))
    dataset = ImageDataset(samples, transform)
    sampler = PKBatchSampler(
        [s.pid for s in samples], ids_per_batch, instances_per_id, seed=seed, rank=rank, world_size=world_size
    )
    loader = DataLoader(
        dataset,
        batch_sampler=SeededBatches(sampler, seed),
        num_workers=workers,
        persistent_workers=persistent_workers and workers > 0,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )
    return loader, sampler
