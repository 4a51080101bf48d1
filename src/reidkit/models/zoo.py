"""Ready-to-embed models from local checkpoints: torchreid model-zoo files and reidkit model files.

``load_model(name, weights)`` returns an eval-mode model whose forward gives ``(N, D)`` features,
plus its :class:`ModelInfo` (input size, feature width, where it came from):

* a **reidkit model file** (written by :func:`save_model_file`, e.g. by ``reidkit train``) carries
  its own architecture, input size and provenance, so ``name`` may be omitted;
* ``"default"`` (or no weights at all): the model shipped inside the package
  (``reidkit/models/pretrained/``; see its MODEL_CARD.md), so evaluation and search work without
  any download;
* **torchreid** checkpoints: the OSNet family (``osnet_x1_0`` … ``osnet_x0_25``, loaded strictly
  into the torchreid-compatible OSNet, 512-d), MobileNetV2 ``mobilenetv2_x1_0`` (1280-d) and
  ``mobilenetv2_x1_4`` (1792-d), loaded strictly into the torchreid-compatible
  :class:`~reidkit.models.backbones.TorchreidMobileNetV2` (pooled ``conv9`` output, no ``fc``, as
  torchreid's constructors), and ``resnet50`` (torchvision trunk, last stride 2, global average
  pooling, 2048-d, as torchreid's ``resnet50``). A classifier of another class count is dropped
  with a logged message.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reidkit.io import atomic_path
from reidkit.models.build import TORCHREID_MODELS, build_model
from reidkit.models.weights import load_state_dict_file, load_torchreid_checkpoint, load_weights

logger = logging.getLogger(__name__)

MODEL_FORMAT = "reidkit-model/1"
PathLike = str | os.PathLike[str]
DEFAULT_NAME = "default"
DEFAULT_FILE = "osnet_x0_25_market1501_kd_cpu.pth"


def default_model_path() -> Path:
    """The model file shipped inside the package (raises if this build has none)."""
    path = Path(__file__).parent / "pretrained" / DEFAULT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"this reidkit build ships no default model ({path} is missing); pass --weights")
    return path


@dataclass
class ModelInfo:
    """What a loaded model expects and where it came from."""

    name: str
    height: int = 256
    width: int = 128
    feat_dim: int = 0
    source: str = ""
    build: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def save_model_file(path: PathLike, model: nn.Module, info: ModelInfo, half: bool = False) -> None:
    """Write a self-describing reidkit model file (architecture + weights + metadata), atomically.

    ``half=True`` stores floating-point tensors as float16 (loaded back as float32).
    """
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
        for k, v in model.state_dict().items()
        if not k.startswith("classifier.")
    }
    payload = {"format": MODEL_FORMAT, "info": asdict(info), "state_dict": state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a checkpoint dict, got {type(obj).__name__}")
    return obj


def _load_reidkit(path: Path, obj: dict[str, Any]) -> tuple[nn.Module, ModelInfo]:
    if obj.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: unknown reidkit model format {obj.get('format')!r} (expected {MODEL_FORMAT!r})")
    info = ModelInfo(**obj["info"])
    model = build_model(info.name, num_classes=0, pretrained=None, **info.build)
    state = {k: v.float() if v.is_floating_point() else v for k, v in obj["state_dict"].items()}
    load_weights(model, state, source=str(path))
    info.source = str(path)
    return model, info


def _load_torchreid_resnet50(path: Path) -> tuple[nn.Module, ModelInfo]:
    build = {"last_stride": 2, "neck": "none", "pooling": "avg"}
    model = build_model("resnet50", num_classes=0, pretrained=None, **build)
    sd = load_state_dict_file(path)
    dropped = sorted(k for k in sd if k.startswith(("classifier.", "fc.")))
    if dropped:
        logger.info("%s: dropping %s (not part of the embedding)", path, ", ".join(dropped))
    trunk = {f"backbone.{k}": v for k, v in sd.items() if k not in dropped}
    load_weights(model, trunk, source=str(path))
    return model, ModelInfo("resnet50", feat_dim=2048, source=str(path), build=build)


def load_model(name: str | None = DEFAULT_NAME, weights: PathLike | None = None) -> tuple[nn.Module, ModelInfo]:
    """An eval-mode feature extractor and its :class:`ModelInfo` from a local checkpoint.

    ``load_model()`` / ``load_model("default")`` give the packaged default model. Weights load with
    ``weights_only=True``; a missing file or a key mismatch is an error.
    """
    if weights is None:
        if name not in (None, DEFAULT_NAME):
            raise ValueError(f"model {name!r} needs --weights (only the default model is shipped)")
        weights, name = default_model_path(), None
    elif name == DEFAULT_NAME:
        name = None
    path = Path(weights).expanduser()
    obj = _read(path)
    if "format" in obj:
        model, info = _load_reidkit(path, obj)
        if name and name != info.name:
            raise ValueError(f"{path} holds a {info.name!r} model, not {name!r}")
    elif name in TORCHREID_MODELS:
        model = build_model(name, num_classes=0, head="torchreid")
        load_torchreid_checkpoint(model, path)
        info = ModelInfo(name, feat_dim=int(model.feat_dim), source=str(path))
    elif name == "resnet50":
        model, info = _load_torchreid_resnet50(path)
    elif name is None:
        raise ValueError(f"{path} is not a reidkit model file: pass the architecture name (e.g. osnet_x0_25)")
    else:
        supported = sorted([*TORCHREID_MODELS, "resnet50"])
        raise ValueError(
            f"cannot load {path} as {name!r}: torchreid checkpoints are supported for {supported}; "
            "other architectures load from reidkit model files (reidkit train writes them)"
        )
    model.eval()
    if getattr(model, "in_channels", 3) != 3:
        model.source = str(path)  # named by its errors (a HOReID model embedded without its keypoint source)
    if not info.feat_dim:
        info.feat_dim = int(getattr(model, "feat_dim", 0))
    return model, info
