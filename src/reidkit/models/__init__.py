"""Re-id models: backbone registry, OSNet (torchreid-compatible), strong baseline, weight loading.

Quick start::

    from reidkit.models import build_model
    model = build_model("resnet50", num_classes=751, pretrained=True)   # ReIDBaseline
    osnet = build_model("osnet_x0_25", 751, "/path/to/osnet_x0_25_market1501.pth", head="torchreid")
"""

from reidkit.models.backbones import (
    BACKBONES,
    BackboneSpec,
    OSNet,
    OSNetBackbone,
    build_backbone,
    list_backbones,
    register_backbone,
)
from reidkit.models.baseline import ReIDBaseline
from reidkit.models.build import build_model
from reidkit.models.heads import BNNeck, GeM
from reidkit.models.weights import (
    LoadReport,
    WeightsMismatchError,
    load_state_dict_file,
    load_torchreid_checkpoint,
    load_weights,
)

__all__ = [
    "BACKBONES",
    "BNNeck",
    "BackboneSpec",
    "GeM",
    "LoadReport",
    "OSNet",
    "OSNetBackbone",
    "ReIDBaseline",
    "WeightsMismatchError",
    "build_backbone",
    "build_model",
    "list_backbones",
    "load_state_dict_file",
    "load_torchreid_checkpoint",
    "load_weights",
    "register_backbone",
]
