"""Typed experiment configuration: YAML file + dotted command-line overrides, validated by pydantic.

>>> cfg = load_config("configs/market1501/bot_resnet50.yaml", ["solver.max_epochs=12", "data.height=128"])

Override values are parsed with ``yaml.safe_load`` (``12`` is an int, ``[20, 30]`` a list, ``true``
a bool, ``cuda:0`` a string). Unknown keys and bad values raise :class:`ConfigError` naming the
dotted key (and, for unknown keys, the valid ones).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "ConfigError",
    "DataConfig",
    "DistillLossConfig",
    "EngineConfig",
    "ExperimentConfig",
    "FreezeConfig",
    "LossConfig",
    "ModelConfig",
    "SolverConfig",
    "TransformConfig",
    "apply_overrides",
    "config_to_yaml",
    "load_config",
]


class ConfigError(ValueError):
    """An experiment configuration is unreadable or invalid (the message names the key)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """What :func:`reidkit.models.build_model` builds."""

    name: str = "resnet50"
    pretrained: bool | str | None = True  # True: ImageNet weights; a path; False/None: random init
    head: Literal["baseline", "torchreid", "rrid", "horeid"] = "baseline"
    last_stride: Literal[1, 2] | None = None  # ResNet (default 1) and MobileNetV2 (default 2) backbones
    pooling: Literal["avg", "max", "gem"] = "avg"
    neck: Literal["bnneck", "none"] = "bnneck"
    feat_after_bn: bool = True
    # head=torchreid: OSNet's fc size (default 512); head=baseline: a linear reduction before the BNNeck
    feat_dim: int | None = Field(default=None, gt=0)
    kwargs: dict[str, Any] = Field(default_factory=dict)  # any other backbone/model arguments

    @model_validator(mode="after")
    def _check_feat_dim(self) -> ModelConfig:
        if self.feat_dim is not None and self.head not in ("torchreid", "baseline"):
            raise ValueError(f"feat_dim applies to head=baseline or torchreid, not {self.head}")
        if self.head in ("rrid", "horeid"):
            defaults = {"pooling": "avg", "neck": "bnneck", "feat_after_bn": True}
            changed = [f"model.{k}" for k, v in defaults.items() if getattr(self, k) != v]
            why = "RRID max-pools its parts and has no BNNeck" if self.head == "rrid" else "HOReID pools by keypoints"
            if changed:
                raise ValueError(f"{', '.join(changed)} applies only to head=baseline ({why})")
        return self


class TransformConfig(_Section):
    """Training augmentation (BoT defaults); the test transform is resize + normalise only."""

    hflip: float = Field(default=0.5, ge=0, le=1)
    pad: int = Field(default=10, ge=0)
    random_erasing: float = Field(default=0.5, ge=0, le=1)
    erasing_scale: tuple[float, float] = (0.02, 0.4)
    erasing_ratio: tuple[float, float] = (0.3, 3.33)


class DataConfig(_Section):
    dataset: str = "market1501"
    root: str | None = None  # default $REIDKIT_DATA
    options: dict[str, Any] = Field(default_factory=dict)  # dataset options, e.g. {variant: detected}
    height: int = Field(default=256, gt=0)
    width: int = Field(default=128, gt=0)
    ids_per_batch: int = Field(default=16, ge=1)  # P
    instances_per_id: int = Field(default=4, ge=1)  # K; batch size = P * K
    workers: int = Field(default=2, ge=0)
    persistent_workers: bool = True
    pin_memory: bool | None = None  # None: on CUDA only
    test_batch_size: int = Field(default=128, ge=1)
    # identities (the largest pids) kept out of training, for decisions on unseen people
    # (`reidkit eval --holdout N`, see reidkit.datasets.base.holdout_split)
    holdout_ids: int = Field(default=0, ge=0)
    transforms: TransformConfig = Field(default_factory=TransformConfig)

    @property
    def batch_size(self) -> int:
        return self.ids_per_batch * self.instances_per_id


class SolverConfig(_Section):
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(default=3.5e-4, gt=0)
    weight_decay: float = Field(default=5e-4, ge=0)
    weight_decay_bias: float | None = Field(default=None, ge=0)  # None: same as weight_decay
    bias_lr_factor: float = Field(default=1.0, gt=0)
    backbone_lr_factor: float = Field(default=1.0, gt=0)  # lr of backbone.* = lr * this (RRID: 0.1)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = False
    max_epochs: int = Field(default=120, ge=1)
    warmup_epochs: int = Field(default=10, ge=0)
    warmup_factor: float = Field(default=0.01, gt=0, le=1)
    scheduler: Literal["multistep", "cosine"] = "multistep"
    milestones: list[int] = Field(default_factory=lambda: [40, 70])
    gamma: float = Field(default=0.1, gt=0)
    min_lr_factor: float = Field(default=0.0, ge=0, le=1)  # cosine: final lr = lr * min_lr_factor
    step_per: Literal["epoch", "iter"] = "epoch"  # lr updates per epoch (BoT) or per iteration
    grad_clip: float | None = Field(default=None, gt=0)

    @field_validator("milestones")
    @classmethod
    def _check_milestones(cls, value: list[int]) -> list[int]:
        if value != sorted(value) or any(m <= 0 for m in value):
            raise ValueError("milestones must be positive epochs in increasing order")
        return value


class CELossConfig(_Section):
    weight: float = Field(default=1.0, ge=0)
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)


class TripletLossConfig(_Section):
    weight: float = Field(default=1.0, ge=0)
    margin: float = Field(default=0.3, ge=0)
    soft: bool = False  # soft margin: softplus(d_ap - d_an)
    metric: Literal["euclidean", "cosine"] = "euclidean"
    normalize: bool = False  # L2-normalise features before the distance


class CenterLossConfig(_Section):
    weight: float = Field(default=0.0, ge=0)  # BoT: 0.0005
    lr: float = Field(default=0.5, gt=0)  # the centers' own SGD


class VerificationLossConfig(_Section):
    """HOReID's graph matching + verification loss on hard pairs, switched on at ``start_epoch``."""

    weight: float = Field(default=1.0, ge=0)
    start_epoch: int = Field(default=1, ge=1)


class DistillLossConfig(_Section):
    """Knowledge distillation from a teacher model: its embedding of every training image (flip-averaged,
    unit length) is computed once, cached beside the run, and pulls the student's embedding toward it.

    ``weight``: ``1 - cos(student, teacher)`` per image (same width needed); ``relation_weight``: squared
    difference of the batch's cosine-similarity matrices (any widths). ``teacher`` is a weights file
    (reidkit or torchreid), ``teacher_model`` its architecture when the file does not say (torchreid files).
    ``ensemble``: more teachers (reidkit model files) for the relation term, whose target is then the mean of
    all the teachers' (``teacher`` and these) cosine-similarity matrices; each embedded and cached the same way.
    """

    teacher: str | None = None
    teacher_model: str | None = None
    weight: float = Field(default=0.0, ge=0)
    relation_weight: float = Field(default=0.0, ge=0)
    ensemble: list[str] = Field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.weight > 0 or self.relation_weight > 0

    @model_validator(mode="after")
    def _check_teacher(self) -> DistillLossConfig:
        if self.enabled and not self.teacher:
            raise ValueError(
                "loss.distill needs a teacher weights file (loss.distill.teacher=PATH) when a weight is > 0"
            )
        if self.ensemble and self.relation_weight <= 0:
            raise ValueError("loss.distill.ensemble serves the relation term: set loss.distill.relation_weight > 0")
        return self


class LossConfig(_Section):
    ce: CELossConfig = Field(default_factory=CELossConfig)
    triplet: TripletLossConfig = Field(default_factory=TripletLossConfig)
    center: CenterLossConfig = Field(default_factory=CenterLossConfig)
    verification: VerificationLossConfig = Field(default_factory=VerificationLossConfig)  # HOReID only
    distill: DistillLossConfig = Field(default_factory=DistillLossConfig)

    @model_validator(mode="after")
    def _check_weights(self) -> LossConfig:
        if self.ce.weight == self.triplet.weight == self.center.weight == 0:
            raise ValueError("at least one of ce.weight, triplet.weight, center.weight must be > 0")
        return self


class FreezeConfig(_Section):
    """Parameters whose names start with one of ``modules`` stay frozen (and their BatchNorms in
    eval mode) for the first ``epochs`` epochs, e.g. ``modules: [backbone.conv1, backbone.layer1]``."""

    modules: list[str] = Field(default_factory=list)
    epochs: int = Field(default=0, ge=0)


class EngineConfig(_Section):
    seed: int = 0
    output_dir: str | None = None  # default runs/<name>
    checkpoint_dir: str | None = None  # default <output_dir>/checkpoints
    keep_checkpoints: int = Field(default=2, ge=0)  # newest epoch checkpoints kept; 0 keeps all
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = Field(default=None, ge=1)  # torch intra-op threads
    channels_last: bool = False
    # CPU: treat denormal floats as zero (x86 FTZ/DAZ). Weight decay leaves weights below 1e-38 late in
    # training, and every multiply with one takes a slow path: 1.6x slower epochs (BENCHMARKS "train_denormal").
    # The `reidkit` command sets it for the whole process already (REIDKIT_FLUSH_DENORMAL=0 there to turn it off).
    flush_denormal: bool = True
    amp: bool = True  # mixed precision, CUDA only
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on GPU)
    eval_every: int = Field(default=10, ge=0)  # epochs; 0: never; the last epoch is always evaluated
    eval_flip: bool = False
    eval_metric: Literal["cosine", "euclidean"] = "cosine"
    log_every: int = Field(default=20, ge=1)  # iterations between metrics.jsonl records
    progress: bool = True  # rich progress bar
    tensorboard: bool = True  # when torch.utils.tensorboard is importable
    dist_backend: str | None = None  # default: nccl on CUDA, gloo on CPU


class ExperimentConfig(_Section):
    name: str = "experiment"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    solver: SolverConfig = Field(default_factory=SolverConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    freeze: FreezeConfig = Field(default_factory=FreezeConfig)

    @property
    def output_path(self) -> Path:
        """``engine.output_dir``, default ``runs/<name>``."""
        return Path(self.engine.output_dir) if self.engine.output_dir else Path("runs") / self.name

    @property
    def checkpoint_path(self) -> Path:
        """``engine.checkpoint_dir``, default ``<output_dir>/checkpoints``."""
        return Path(self.engine.checkpoint_dir) if self.engine.checkpoint_dir else self.output_path / "checkpoints"


# ---------------------------------------------------------------------------------------------
# Loading


def _section_at(loc: Iterable[str | int]) -> type[BaseModel] | None:
    """The config model class found by following ``loc`` from the root (None if not a section)."""
    cls: type[BaseModel] = ExperimentConfig
    for part in loc:
        field = cls.model_fields.get(str(part))
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        cls = ann
    return cls


def _unknown_key_message(loc: tuple[str | int, ...]) -> str:
    key = ".".join(map(str, loc))
    section = _section_at(loc[:-1])
    if section is None:
        return f"unknown key {key!r}"
    valid = list(section.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
    hint = f" (did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?)" if close else ""
    where = ".".join(map(str, loc[:-1])) or "the top level"
    return f"unknown key {key!r}{hint}; valid keys in {where}: {', '.join(valid)}"


def _field_key(loc: tuple[str | int, ...]) -> str:
    """The dotted config key of an error location, without pydantic's union-member tags."""
    cls: type[BaseModel] | None = ExperimentConfig
    parts: list[str] = []
    for part in loc:
        if cls is not None:
            parts.append(str(part))
            field = cls.model_fields.get(str(part))
            ann = field.annotation if field else None
            cls = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        elif isinstance(part, int):  # an index into a list or tuple value
            parts.append(str(part))
    return ".".join(parts)


def _format_error(exc: ValidationError, source: str) -> str:
    problems: dict[str, tuple[list[str], str]] = {}  # key -> (messages, shown input)
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            problems.setdefault(_unknown_key_message(loc), ([], ""))
            continue
        key = _field_key(loc) or "config"
        got = "" if isinstance(err["input"], dict) else f" (got {err['input']!r})"
        msgs, _ = problems.setdefault(key, ([], got))
        msg = err["msg"].removeprefix("Value error, ")
        if msg not in msgs:
            msgs.append(msg)
    lines = [f"{key}: {', or '.join(msgs)}{got}" if msgs else key for key, (msgs, got) in problems.items()]
    return f"invalid config {source}: " + "; ".join(lines)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"override key {key!r} has an empty part")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            prefix = ".".join(parts[: i + 1])
            raise ConfigError(f"cannot set {key!r}: {prefix!r} is a value ({child!r}), not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(tree: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``tree`` with ``key.sub=value`` overrides applied (values parsed as YAML)."""
    out: dict[str, Any] = _deep_copy(tree)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key.subkey=value (e.g. solver.max_epochs=12)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key}: cannot parse value {raw!r} ({exc})") from None
        _set_dotted(out, key, value)
    return out


def _deep_copy(tree: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def parse_config(tree: Mapping[str, Any], source: str = "") -> ExperimentConfig:
    """Validate a nested dict; :class:`ConfigError` with every problem named by dotted key."""
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source or "(dict)")) from None


def load_config(path: str | os.PathLike[str] | None = None, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read a YAML config (or start from the defaults when ``path`` is None) and apply overrides."""
    tree: dict[str, Any] = {}
    source = "(defaults)"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({exc})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(loaded).__name__}")
        tree = loaded
    overrides = list(overrides)
    if overrides:
        source += " with overrides " + " ".join(overrides)
    return parse_config(apply_overrides(tree, overrides), source)


def config_to_yaml(cfg: ExperimentConfig) -> str:
    """The full resolved config as YAML (every key, defaults included)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
