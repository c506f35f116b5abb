"""Backbones: ResNet (with frozen BatchNorm), VGG, and the torchvision key map for conversion."""

from seglab.models.backbones.resnet import (
    NORMS,
    FrozenBatchNorm2d,
    ResNetBackbone,
    set_frozen_bn_eps,
)
from seglab.models.backbones.torchvision_keys import (
    convert_torchvision_backbone,
    rename_torchvision_backbone_key,
)
from seglab.models.backbones.vgg import VGG_STAGES, VGGBackbone

__all__ = [
    "NORMS",
    "FrozenBatchNorm2d",
    "ResNetBackbone",
    "VGG_STAGES",
    "VGGBackbone",
    "convert_torchvision_backbone",
    "rename_torchvision_backbone_key",
    "set_frozen_bn_eps",
]
