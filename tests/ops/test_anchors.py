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


def test_coarsest_level_of_several_rows_that_does_not_divide_evenly_equals_torchvision():
    """A 160 x 224 batch through a ResNet + FPN: P6 (max pool of P5, 5 x 7) is 3 x 4, and
    160 / 3 is not whole: the stride is 160 // 3 = 53 rows of pixels (torchvision's integer
    division), so a wrong rounding of the stride moves the second and third rows."""
    sizes = ((32,), (64,), (128,), (256,), (512,))
    ratios = ((0.5, 1.0, 2.0),) * 5
    padded = (160, 224)
    grids = [(40, 56), (20, 28), (10, 14), (5, 7), (3, 4)]
    features = [torch.zeros(2, 4, *grid) for grid in grids]
    image_sizes = [(160, 210), (150, 224)]
    ours = AnchorGenerator(sizes, ratios)(image_sizes, padded, features)
    theirs = TorchvisionAnchors(sizes, ratios)(
        ImageList(torch.zeros(2, 3, *padded), image_sizes), features
    )
    for mine, reference in zip(ours, theirs, strict=True):
        assert torch.equal(mine, reference)
    coarsest = ours[0][-3 * 4 * 3 :].view(3, 4, 3, 4)  # (rows, columns, anchors, xyxy)
    # centre of the square anchor (ratio 1, index 1) of each row: y = row * 53
    assert ((coarsest[:, 0, 1, 1] + coarsest[:, 0, 1, 3]) / 2).tolist() == [0, 53, 106]


def test_flat_sizes_and_aspect_ratios_are_read_as_torchvision_reads_them():
    """Flat aspect ratios `(0.5, 1.0)`: the same ratios on every level; flat sizes: one size
    per level. Both as torchvision's `AnchorGenerator`."""
    padded, image_sizes = (64, 96), [(64, 96)]
    features = [torch.zeros(1, 4, 16, 24), torch.zeros(1, 4, 8, 12)]
    nested = AnchorGenerator(((32,), (64,)), ((0.5, 1.0), (0.5, 1.0)))
    for sizes, ratios in [(((32,), (64,)), (0.5, 1.0)), ((32, 64), (0.5, 1.0))]:
        ours = AnchorGenerator(sizes, ratios)
        theirs = TorchvisionAnchors(sizes, ratios)
        assert ours.num_anchors_per_location() == theirs.num_anchors_per_location() == [2, 2]
        (anchors,) = ours(image_sizes, padded, features)
        (expected,) = theirs(ImageList(torch.zeros(1, 3, *padded), image_sizes), features)
        assert torch.equal(anchors, expected)
        assert torch.equal(anchors, nested(image_sizes, padded, features)[0])
