"""Backbones (feature-map extractors) and their registry."""

from reidkit.models.backbones.efficientnet_lite import EfficientNetLite, efficientnet_lite0
from reidkit.models.backbones.mobilenet import MobileNetV2Backbone, mobilenet_v2
from reidkit.models.backbones.mobilenetv2_torchreid import TorchreidMobileNetV2, torchreid_mobilenetv2
from reidkit.models.backbones.osnet import OSNet, OSNetBackbone, osnet, osnet_backbone
from reidkit.models.backbones.registry import (
    BACKBONES,
    BackboneSpec,
    build_backbone,
    list_backbones,
    load_backbone_weights,
    register_backbone,
)
from reidkit.models.backbones.resnet import ResNetBackbone, resnet18, resnet50

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "EfficientNetLite",
    "MobileNetV2Backbone",
    "OSNet",
    "OSNetBackbone",
    "ResNetBackbone",
    "TorchreidMobileNetV2",
    "build_backbone",
    "efficientnet_lite0",
    "list_backbones",
    "load_backbone_weights",
    "mobilenet_v2",
    "osnet",
    "osnet_backbone",
    "register_backbone",
    "resnet18",
    "resnet50",
    "torchreid_mobilenetv2",
]
