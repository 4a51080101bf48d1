"""Training loop for the re-id strong baseline (BoT recipe): :class:`Trainer` and :func:`train`.

>>> out = train("configs/market1501/bot_resnet50.yaml", ["solver.max_epochs=12"])      # weights file
>>> out = train("configs/market1501/bot_resnet50.yaml", resume=True)                    # continue

The output folder holds ``config.yaml`` (resolved), ``metrics.jsonl`` (one JSON record per
``log_every`` iterations, per epoch and per evaluation), ``checkpoints/`` (see
:mod:`reidkit.engine.checkpoint`) and ``model_final.pth`` (the model's state dict). Runs under
``torchrun`` train with DDP (gloo on CPU, nccl on CUDA); rank 0 logs, evaluates and saves.
"""

from __future__ import annotations

import bisect
import gc
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from reidkit.config import ExperimentConfig, ModelConfig, SolverConfig, config_to_yaml, load_config
from reidkit.data.loaders import build_train_loader
from reidkit.datasets import get_dataset
from reidkit.datasets.base import ReIDDataset, Sample, holdout_query_gallery, holdout_split, relabel
from reidkit.embed import Embedder, TorchBackend
from reidkit.engine import checkpoint as ckpt
from reidkit.engine import distributed
from reidkit.evaluation import evaluate, pairwise_distance
from reidkit.io import atomic_path, write_json
from reidkit.losses import ReIDLoss
from reidkit.runtime import flush_denormals

__all__ = [
    "Trainer",
    "WarmupLR",
    "build_model_from_config",
    "build_optimizer",
    "evaluate_model",
    "resolve_device",
    "seed_everything",
    "train",
]

Callback = Callable[[str, "Trainer"], None]
FINAL_WEIGHTS = "model_final.pth"


# ---------------------------------------------------------------------------------------------
# Building blocks


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA if available else CPU; a bare ``cuda`` -> ``cuda:<local_rank>``."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"engine.device={spec} but CUDA is not available; use engine.device=cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def model_build_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    """The architecture options of :func:`reidkit.models.build_model` (recorded in model files)."""
    kwargs = dict(cfg.kwargs)
    if cfg.last_stride is not None:
        kwargs["last_stride"] = cfg.last_stride
    if cfg.feat_dim is not None:
        kwargs["feature_dim"] = cfg.feat_dim
    return {"head": cfg.head, "pooling": cfg.pooling, "neck": cfg.neck, "feat_after_bn": cfg.feat_after_bn, **kwargs}


def build_model_from_config(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """:func:`reidkit.models.build_model` with the config's options."""
    from reidkit.models import build_model

    pretrained = None if cfg.pretrained is False else cfg.pretrained
    return build_model(cfg.name, num_classes, pretrained, **model_build_kwargs(cfg))


def build_optimizer(model: nn.Module, cfg: SolverConfig) -> torch.optim.Optimizer:
    """SGD / Adam / AdamW over the trainable parameters; biases get ``lr * bias_lr_factor`` and
    ``weight_decay_bias`` (BoT), ``backbone.*`` parameters ``lr * backbone_lr_factor`` (RRID's
    pretrained trunk at a tenth of the new layers' rate). Every group remembers its ``base_lr``
    for :class:`WarmupLR`."""
    wd_bias = cfg.weight_decay if cfg.weight_decay_bias is None else cfg.weight_decay_bias
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            in_backbone = cfg.backbone_lr_factor != 1.0 and name.startswith(("backbone.", "module.backbone."))
            key = (in_backbone, name.endswith("bias"))
            buckets.setdefault(key, []).append(p)
    groups: list[dict[str, Any]] = []
    for (in_backbone, bias), params in sorted(buckets.items()):
        lr = cfg.lr * (cfg.backbone_lr_factor if in_backbone else 1.0) * (cfg.bias_lr_factor if bias else 1.0)
        groups.append({"params": params, "lr": lr, "weight_decay": wd_bias if bias else cfg.weight_decay})
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    for g in groups:
        g["base_lr"] = g["lr"]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


class WarmupLR:
    """``lr = base_lr * warmup(t) * decay(t)``, ``t`` = epochs completed (fractional per iteration).

    Warm-up (BoT): linear from ``warmup_factor`` to 1 over ``warmup_epochs``. Decay: ``gamma`` at
    each milestone (``multistep``) or half a cosine from 1 to ``min_lr_factor`` between the end of
    warm-up and ``max_epochs`` (``cosine``). Its only state is the last ``t``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: SolverConfig) -> None:
        self.optimizer = optimizer
        self.cfg = cfg
        self.last_t = 0.0
        for g in optimizer.param_groups:
            g.setdefault("base_lr", g["lr"])

    def factor(self, t: float) -> float:
        c = self.cfg
        warm = 1.0
        if t < c.warmup_epochs:
            alpha = t / c.warmup_epochs
            warm = c.warmup_factor * (1 - alpha) + alpha
        if c.scheduler == "multistep":
            decay = c.gamma ** bisect.bisect_right(c.milestones, t)
        else:
            span = max(c.max_epochs - c.warmup_epochs, 1)
            progress = min(max((t - c.warmup_epochs) / span, 0.0), 1.0)
            decay = c.min_lr_factor + (1 - c.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))
        return warm * decay

    def step(self, t: float) -> None:
        """Set every group's lr for time ``t`` (in epochs)."""
        self.last_t = float(t)
        f = self.factor(self.last_t)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * f

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_t": self.last_t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step(float(state["last_t"]))


def evaluate_model(
    model: nn.Module,
    query: Sequence[Sample],
    gallery: Sequence[Sample],
    *,
    height: int,
    width: int,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    workers: int = 2,
    channels_last: bool = False,
    flip: bool = False,
    metric: str = "cosine",
) -> dict[str, float]:
    """Rank-1/5/10/20, mAP and mINP (percent) of ``model`` on query/gallery, via the Embedder.

    Leaves the model in eval mode (callers switch back). The Embedder is built as
    ``Embedder.from_model`` does, but keeps the model's memory format unless ``channels_last``.
    """
    backend = TorchBackend(model, device=device, channels_last=channels_last)
    keypoints = None
    if getattr(model, "in_channels", 3) != 3:  # HOReID: keypoint maps beside RGB
        from reidkit.pose.source import KeypointSource

        keypoints = KeypointSource()
    embedder = Embedder(backend, height, width, batch_size=batch_size, flip=flip, workers=workers, keypoints=keypoints)
    feats = embedder.embed([s.path for s in (*query, *gallery)])
    qf, gf = feats[: len(query)], feats[len(query) :]
    dist = pairwise_distance(qf, gf, metric)  # type: ignore[arg-type]
    res = evaluate(
        dist,
        np.array([s.pid for s in query]),
        np.array([s.pid for s in gallery]),
        np.array([s.camid for s in query]),
        np.array([s.camid for s in gallery]),
    )
    return res.summary()


class _Meter:
    """Running sums of detached scalars (synchronised with the device only when read)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for k, v in values.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: float(v) / max(self.count, 1) for k, v in self.sums.items()}


class _MetricsLog:
    """``metrics.jsonl`` (+ TensorBoard when importable); on resume, records past the checkpoint go."""

    def __init__(self, folder: Path, resume_epoch: int, tensorboard: bool) -> None:
        self.path = folder / "metrics.jsonl"
        if self.path.is_file():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("epoch", 0) <= resume_epoch
            ]
            with atomic_path(self.path) as tmp:
                tmp.write_text("".join(line + "\n" for line in kept))
        self.fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(folder / "tensorboard"))
            except ImportError:
                self.tb = None

    def write(self, record: dict[str, Any], step: int) -> None:
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        if self.tb is not None:
            kind = record.get("type", "train")
            for k, v in record.items():
                if isinstance(v, int | float) and k not in ("epoch", "iteration", "type"):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        self.fh.close()
        if self.tb is not None:
            self.tb.close()


def _epoch_line(epoch: int, max_epochs: int, summary: dict[str, float]) -> str:
    terms = " ".join(
        f"{k} {summary[k]:.4g}" for k in ("ce", "triplet", "center", "distill", "relation") if k in summary
    )
    acc = f" acc {100 * summary['acc']:.1f}%" if "acc" in summary else ""
    return (
        f"epoch {epoch}/{max_epochs} loss {summary['total']:.4g} ({terms}){acc} "
        f"lr {summary['lr']:.2e} {summary['time']:.1f}s ({summary['img_s']:.0f} img/s)"
    )


def _fmt_time(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# ---------------------------------------------------------------------------------------------
# Trainer


class Trainer:
    """Trains a re-id model from an :class:`ExperimentConfig`.

    ``dataset`` / ``model`` replace the config's dataset and model (tests, custom code);
    ``callbacks`` are called as ``cb(event, trainer)`` with event ``"iteration_end"`` (then
    ``trainer.batch_index`` is the batch just done) or ``"epoch_end"`` (after the checkpoint).
    ``trainer.epoch`` counts completed epochs and ``trainer.iteration`` optimiser steps.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        dataset: ReIDDataset | None = None,
        model: nn.Module | None = None,
        callbacks: Iterable[Callback] = (),
        console: Console | None = None,
    ) -> None:
        self.cfg = cfg = config
        eng = cfg.engine
        # before the first parallel op: the intra-op threads inherit the floating-point mode when created
        flush_denormals(eng.flush_denormal)
        self.dist = distributed.get_info()
        self.device = resolve_device(eng.device, self.dist.local_rank)
        self.console = console or Console(stderr=True)
        self.callbacks = list(callbacks)
        if eng.threads:
            torch.set_num_threads(eng.threads)
        if eng.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        seed_everything(eng.seed)

        if dataset is None:
            dataset = get_dataset(cfg.data.dataset, cfg.data.root, **cfg.data.options)
        if not dataset.train:
            raise ValueError(f"dataset {dataset.name} has no training images")
        if cfg.data.holdout_ids:  # evaluation during training then uses the held-out ids, never the test split
            dataset.train, held = holdout_split(dataset.train, cfg.data.holdout_ids)
            dataset.query, dataset.gallery = holdout_query_gallery(held)
        if {s.pid for s in dataset.train} != set(range(dataset.num_train_pids())):
            dataset.train = relabel(dataset.train)
        self.dataset = dataset
        self.num_classes = dataset.num_train_pids()

        self.model = model if model is not None else build_model_from_config(cfg.model, self.num_classes)
        self.model.to(self.device)
        if eng.channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._trainable = {n: p.requires_grad for n, p in self.model.named_parameters()}
        self._check_freeze_prefixes()

        feat_dim = getattr(self.model, "feat_dim", None)
        if cfg.loss.center.weight > 0 and getattr(self.model, "num_branches", 1) > 1:
            raise ValueError(
                "loss.center.weight > 0, but the center loss needs one (N, D) feature per image and this model "
                f"(head={cfg.model.head}) returns one per branch: set loss.center.weight=0"
            )
        self.criterion = ReIDLoss.from_config(cfg.loss, self.num_classes, feat_dim).to(self.device)
        if not getattr(self.model, "feat_after_bn", True):  # distil what the model embeds with
            self.criterion.distill_on = "features"
        self.optimizer = build_optimizer(self.model, cfg.solver)
        self.center_optimizer: torch.optim.Optimizer | None = None
        if self.criterion.center is not None:
            self.center_optimizer = torch.optim.SGD(self.criterion.center.parameters(), lr=cfg.loss.center.lr)
        self.scheduler = WarmupLR(self.optimizer, cfg.solver)

        d = cfg.data
        transform = None
        if getattr(self.model, "in_channels", 3) != 3:  # HOReID: keypoints of every train image, moved with it
            transform = self._keypoint_transform(dataset.train)
        self.loader, self.sampler = build_train_loader(
            dataset.train,
            height=d.height,
            width=d.width,
            ids_per_batch=d.ids_per_batch,
            instances_per_id=d.instances_per_id,
            workers=d.workers,
            persistent_workers=d.persistent_workers,
            pin_memory=self.device.type == "cuda" if d.pin_memory is None else d.pin_memory,
            seed=eng.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            transform=transform,
            transform_kwargs=d.transforms.model_dump(),
        )
        if len(self.sampler) == 0:
            raise ValueError("the P x K sampler yields no batch: lower data.ids_per_batch or data.instances_per_id")
        self.teacher: torch.Tensor | None = None
        self.teacher_relation: torch.Tensor | None = None  # loss.distill.ensemble: the relation term's target
        if cfg.loss.distill.enabled:
            self.teacher, self.teacher_relation = self._teacher_targets()

        self.use_amp = eng.amp and self.device.type == "cuda"
        self.amp_dtype = torch.float16 if eng.amp_dtype == "float16" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)

        self.output_dir = cfg.output_path
        self.checkpoint_dir = cfg.checkpoint_path
        self.epoch = 0
        self.iteration = 0
        self.batch_index = -1
        self.last_eval: dict[str, float] | None = None
        self._ddp: nn.Module | None = None
        self._ddp_frozen: bool | None = None
        self._fit_start, self._start_frac = time.perf_counter(), 0.0  # for the progress bar's ETA

    # -- freezing / DDP ------------------------------------------------------------------------

    def _frozen_name(self, name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in self.cfg.freeze.modules)

    def _check_freeze_prefixes(self) -> None:
        names = list(self._trainable)
        for prefix in self.cfg.freeze.modules:
            if not any(n == prefix or n.startswith(prefix + ".") for n in names):
                modules = [n for n, _ in self.model.named_modules() if n and n.count(".") <= 1]
                raise ValueError(
                    f"freeze.modules: {prefix!r} matches no parameter of the model; "
                    f"modules include: {', '.join(modules[:40])}"
                )

    def frozen(self, epoch: int) -> bool:
        """Whether ``freeze.modules`` are frozen during (1-based) ``epoch``."""
        return bool(self.cfg.freeze.modules) and epoch <= self.cfg.freeze.epochs

    def _keypoint_transform(self, samples: Sequence[Sample]) -> Any:
        """Keypoints of the train images (from the cache, computed once when missing) put in each
        sample's ``extra``, and the train transform that moves them with the image."""
        from reidkit.data.transforms import KeypointTrainTransform
        from reidkit.pose import keypoints_for
        from reidkit.pose.source import KeypointSource

        t0 = time.perf_counter()
        src = KeypointSource()  # the pose model and the default cache, as the Embedder uses them
        kp, _ = keypoints_for([s.path for s in samples], src.pose, src.cache, workers=2)
        if src.cache is not None:
            src.cache.close()
        for s, k in zip(samples, kp, strict=True):
            s.extra["keypoints"] = k
        self.console.print(f"keypoints of {len(samples):,} train images ready in {time.perf_counter() - t0:.0f} s")
        d = self.cfg.data
        return KeypointTrainTransform(d.height, d.width, **d.transforms.model_dump())

    def _teacher_targets(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's embedding of every train image and the relation term's target with an ensemble
        (:func:`reidkit.engine.distill.teacher_targets`; rank 0 computes and caches, the others read)."""
        from reidkit.engine.distill import teacher_targets

        kwargs = {"cache_dir": self.cfg.output_path, "console": self.console}
        if self.dist.is_main:
            feats, relation = teacher_targets(self.cfg.loss.distill, self.dataset.train, **kwargs)
        distributed.barrier()
        if not self.dist.is_main:
            feats, relation = teacher_targets(self.cfg.loss.distill, self.dataset.train, **kwargs)
        return feats.to(self.device), None if relation is None else relation.to(self.device)

    def _prepare_model(self, epoch: int) -> nn.Module:
        """Train mode, freezing applied, DDP-wrapped when distributed (re-wrapped if freezing changed)."""
        frozen = self.frozen(epoch)
        for name, p in self.model.named_parameters():
            p.requires_grad_(self._trainable[name] and not (frozen and self._frozen_name(name)))
        self.model.train()
        if frozen:
            for name, m in self.model.named_modules():
                if self._frozen_name(name):
                    m.eval()  # frozen BatchNorm statistics too
        if not self.dist.distributed:
            return self.model
        if self._ddp is None or self._ddp_frozen != frozen:
            self._ddp = None
            gc.collect()  # drop the previous wrapper's autograd hooks
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(self.model, device_ids=ids)
            self._ddp_frozen = frozen
        return self._ddp

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (collective under DDP: every rank must call it)."""
        rng = distributed.all_gather_object(ckpt.capture_rng_state())
        return {
            "format": 1,
            "epoch": self.epoch,
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "criterion": self.criterion.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "center_optimizer": self.center_optimizer.state_dict() if self.center_optimizer else None,
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng,
            "world_size": self.dist.world_size,
            "last_eval": self.last_eval,
            "config": self.cfg.model_dump(mode="json"),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.criterion.load_state_dict(state["criterion"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.center_optimizer is not None and state.get("center_optimizer"):
            self.center_optimizer.load_state_dict(state["center_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        self.epoch, self.iteration = int(state["epoch"]), int(state["iteration"])
        self.last_eval = state.get("last_eval")
        rng = state["rng"]
        ckpt.restore_rng_state(rng[self.dist.rank] if len(rng) == self.dist.world_size else rng[0])

    def save_checkpoint(self) -> Path | None:
        """Checkpoint the current epoch (rank 0 writes; all ranks must call). Returns the file."""
        state = self.state_dict()
        if not self.dist.is_main:
            return None
        path = ckpt.save_checkpoint(self.checkpoint_dir, self.epoch, state)
        ckpt.prune_checkpoints(self.checkpoint_dir, self.cfg.engine.keep_checkpoints)
        return path

    def resume(self, path: str | os.PathLike[str] | None = None) -> bool:
        """Load ``path`` (default: the latest checkpoint); False when there is none."""
        found = Path(path) if path is not None else ckpt.latest_checkpoint(self.checkpoint_dir)
        if found is None:
            return False
        state = ckpt.load_checkpoint(found)
        saved = state.get("config", {})
        now = self.cfg.model_dump(mode="json")
        changed = [k for k in ("model", "data", "loss") if saved.get(k) != now.get(k)]
        if changed and self.dist.is_main:
            self.console.print(f"[yellow]warning:[/] resuming with a different {', '.join(changed)} config")
        self.load_state_dict(state)
        if self.dist.is_main:
            self.console.print(f"resumed from {found} (epoch {self.epoch}, iteration {self.iteration})")
        return True

    # -- training ------------------------------------------------------------------------------

    def _emit(self, event: str) -> None:
        for cb in self.callbacks:
            cb(event, self)

    def _step(
        self,
        model: nn.Module,
        images: torch.Tensor,
        pids: torch.Tensor,
        amp: Any,
        center_params: list[nn.Parameter],
        teacher: torch.Tensor | None = None,
        teacher_relation: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Forward, losses, backward and optimiser steps for one batch; returns (losses, outputs).
        ``teacher``: the teacher's embeddings of the batch (``loss.distill``); ``teacher_relation``: the relation
        term's own target (``loss.distill.ensemble``)."""
        cfg = self.cfg
        if cfg.engine.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with amp:
            out = model(images)
        if not isinstance(out, dict):
            out = {"features": out}
        out = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
        losses = self.criterion(out, pids, teacher, teacher_relation)

        self.optimizer.zero_grad(set_to_none=True)
        if self.center_optimizer is not None:
            self.center_optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        if cfg.solver.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for p in self.model.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, cfg.solver.grad_clip)
        self.scaler.step(self.optimizer)
        if self.center_optimizer is not None:
            distributed.all_reduce_grads(center_params)  # the centers live outside DDP
            self.scaler.unscale_(self.center_optimizer)
            for p in center_params:  # BoT: the centers learn at center.lr whatever the loss weight
                if p.grad is not None:
                    p.grad.mul_(1.0 / cfg.loss.center.weight)
            self.scaler.step(self.center_optimizer)
        self.scaler.update()
        return losses, out

    def train_epoch(self, epoch: int, log: _MetricsLog | None, progress: Progress | None) -> dict[str, float]:
        """One pass of the P x K loader (``epoch`` is 1-based). Returns the epoch's mean losses."""
        cfg, eng = self.cfg, self.cfg.engine
        self.sampler.set_epoch(epoch)
        self.criterion.epoch = epoch
        model = self._prepare_model(epoch)
        n = len(self.loader)
        if cfg.solver.step_per == "epoch":
            self.scheduler.step(epoch - 1)
        task = None
        if progress is not None:
            task = progress.add_task(f"epoch {epoch}/{cfg.solver.max_epochs}", total=n, info="")
        epoch_meter, window = _Meter(), _Meter()
        t_epoch = t_window = time.perf_counter()
        images_window = images_epoch = 0
        center_params = list(self.criterion.center.parameters()) if self.criterion.center is not None else []
        amp = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.use_amp else nullcontext()
        for i, (images, pids, _camids, idx) in enumerate(self.loader):
            if cfg.solver.step_per == "iter":
                self.scheduler.step(epoch - 1 + i / n)
            images = images.to(self.device, non_blocking=True)
            pids = pids.to(self.device, non_blocking=True)
            rows = idx.to(self.device)
            teacher = self.teacher[rows] if self.teacher is not None else None
            relation = self.teacher_relation[rows] if self.teacher_relation is not None else None
            losses, out = self._step(model, images, pids, amp, center_params, teacher, relation)
            self.iteration += 1
            self.batch_index = i

            stats = dict(losses)
            if "logits" in out:
                pred = out["logits"].argmax(-1)  # (N,) or (N, branches)
                stats["acc"] = (pred == (pids if pred.dim() == 1 else pids[:, None])).float().mean()
            epoch_meter.add(stats)
            window.add(stats)
            images_window += len(images) * self.dist.world_size
            images_epoch += len(images) * self.dist.world_size

            last = i + 1 == n
            if (i + 1) % eng.log_every == 0 or last:
                now = time.perf_counter()
                means = window.means()
                speed = images_window / max(now - t_window, 1e-9)
                if log is not None:
                    record = {
                        "type": "train",
                        "epoch": epoch,
                        "iteration": self.iteration,
                        "lr": self.optimizer.param_groups[0]["lr"],
                        **means,
                        "img_s": speed,
                    }
                    log.write(record, self.iteration)
                if progress is not None and task is not None:
                    done_frac = (epoch - 1 + (i + 1) / n) / cfg.solver.max_epochs
                    elapsed = now - self._fit_start
                    run_frac = done_frac - self._start_frac
                    eta = elapsed * (1 - done_frac) / run_frac if run_frac > 0 else 0.0
                    acc = f" acc {100 * means['acc']:.1f}%" if "acc" in means else ""
                    info = f"loss {means['total']:.3f}{acc} {speed:.0f} img/s ETA {_fmt_time(eta)}"
                    progress.update(task, completed=i + 1, info=info)
                window, images_window, t_window = _Meter(), 0, now
            elif progress is not None and task is not None:
                progress.update(task, completed=i + 1)
            self._emit("iteration_end")
        distributed.broadcast_buffers(self.model)  # the same BatchNorm statistics on every rank
        if progress is not None and task is not None:
            progress.remove_task(task)
            progress.refresh()
        summary = epoch_meter.means()
        summary["time"] = time.perf_counter() - t_epoch
        summary["img_s"] = images_epoch / max(summary["time"], 1e-9)
        summary["lr"] = self.optimizer.param_groups[0]["lr"]
        return summary

    def evaluate(self) -> dict[str, float]:
        """Query/gallery metrics of the current model (percent); the model goes back to train mode."""
        d, eng = self.cfg.data, self.cfg.engine
        try:
            return evaluate_model(
                self.model,
                self.dataset.query,
                self.dataset.gallery,
                height=d.height,
                width=d.width,
                device=self.device,
                batch_size=d.test_batch_size,
                workers=max(1, d.workers),
                channels_last=eng.channels_last,
                flip=eng.eval_flip,
                metric=eng.eval_metric,
            )
        finally:
            self.model.train()

    def _due_eval(self, epoch: int) -> bool:
        every = self.cfg.engine.eval_every
        has_split = bool(self.dataset.query) and bool(self.dataset.gallery)
        return every > 0 and has_split and (epoch % every == 0 or epoch == self.cfg.solver.max_epochs)

    def fit(self) -> Path:
        """Train from ``self.epoch`` to ``solver.max_epochs``; returns the final weights file."""
        cfg, main = self.cfg, self.dist.is_main
        max_epochs = cfg.solver.max_epochs
        log: _MetricsLog | None = None
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.output_dir / "config.yaml") as tmp:
                tmp.write_text(config_to_yaml(cfg))
            log = _MetricsLog(self.output_dir, self.epoch, cfg.engine.tensorboard)
            self.console.print(
                f"training {cfg.model.name} on {self.dataset.name}: {len(self.dataset.train)} images, "
                f"{self.num_classes} ids, {len(self.sampler)} iterations/epoch x {self.dist.world_size} rank(s), "
                f"device {self.device}, output {self.output_dir}",
                highlight=False,
            )
        show = main and cfg.engine.progress
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            disable=not show,
            transient=True,
        )
        self._fit_start = time.perf_counter()
        self._start_frac = self.epoch / max_epochs
        try:
            with progress:
                for epoch in range(self.epoch + 1, max_epochs + 1):
                    summary = self.train_epoch(epoch, log, progress if show else None)
                    self.epoch = epoch
                    line = _epoch_line(epoch, max_epochs, summary)
                    if log is not None:
                        log.write({"type": "epoch", "epoch": epoch, "iteration": self.iteration, **summary}, epoch)
                    if main and self._due_eval(epoch):
                        self.last_eval = self.evaluate()
                        if log is not None:
                            log.write({"type": "eval", "epoch": epoch, **self.last_eval}, epoch)
                        e = self.last_eval
                        line += f" | rank-1 {e['rank1']:.1f} mAP {e['mAP']:.1f} mINP {e['mINP']:.1f}"
                    if main:
                        progress.console.print(line, highlight=False)
                    self.save_checkpoint()
                    self._emit("epoch_end")
        finally:
            if log is not None:
                log.close()
        final = self.output_dir / FINAL_WEIGHTS
        if main:
            from reidkit.models.zoo import ModelInfo, save_model_file

            info = ModelInfo(
                cfg.model.name,
                cfg.data.height,
                cfg.data.width,
                build=model_build_kwargs(cfg.model),
                meta={
                    "experiment": cfg.name,
                    "dataset": cfg.data.dataset,
                    "epochs": self.epoch,
                    **(self.last_eval or {}),
                },
            )
            save_model_file(final, self.model, info)
            if self.last_eval is not None:
                write_json(self.output_dir / "results.json", {"epoch": self.epoch, **self.last_eval})
            self.console.print(f"saved {final}", highlight=False)
        distributed.barrier()
        return final


def train(
    config_path: str | os.PathLike[str] | None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    *,
    dataset: ReIDDataset | None = None,
    callbacks: Iterable[Callback] = (),
) -> Path:
    """Load the config (+ dotted overrides), train (continuing from the latest checkpoint when
    ``resume``) and return the final weights file. Under torchrun this runs DDP."""
    from reidkit.runtime import tune_malloc

    tune_malloc()
    cfg = load_config(config_path, overrides)
    _, created = distributed.init_distributed(cfg.engine.dist_backend, cfg.engine.device)
    try:
        trainer = Trainer(cfg, dataset=dataset, callbacks=callbacks)
        if resume and not trainer.resume() and trainer.dist.is_main:
            trainer.console.print(f"no checkpoint in {trainer.checkpoint_dir}; starting from scratch")
        return trainer.fit()
    finally:
        if created:
            distributed.cleanup()
