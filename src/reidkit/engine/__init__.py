"""Training engine: :class:`Trainer`, :func:`train`, checkpoints and DDP helpers."""

from reidkit.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from reidkit.engine.distributed import DistInfo, init_distributed
from reidkit.engine.trainer import (
    FINAL_WEIGHTS,
    Trainer,
    WarmupLR,
    build_model_from_config,
    build_optimizer,
    evaluate_model,
    train,
)

__all__ = [
    "FINAL_WEIGHTS",
    "DistInfo",
    "Trainer",
    "WarmupLR",
    "build_model_from_config",
    "build_optimizer",
    "evaluate_model",
    "init_distributed",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
