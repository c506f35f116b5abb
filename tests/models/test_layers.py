"""One norm vocabulary for every model: names, old spellings refused, GroupNorm groups."""

from __future__ import annotations

import pytest
from torch import nn

import seglab
from seglab.errors import UserError
from seglab.models.layers import check_norm, conv_norm, group_norm_groups, norm_layer


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
