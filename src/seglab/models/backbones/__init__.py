"""Backbones: ResNet (with frozen BatchNorm) and the torchvision key map for conversion."""

from seglab.models.backbones.resnet import (
    NORMS,
    FrozenBatchNorm2d,
    ResNetBackbone,
    norm_layer,
    set_frozen_bn_eps,
)
from seglab.models.backbones.torchvision_keys import (
    convert_torchvision_backbone,
    rename_torchvision_backbone_key,
)

__all__ = [
    "NORMS",
    "FrozenBatchNorm2d",
    "ResNetBackbone",
    "convert_torchvision_backbone",
    "norm_layer",
    "rename_torchvision_backbone_key",
    "set_frozen_bn_eps",
]
