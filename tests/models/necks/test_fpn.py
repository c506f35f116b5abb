"""FPN: shapes, equality with torchvision's FeaturePyramidNetwork and BackboneWithFPN."""

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from seglab.errors import UserError
from seglab.models.backbones import (
    ResNetBackbone,
    convert_torchvision_backbone,
    rename_torchvision_backbone_key,
)
from seglab.models.necks import FPN

CHANNELS = [16, 24, 32, 40]


def stages(seed: int = 0, size: int = 64) -> OrderedDict:
    generator = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (f"c{level}", torch.randn(2, ch, size // 2**level, size // 2**level, generator=generator))
        for level, ch in zip(range(2, 6), CHANNELS, strict=True)
    )


def test_shapes_and_names():
    pyramid = FPN(CHANNELS, 8)(stages())
    assert list(pyramid) == ["p2", "p3", "p4", "p5", "pool"]
    assert [tuple(p.shape[1:]) for p in pyramid.values()] == [
        (8, 16, 16),
        (8, 8, 8),
        (8, 4, 4),
        (8, 2, 2),
        (8, 1, 1),
    ]
    assert list(FPN(CHANNELS, 8, extra_pool=False)(stages())) == ["p2", "p3", "p4", "p5"]
    # odd sizes: the top-down path upsamples to the lateral's exact size
    odd = OrderedDict((k, v[..., :-1, :]) for k, v in stages(size=100).items())
    assert FPN(CHANNELS, 8)(odd)["p2"].shape[-2:] == odd["c2"].shape[-2:]


@pytest.mark.parametrize("norm", [None, "bn"])
def test_equals_torchvision_given_the_same_weights(norm, float32_close):
    torch.manual_seed(0)
    theirs = FeaturePyramidNetwork(
        CHANNELS, 8, extra_blocks=LastLevelMaxPool(), norm_layer=nn.BatchNorm2d if norm else None
    ).eval()
    ours = FPN(CHANNELS, 8, norm=norm).eval()
    state = {
        rename_torchvision_backbone_key("backbone.fpn." + k, backbone_prefix="", fpn_prefix=""): v
        for k, v in theirs.state_dict().items()
    }
    ours.load_state_dict(state, strict=True)
    inputs = stages(seed=1)
    with torch.no_grad():
        expected = theirs(OrderedDict((str(i), v) for i, v in enumerate(inputs.values())))
    for grad in (True, False):  # convs one by one (autograd), or fused by oneDNN
        with torch.set_grad_enabled(grad):
            result = ours(inputs)
        for mine, reference in zip(result.values(), expected.values(), strict=True):
            assert mine.requires_grad == grad
            # a level sees at most 2 convs per coarser level, lateral and output
            float32_close(mine, reference, convs=8, fan_in=3 * 3 * 8)


def test_torchvision_resnet_fpn_backbone_converts_exactly(float32_close):
    torch.manual_seed(0)
    theirs = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=3)
    for module in theirs.modules():  # non-trivial frozen statistics
        if hasattr(module, "running_var"):
            module.running_var.uniform_(0.5, 1.5)
            module.running_mean.normal_(0, 0.1)
    state = {"backbone." + k: v for k, v in theirs.state_dict().items()}
    converted = convert_torchvision_backbone(state, backbone_prefix="body.", fpn_prefix="fpn.")
    assert len(converted) == len(state)

    ours = nn.Module()
    ours.body, ours.fpn = ResNetBackbone(18, trainable_stages=3), FPN([64, 128, 256, 512], 256)
    ours.load_state_dict(converted, strict=True)
    images = torch.rand(1, 3, 96, 64)
    expected = theirs.eval()(images)
    result = ours.fpn(ours.body.eval()(images))
    convs = sum(isinstance(m, nn.Conv2d) for m in theirs.modules())
    for mine, reference in zip(result.values(), expected.values(), strict=True):
        float32_close(mine, reference, convs=convs, fan_in=3 * 3 * 512)


def test_key_renames_and_bad_norm():
    kwargs = {"backbone_prefix": "b.", "fpn_prefix": "f."}
    assert rename_torchvision_backbone_key("backbone.body.layer1.0.conv1.weight", **kwargs) == (
        "b.layer1.0.conv1.weight"
    )
    assert rename_torchvision_backbone_key("backbone.fpn.inner_blocks.2.0.bias", **kwargs) == (
        "f.lateral_convs.2.0.bias"
    )
    assert rename_torchvision_backbone_key("backbone.fpn.layer_blocks.0.1.weight", **kwargs) == (
        "f.output_convs.0.1.weight"
    )
    assert rename_torchvision_backbone_key("rpn.head.conv.0.0.weight", **kwargs) is None
    with pytest.raises(UserError):
        FPN(CHANNELS, 8, norm="frozen")
