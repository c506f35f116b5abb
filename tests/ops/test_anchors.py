"""Anchors: hand values, and the same anchors in the same order as torchvision's."""

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchors
from torchvision.models.detection.image_list import ImageList

from seglab.ops.anchors import AnchorGenerator


def test_hand_computed_cell_anchors():
    generator = AnchorGenerator(sizes=((32,),), aspect_ratios=((0.5, 1.0, 2.0),))
    feature = torch.zeros(1, 1, 2, 3)
    (anchors,) = generator([(32, 48)], (32, 48), [feature])
    assert anchors.shape == (2 * 3 * 3, 4)
    # ratio 0.5 (h/w): w = 32 / sqrt(0.5) = 45.25, h = 22.63 -> half sizes rounded 23, 11
    assert anchors[:3].tolist() == [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]]
    # position (row 0, column 1) is shifted by the stride 48 // 3 = 16 in x
    assert anchors[3].tolist() == [-7, -11, 39, 11]
    assert generator.num_anchors_per_location() == [3]


def test_equal_to_torchvision_fpn_anchors():
    sizes = ((32,), (64,), (128,), (256,), (512,))
    ratios = ((0.5, 1.0, 2.0),) * 5
    padded = (96, 128)
    image_sizes = [(96, 120), (80, 128)]
    features = [torch.zeros(2, 4, padded[0] // s, padded[1] // s) for s in (4, 8, 16, 32, 64)]
    # the coarsest level of a 96 px image is 1.5 -> 1 row: strides come from integer division
    features[-1] = torch.zeros(2, 4, 1, 2)
    ours = AnchorGenerator(sizes, ratios)(image_sizes, padded, features)
    theirs = TorchvisionAnchors(sizes, ratios)(
        ImageList(torch.zeros(2, 3, *padded), image_sizes), features
    )
    assert len(ours) == len(theirs) == 2
    for mine, reference in zip(ours, theirs, strict=True):
        assert torch.equal(mine, reference)
    assert AnchorGenerator(sizes, ratios).num_anchors_per_location() == [3] * 5


def test_several_sizes_per_level_equal_torchvision():
    sizes, ratios = ((16, 40, 100),), ((0.25, 1.0, 1.7),)
    feature = torch.zeros(1, 8, 5, 7)
    ours = AnchorGenerator(sizes, ratios)([(80, 112)], (80, 112), [feature])
    theirs = TorchvisionAnchors(sizes, ratios)(
        ImageList(torch.zeros(1, 3, 80, 112), [(80, 112)]), [feature]
    )
    assert torch.equal(ours[0], theirs[0])
    assert ours[0].shape == (5 * 7 * 9, 4)
