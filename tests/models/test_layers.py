"""One norm vocabulary for every model: names, old spellings refused, GroupNorm groups."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import seglab
from seglab.errors import UserError
from seglab.models.layers import (
    check_norm,
    conv_norm,
    conv_norm_act,
    fold_norm_into_conv,
    group_norm_groups,
    norm_layer,
)


@pytest.mark.parametrize(
    "name, kind", [("bn", nn.BatchNorm2d), ("gn", nn.GroupNorm), ("none", nn.Identity)]
)
def test_norm_layer_by_name(name, kind):
    assert isinstance(norm_layer(name, 64), kind)
    conv, norm = conv_norm(3, 64, 3, norm=name, padding=1)
    assert isinstance(norm, kind)
    assert (conv.bias is not None) == (name == "none")  # a norm's shift replaces the bias


def test_group_norm_groups_follow_wu_and_he_and_divide_the_channels():
    assert [group_norm_groups(c) for c in (256, 64, 16, 8, 12, 2, 1)] == [32, 32, 8, 4, 6, 1, 1]
    for channels in range(1, 300):
        groups = group_norm_groups(channels)
        assert channels % groups == 0 and groups <= 32


@pytest.mark.parametrize(
    "model, old, new", [("unet", "batch", "bn"), ("unet", "group", "gn"), ("cnn", "batch", "bn")]
)
def test_old_spellings_are_refused_with_the_new_name(model, old, new):
    with pytest.raises(UserError, match=f"norm '{old}' is now spelled '{new}'"):
        seglab.build_model(model, num_classes=3, norm=old)


def test_unknown_and_disallowed_names_list_the_allowed_ones():
    with pytest.raises(UserError, match="not one of none, bn, gn"):
        check_norm("layer", owner="unet", allowed=("none", "bn", "gn"))
    with pytest.raises(UserError, match="not one of none, bn, gn"):
        check_norm("frozen_bn", owner="unet", allowed=("none", "bn", "gn"))
    assert check_norm(None, owner="fpn") == "none"


@pytest.mark.parametrize("option", ["norm", "fpn_norm", "head_norm"])
def test_detectors_take_the_same_names(option):
    with pytest.raises(UserError, match="norm 'group' is now spelled 'gn'"):
        seglab.build_model("faster_rcnn", num_classes=3, backbone="resnet18", **{option: "group"})
    model = seglab.build_model(
        "mask_rcnn", num_classes=3, backbone="resnet18", box_head="conv", **{option: "gn"}
    )
    group_norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert group_norms and all(
        m.num_groups == group_norm_groups(m.num_channels) for m in group_norms
    )


def test_frozen_batch_norm_is_a_name_of_the_same_vocabulary():
    from seglab.models.layers import FrozenBatchNorm2d

    assert isinstance(norm_layer("frozen_bn", 8), FrozenBatchNorm2d)
    with pytest.raises(UserError, match="not one of none, bn"):
        seglab.build_model("fast_rcnn", num_classes=3, backbone="vgg16", norm="frozen_bn")


def _randomised(norm_name: str, channels: int) -> nn.Module:
    """A norm whose statistics and affine terms are far from the identity."""
    norm = norm_layer(norm_name, channels)
    generator = torch.Generator().manual_seed(channels)
    for name, tensor in [*norm.named_parameters(), *norm.named_buffers()]:
        if tensor.is_floating_point():
            values = torch.rand(tensor.shape, generator=generator) + 0.5
            tensor.data.copy_(values if "var" in name or name == "weight" else values - 1.0)
    return norm


@pytest.mark.parametrize("norm_name, train", [("none", False), ("frozen_bn", False),
                                              ("frozen_bn", True), ("bn", False), ("bn", True),
                                              ("gn", False)])  # fmt: skip
@pytest.mark.parametrize("grad", [True, False], ids=["autograd", "no_grad"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_conv_norm_act_is_the_modules_run_one_by_one(norm_name, train, grad, layout,
                                                     float32_close):  # fmt: skip
    """relu(norm(conv(x)) + residual) in every variant: folded or not, fused by oneDNN
    (no_grad) or separate steps (autograd), either memory layout."""
    generator = torch.Generator().manual_seed(0)  # the same draws on every run
    conv, _ = conv_norm(16, 24, 3, norm=norm_name, padding=1)
    conv.stride = (2, 2)
    with torch.no_grad():  # drawn at 1/sqrt(fan_in), so that the outputs are about 1
        for parameter in conv.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / 12)
    norm = _randomised(norm_name, 24).train(train)
    x = torch.randn(2, 16, 15, 12, generator=generator).contiguous(memory_format=layout)
    residual = torch.randn(2, 24, 8, 6, generator=generator)
    reference = copy.deepcopy(norm)  # BatchNorm in training updates its statistics
    for relu, shortcut in [(True, None), (False, None), (True, residual), (False, residual)]:
        expected = reference(conv(x)) + (0 if shortcut is None else shortcut)
        expected = torch.relu(expected) if relu else expected
        with torch.set_grad_enabled(grad):
            result = conv_norm_act(conv, norm, x, relu=relu, residual=shortcut)
        assert result.requires_grad == grad
        float32_close(result, expected.detach(), convs=1, fan_in=16 * 9)
    if norm_name == "bn" and train:  # not folded: batch statistics, running ones updated
        torch.testing.assert_close(norm.running_mean, reference.running_mean)


def test_folding_changes_no_parameter_and_gradients_reach_the_conv():
    conv, _ = conv_norm(8, 8, 3, norm="frozen_bn", padding=1)
    norm = _randomised("frozen_bn", 8)
    state = {k: v.clone() for k, v in [*conv.state_dict().items(), *norm.state_dict().items()]}
    x = torch.randn(1, 8, 6, 6)
    conv_norm_act(conv, norm, x, relu=True).sum().backward()
    expected_grad = conv.weight.grad.clone()
    conv.weight.grad = None
    torch.relu(norm(conv(x))).sum().backward()
    torch.testing.assert_close(expected_grad, conv.weight.grad)
    after = {**conv.state_dict(), **norm.state_dict()}
    assert set(after) == set(state) and all(torch.equal(after[k], state[k]) for k in state)
    assert fold_norm_into_conv(conv, norm_layer("gn", 8)) is None
    assert fold_norm_into_conv(conv, norm_layer("bn", 8).train()) is None


@pytest.mark.parametrize("norm_name", ["frozen_bn", "bn"])  # bn in eval: its affine trains
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_trained_folded_conv_keeps_no_folded_weight_and_its_gradients_are_unchanged(
    norm_name, layout
):
    """In training a folded convolution's backward multiplies the weight by the norm's scale
    again instead of keeping `weight * scale` (a copy of the weight) from the forward: the
    gradients of the input, the weight and the norm's affine terms are those of `F.conv2d`
    on the folded weight (`fold_norm_into_conv`), bit for bit."""
    generator = torch.Generator().manual_seed(0)
    conv, _ = conv_norm(16, 24, 3, norm=norm_name, padding=1)
    conv.stride = (2, 2)
    norm = _randomised(norm_name, 24).eval()
    x = torch.randn(2, 16, 15, 12, generator=generator).contiguous(memory_format=layout)
    x.requires_grad_(True)
    residual = torch.randn(2, 24, 8, 6, generator=generator)
    upstream = torch.randn(2, 24, 8, 6, generator=generator)
    inputs = [x, conv.weight, *norm.parameters()]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        result = conv_norm_act(conv, norm, x, relu=True, residual=residual)
    gradients = torch.autograd.grad((result * upstream).sum(), inputs)
    weight, bias = fold_norm_into_conv(conv, norm)  # the previous formulation
    expected = torch.relu(
        F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups) + residual
    )
    expected_gradients = torch.autograd.grad((expected * upstream).sum(), inputs)
    assert torch.equal(result, expected)
    for name, got, want in zip(["x", "weight", "norm weight", "norm bias"], gradients,
                               expected_gradients, strict=False):  # fmt: skip
        assert torch.equal(got, want), name
    copies = [t for t in saved if t.shape == conv.weight.shape and t is not conv.weight]
    assert not copies  # the conv's own weight is kept, no folded copy of it
