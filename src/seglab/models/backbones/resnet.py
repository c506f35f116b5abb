"""ResNet backbones (He et al. 2016) returning the stage outputs C2..C5 for an FPN, or
C2..C4 for a single feature map at stride 16 (the "C4" detectors: Faster R-CNN with ResNet,
He et al. 2016 appendix A, pools its RoIs from C4).

The layers are torchvision's (`torchvision.models.resnet18` ... `resnet101`, built with
`weights=None`), and the parameter names are kept (`conv1`, `bn1`, `layer1`..`layer4`), so a
torchvision detection checkpoint's `backbone.body.*` keys load after dropping that prefix
(see `seglab.models.backbones.torchvision_keys`).

Normalisation: detectors fine-tuned from ImageNet weights freeze BatchNorm (batches of 1-2
images give useless batch statistics), hence `FrozenBatchNorm2d`; training from scratch on
a CPU needs a trainable norm ("bn" or "gn", GroupNorm being independent of batch size).

The blocks keep torchvision's modules (and so its parameter names) but run through
`conv_norm_act`: the image is laid out channels-last, each frozen norm is folded into its
convolution, and without autograd the shortcut sum and ReLU happen inside the convolution.
The arithmetic is torchvision's block's (`_run_block`), in fewer passes over memory.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from seglab.errors import UserError
from seglab.models.layers import (
    FrozenBatchNorm2d,
    channels_last,
    check_norm,
    conv_norm_act,
    norm_layer,
)

_RESNETS = {
    18: (torchvision.models.resnet18, [64, 128, 256, 512]),
    34: (torchvision.models.resnet34, [64, 128, 256, 512]),
    50: (torchvision.models.resnet50, [256, 512, 1024, 2048]),
    101: (torchvision.models.resnet101, [256, 512, 1024, 2048]),
}
NORMS = ("frozen_bn", "bn", "gn")  # names of seglab.models.layers a ResNet can take
# Freezing order, from the input: trainable_stages = k leaves the last k of these trainable
# (torchvision's `trainable_layers`); with 5 the stem's norm trains too.
_STAGES_FROM_OUTPUT = ("layer4", "layer3", "layer2", "layer1", "conv1")


class ResNetBackbone(nn.Module):
    """ResNet-18/34/50/101 without its classifier: image -> C2..C5.

    Args:
        depth: 18, 34, 50 or 101.
        frozen_bn: FrozenBatchNorm2d (True) or trainable BatchNorm2d (False); ignored when
            `norm` is given.
        trainable_stages: 0..5, how many stages from the output keep trainable parameters
            (3 = layer2..layer4, torchvision's default; 5 = everything).
        in_channels: image channels (3 for RGB, 1 for grey).
        norm: "frozen_bn", "bn" or "gn"; overrides `frozen_bn`.
        last_stage: 5 (C2..C5) or 4 (C2..C4: `layer4` is not built; `trainable_stages`
            still counts it, so 3 trains layer2 and layer3, detectron2's C4 default).

    Attributes:
        out_channels: channels of C2 .. C<last_stage>.
    """

    def __init__(
        self,
        depth: int = 50,
        *,
        frozen_bn: bool = True,
        trainable_stages: int = 3,
        in_channels: int = 3,
        norm: str | None = None,
        last_stage: int = 5,
    ) -> None:
        super().__init__()
        if last_stage not in (4, 5):
            raise UserError(f"last_stage={last_stage}: a ResNet backbone ends at C4 or C5")
        if depth not in _RESNETS:
            raise UserError(f"resnet{depth}: unknown ResNet depth; use one of {sorted(_RESNETS)}")
        if not 0 <= trainable_stages <= 5:
            raise UserError(
                f"trainable_stages={trainable_stages}: out of range; use 0 (backbone frozen) "
                "to 5 (all stages trainable)"
            )
        norm = norm if norm is not None else ("frozen_bn" if frozen_bn else "bn")
        self.norm = check_norm(norm, owner="resnet", allowed=NORMS)
        build, out_channels = _RESNETS[depth]
        self.out_channels = list(out_channels[: last_stage - 1])
        resnet = build(weights=None, norm_layer=partial(norm_layer, self.norm))
        if in_channels != 3:
            resnet.conv1 = nn.Conv2d(
                in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False
            )
            nn.init.kaiming_normal_(resnet.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.depth = depth
        # The stem (conv1 .. maxpool: stride 4) and the four stages, under torchvision's names.
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4 if last_stage == 5 else None
        self.trainable_stages = trainable_stages
        self._freeze_early_stages(trainable_stages)

    def _freeze_early_stages(self, trainable_stages: int) -> None:
        """Stop gradients to all but the last `trainable_stages` stages (torchvision's rule)."""
        trainable = list(_STAGES_FROM_OUTPUT[:trainable_stages])
        if trainable_stages == 5:
            trainable.append("bn1")
        for name, parameter in self.named_parameters():
            if not any(name.startswith(stage) for stage in trainable):
                parameter.requires_grad_(False)

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """(N, in_channels, H, W) -> OrderedDict c2 (stride 4), c3 (8), c4 (16)[, c5 (32)],
        channels-last tensors (as the input, outside ONNX export and torch.compile)."""
        x = conv_norm_act(self.conv1, self.bn1, channels_last(images), relu=True)
        x = self.maxpool(x)
        layers = [self.layer1, self.layer2, self.layer3, self.layer4]
        stages = OrderedDict()
        for name, layer in zip(("c2", "c3", "c4", "c5"), layers, strict=True):
            if layer is None:
                break
            for block in layer:
                x = _run_block(block, x)
            stages[name] = x
        return stages


def _run_block(block: nn.Module, x: Tensor) -> Tensor:
    """torchvision's BasicBlock / Bottleneck forward, each conv + norm (+ ReLU, + shortcut)
    one `conv_norm_act`: relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut) and the like."""
    if not isinstance(block, BasicBlock | Bottleneck):
        return block(x)
    shortcut = x
    if block.downsample is not None:  # Sequential(1x1 conv, norm): the projection shortcut
        shortcut = conv_norm_act(block.downsample[0], block.downsample[1], x, relu=False)
    out = conv_norm_act(block.conv1, block.bn1, x, relu=True)
    if isinstance(block, Bottleneck):
        out = conv_norm_act(block.conv2, block.bn2, out, relu=True)
        return conv_norm_act(block.conv3, block.bn3, out, relu=True, residual=shortcut)
    return conv_norm_act(block.conv2, block.bn2, out, relu=True, residual=shortcut)


def set_frozen_bn_eps(module: nn.Module, eps: float) -> None:
    """Set eps of every FrozenBatchNorm2d under `module` (0.0 for torchvision's pretrained
    v1 Faster/Mask R-CNN checkpoints, see FrozenBatchNorm2d)."""
    for submodule in module.modules():
        if isinstance(submodule, FrozenBatchNorm2d):
            submodule.eps = eps
