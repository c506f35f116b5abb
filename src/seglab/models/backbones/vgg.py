"""VGG backbones (Simonyan & Zisserman 2015): the convolutional layers of VGG11/13/16.

Stacks of 3x3 convs + ReLU in five stages, a 2x2 max pool after each of the first four:
the output is conv5 (conv5_3 for VGG16), 512 channels at stride 16, the feature map of
Fast R-CNN and Faster R-CNN with VGG16 (Fast R-CNN §2.2 replaces the fifth max pool by RoI
pooling; R-CNN keeps it and pools each warped region's conv5 with it).

The layers sit in `features` at the indices of torchvision's `vgg16().features` (and
`vgg16_bn().features` with `norm="bn"`), so an ImageNet VGG state dict's `features.*` keys
load as they are.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from seglab.errors import UserError
from seglab.models.layers import check_norm

# convs per stage (channels 64, 128, 256, 512, 512), torchvision's configurations A, B, D
VGG_STAGES = {"vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3)}
_STAGE_CHANNELS = (64, 128, 256, 512, 512)
VGG_NORMS = ("none", "bn")  # names of seglab.models.layers; None (YAML null) is "none"


class VGGBackbone(nn.Module):
    """VGG conv1..conv5 without the last max pool: (N, C, H, W) -> conv5 (N, 512, H/16, W/16).

    Args:
        name: vgg11, vgg13 or vgg16.
        norm: None or "none" (the paper) or "bn" (BatchNorm after each conv, torchvision's
            `vgg16_bn`).
        trainable_stages: 0..5, how many stages from the output keep trainable parameters
            (3: conv3_1 and up, what Fast R-CNN fine-tunes for VGG16, §4.5).
        in_channels: image channels (3 for RGB, 1 for grey).

    Attributes:
        out_channels: [512], the channels of the one output map.
    """

    def __init__(
        self,
        name: str = "vgg16",
        *,
        norm: str | None = None,
        trainable_stages: int = 3,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if name not in VGG_STAGES:
            raise UserError(f"{name}: unknown VGG; use one of {', '.join(VGG_STAGES)}")
        norm = check_norm(norm, owner="VGG", allowed=VGG_NORMS)
        if not 0 <= trainable_stages <= 5:
            raise UserError(
                f"trainable_stages={trainable_stages}: out of range; use 0 (backbone frozen) "
                "to 5 (all stages trainable)"
            )
        layers, stage_of_layer = _vgg_layers(VGG_STAGES[name], norm, in_channels)
        self.features = nn.Sequential(*layers)
        self.out_channels = [_STAGE_CHANNELS[-1]]
        for layer, stage in zip(self.features, stage_of_layer, strict=True):
            if stage < 5 - trainable_stages:
                layer.requires_grad_(False)

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """(N, in_channels, H, W) -> OrderedDict conv5 (stride 16)."""
        return OrderedDict(conv5=self.features(images))


def _vgg_layers(
    convs_per_stage: tuple[int, ...], norm: str | None, in_channels: int
) -> tuple[list[nn.Module], list[int]]:
    """The layers in torchvision's order, and the stage (0..4) of each."""
    layers: list[nn.Module] = []
    stages: list[int] = []
    channels = in_channels
    for stage, (count, width) in enumerate(zip(convs_per_stage, _STAGE_CHANNELS, strict=True)):
        for _ in range(count):
            block = [nn.Conv2d(channels, width, kernel_size=3, padding=1)]
            if norm == "bn":
                block.append(nn.BatchNorm2d(width))
            block.append(nn.ReLU(inplace=True))
            layers += block
            stages += [stage] * len(block)
            channels = width
        if stage < 4:  # the fifth max pool is left out: stride 16, not 32
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            stages.append(stage)
    for layer in layers:  # torchvision's VGG initialisation
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return layers, stages
