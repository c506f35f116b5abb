"""ResNet backbone: shapes, torchvision's names and outputs, frozen BN, freezing rule."""

import copy
from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d as TorchvisionFrozenBN

from seglab.errors import UserError
from seglab.models.backbones import FrozenBatchNorm2d, ResNetBackbone, set_frozen_bn_eps

RETURN_LAYERS = {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"}


def randomise_norm_statistics(module: nn.Module, seed: int) -> None:
    """Give every norm non-trivial statistics so that equality tests can fail."""
    generator = torch.Generator().manual_seed(seed)
    for submodule in module.modules():
        if hasattr(submodule, "running_var"):
            count = submodule.running_var.numel()
            submodule.running_mean.copy_(torch.randn(count, generator=generator) * 0.1)
            submodule.running_var.copy_(torch.rand(count, generator=generator) + 0.5)
            submodule.weight.data.copy_(torch.rand(count, generator=generator) + 0.5)
            submodule.bias.data.copy_(torch.randn(count, generator=generator) * 0.1)


@pytest.mark.parametrize(
    "depth, channels", [(18, [64, 128, 256, 512]), (50, [256, 512, 1024, 2048])]
)
def test_shapes_and_out_channels(depth, channels):
    backbone = ResNetBackbone(depth).eval()
    features = backbone(torch.rand(2, 3, 64, 96))
    assert list(features) == ["c2", "c3", "c4", "c5"]
    assert backbone.out_channels == channels
    for (name, feature), stride, width in zip(
        features.items(), (4, 8, 16, 32), channels, strict=True
    ):
        assert feature.shape == (2, width, 64 // stride, 96 // stride), name


def test_parameter_counts_match_the_published_resnets_without_classifier():
    # ResNet-18 has 11,689,512 parameters, ResNet-50 25,557,032; minus the 1000-way fc layer.
    assert (
        sum(p.numel() for p in ResNetBackbone(18, norm="bn").parameters()) == 11_689_512 - 513_000
    )
    assert (
        sum(p.numel() for p in ResNetBackbone(50, norm="bn").parameters()) == 25_557_032 - 2_049_000
    )


@pytest.mark.parametrize("depth", [18, 34, 50])
@pytest.mark.parametrize("grad", [True, False], ids=["autograd", "no_grad"])
def test_same_names_and_outputs_as_torchvision(depth, grad, float32_close):
    """Both paths of `conv_norm_act`: folded convs (autograd), and oneDNN's fused ones."""
    build = getattr(torchvision.models, f"resnet{depth}")
    reference = build(weights=None, norm_layer=TorchvisionFrozenBN)
    randomise_norm_statistics(reference, seed=depth)
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    ours = ResNetBackbone(depth)
    ours.load_state_dict(state, strict=True)  # the names really are torchvision's
    body = IntermediateLayerGetter(reference, RETURN_LAYERS).eval()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = body(images)
    with torch.set_grad_enabled(grad):
        result = ours.eval()(images)
    convs = sum(isinstance(m, nn.Conv2d) for m in reference.modules())
    assert result["c5"].requires_grad == grad  # layer2..layer4 train (c2: frozen layer1)
    for name in RETURN_LAYERS.values():
        float32_close(result[name], expected[name], convs=convs, fan_in=3 * 3 * 512)


@pytest.mark.parametrize("norm", ["frozen_bn", "bn", "gn"])
def test_training_step_gradients_equal_torchvision_blocks(norm, float32_close):
    """Train mode: a frozen norm is folded into its conv, BatchNorm and GroupNorm are not;
    the gradients of every trainable weight are the unfolded blocks' (torchvision's)."""
    torch.manual_seed(0)
    ours = ResNetBackbone(18, norm=norm, trainable_stages=5)
    randomise_norm_statistics(ours, seed=1)
    theirs = copy.deepcopy(ours)
    images = torch.rand(2, 3, 64, 64)
    outputs = {}
    for name, model in (("ours", ours), ("theirs", theirs)):
        model.train()
        if name == "ours":
            features = model(images)
        else:  # the modules one by one, as torchvision's forward runs them
            x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
            features = {}
            for key in ("c2", "c3", "c4", "c5"):
                x = features[key] = getattr(model, f"layer{len(features) + 1}")(x)
        sum((f * (index + 1)).mean() for index, f in enumerate(features.values())).backward()
        outputs[name] = features
    convs = sum(isinstance(m, nn.Conv2d) for m in ours.modules())
    for key in outputs["theirs"]:
        float32_close(outputs["ours"][key], outputs["theirs"][key].detach(), convs=convs,
                      fan_in=3 * 3 * 512)  # fmt: skip
    for (name, mine), theirs_parameter in zip(ours.named_parameters(), theirs.parameters(),
                                              strict=True):  # fmt: skip
        assert mine.grad is not None, name
        float32_close(mine.grad, theirs_parameter.grad, convs=2 * convs, fan_in=3 * 3 * 512)


def test_frozen_batch_norm_equals_torchvision_and_batch_norm():
    ours, theirs, batch_norm = FrozenBatchNorm2d(8), TorchvisionFrozenBN(8), nn.BatchNorm2d(8)
    randomise_norm_statistics(batch_norm, seed=0)
    state = batch_norm.state_dict()  # includes num_batches_tracked, which is ignored
    ours.load_state_dict(state)
    theirs.load_state_dict(state)
    x = torch.randn(2, 8, 5, 5)
    assert torch.equal(ours(x), theirs(x))
    torch.testing.assert_close(ours(x), batch_norm.eval()(x))
    assert ours.eps == 1e-5 == theirs.eps
    assert not list(ours.parameters())  # nothing to train

    wrapper = nn.Sequential(ours)
    set_frozen_bn_eps(wrapper, 0.0)
    theirs.eps = 0.0
    assert ours.eps == 0.0 and torch.equal(ours(x), theirs(x))


@pytest.mark.parametrize("trainable_stages", range(6))
def test_freezing_rule_matches_torchvision_trainable_layers(trainable_stages):
    ours = ResNetBackbone(18, norm="bn", trainable_stages=trainable_stages)
    reference = torchvision.models.resnet18(weights=None, norm_layer=nn.BatchNorm2d)
    reference = _resnet_fpn_extractor(reference, trainable_stages)
    expected = {
        name[len("body.") :]
        for name, p in reference.named_parameters()
        if p.requires_grad and name.startswith("body.")
    }
    trainable = {name for name, p in ours.named_parameters() if p.requires_grad}
    assert trainable == expected
    assert (len(trainable) > 0) == (trainable_stages > 0)


@pytest.mark.parametrize("norm, norm_type", [("bn", nn.BatchNorm2d), ("gn", nn.GroupNorm)])
def test_trainable_norms_and_grey_input(norm, norm_type):
    backbone = ResNetBackbone(18, norm=norm, trainable_stages=5, in_channels=1)
    assert isinstance(backbone.bn1, norm_type) and isinstance(backbone.layer4[1].bn2, norm_type)
    features = backbone(torch.rand(2, 1, 64, 64))
    features["c5"].mean().backward()
    assert backbone.conv1.weight.grad.abs().sum() > 0
    assert backbone.conv1.weight.shape == (64, 1, 7, 7)
    assert ResNetBackbone(18, frozen_bn=False).norm == "bn"


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError, match="resnet19"):
        ResNetBackbone(19)
    with pytest.raises(UserError, match="trainable_stages"):
        ResNetBackbone(18, trainable_stages=6)
    with pytest.raises(UserError, match="norm"):
        ResNetBackbone(18, norm="layer")


def test_output_is_an_ordered_dict():
    assert isinstance(ResNetBackbone(18)(torch.rand(1, 3, 32, 32)), OrderedDict)
