"""Training data: transforms, the P x K identity sampler and loaders."""

from reidkit.data.loaders import ImageDataset, SeededBatches, build_train_loader, seed_worker
from reidkit.data.samplers import PKBatchSampler
from reidkit.data.transforms import build_test_transform, build_train_transform

__all__ = [
    "ImageDataset",
    "PKBatchSampler",
    "SeededBatches",
    "build_test_transform",
    "build_train_loader",
    "build_train_transform",
    "seed_worker",
]
