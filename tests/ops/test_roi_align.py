"""RoIAlign: our plain-PyTorch reference and our sparse CPU path equal torchvision's kernel
(values, gradients); MultiScaleRoIAlign equals torchvision's."""

from collections import OrderedDict

import pytest
import torch
import torchvision
from torch.nn.modules.utils import _pair

from seglab.ops.roi_align import (
    MultiScaleRoIAlign,
    roi_align,
    roi_align_reference,
    roi_align_sparse,
)
from seglab.ops.roi_levels import boxes_to_rois

IMAGE = 64  # pixels; features below are at stride 1/spatial_scale
EPS = 2.0**-24  # float32's unit roundoff


def summation_bound(values: torch.Tensor, grid: int) -> float:
    """How far two float32 RoIAligns adding the same 4 g^2 weighted taps in another order can
    differ: each addition rounds by at most EPS of a partial sum, which (weights <= 1, adding
    up to <= 1) is at most max |value|; one more EPS for the weight product (w_y w_x)."""
    return (4 * grid * grid + 1) * EPS * float(values.abs().max())


def edge_case_rois(batch_size: int) -> torch.Tensor:
    """Random boxes plus the hard cases, as (K, 5) rois over a 64 px image."""
    generator = torch.Generator().manual_seed(0)
    top_left = torch.rand(30, 2, generator=generator) * 60 - 4
    size = torch.rand(30, 2, generator=generator) * 40
    random_boxes = torch.cat((top_left, top_left + size), dim=1)
    special = torch.tensor(
        [
            [-30.0, -20.0, -5.0, -2.0],  # entirely outside (top-left)
            [70.0, 70.0, 90.0, 95.0],  # entirely outside (bottom-right)
            [-10.0, 50.0, 80.0, 75.0],  # straddles the border
            [10.0, 10.0, 10.0, 10.0],  # zero size
            [20.0, 5.0, 20.0, 30.0],  # zero width
            [0.0, 0.0, 64.0, 64.0],  # the whole image
            [63.0, 0.0, 64.0, 64.0],  # a one-pixel strip on the right border
            [0.3, 0.7, 0.9, 1.1],  # sub-pixel
            [12.5, 7.25, 40.75, 33.5],  # fractional
        ]
    )
    boxes = torch.cat((random_boxes, special))
    batch_index = torch.arange(len(boxes)) % batch_size
    return torch.cat((batch_index[:, None].float(), boxes), dim=1)


def kernel(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """torchvision's kernel itself (our `roi_align` takes the sparse path on the CPU)."""
    return torchvision.ops.roi_align(
        features, rois, _pair(output_size), spatial_scale, sampling_ratio, aligned
    )


def against_kernel(ours, case, seed):
    """`ours(features, rois, *case)` and the kernel on the same random features (2 images at
    the case's scale) and the edge-case regions, each backpropagating the same random
    upstream gradient. Returns features, rois, upstream, (our value, the kernel's) and
    (our feature gradient, the kernel's)."""
    size = int(IMAGE * case[1])
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(2, 3, size, size + 3, generator=generator)
    rois = edge_case_rois(batch_size=2)
    inputs = [features.clone().requires_grad_(True) for _ in range(2)]
    values = (ours(inputs[0], rois, *case), kernel(inputs[1], rois, *case))
    assert values[1].abs().sum() > 0  # the comparison is not between two zero tensors
    upstream = torch.randn(values[1].shape, generator=generator)
    for value in values:
        (value * upstream).sum().backward()
    return features, rois, upstream, values, tuple(tensor.grad for tensor in inputs)


CASES = [(7, 1.0), ((5, 3), 0.25), (14, 0.5)]  # (output_size, spatial_scale)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2, 3])
@pytest.mark.parametrize("output_size, spatial_scale", CASES)
def test_reference_equals_kernel_values_and_gradients(
    aligned, sampling_ratio, spatial_scale, output_size
):
    case = (output_size, spatial_scale, sampling_ratio, aligned)
    *_, values, gradients = against_kernel(roi_align_reference, case, seed=1)
    torch.testing.assert_close(*values, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(*gradients, atol=1e-5, rtol=1e-5)


def sparse_one_level(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    level_of_roi = torch.zeros(len(rois), dtype=torch.int64)
    return roi_align_sparse(
        [features], rois, level_of_roi, [spatial_scale], output_size, sampling_ratio, aligned
    )


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
@pytest.mark.parametrize("output_size, spatial_scale", CASES)
def test_sparse_path_equals_kernel_values_and_gradients(
    aligned, sampling_ratio, spatial_scale, output_size
):
    case = (output_size, spatial_scale, sampling_ratio, aligned)
    features, rois, upstream, (ours, theirs), (our_grad, their_grad) = against_kernel(
        sparse_one_level, case, seed=2
    )
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() <= summation_bound(features, sampling_ratio)
    # A feature cell's gradient adds the weighted upstream of every tap that reads it (up to
    # a few hundred here): the two orders of addition differ by at most EPS times the number
    # of terms times their absolute sum, which the kernel gives for |upstream|.
    absolute_input = features.clone().requires_grad_(True)
    kernel(absolute_input, rois, *case).mul(upstream.abs()).sum().backward()
    bound = 1024 * EPS * absolute_input.grad + 1e-12
    assert torch.all((our_grad - their_grad).abs() <= bound)
    assert their_grad.abs().sum() > 0


def test_roi_align_takes_the_sparse_path_on_cpu_and_handles_no_rois(monkeypatch):
    features = torch.randn(1, 2, 16, 16)
    rois = edge_case_rois(batch_size=1)
    expected = torchvision.ops.roi_align(features, rois, (7, 7), 0.25, 1, False)
    with monkeypatch.context() as patch:  # the kernel must not be called on this path
        patch.setattr(torchvision.ops, "roi_align", None)
        result = roi_align(features, rois, 7, 0.25, 1, False)
    assert torch.equal(result, expected)  # one sample per bin: the same four products
    assert result.is_contiguous(memory_format=torch.channels_last)
    # the adaptive grid (a different number of taps per region) is the kernel's
    assert torch.equal(
        roi_align(features, rois, 7, 0.25, -1, False),
        torchvision.ops.roi_align(features, rois, (7, 7), 0.25, -1, False),
    )
    empty = torch.zeros((0, 5))
    assert roi_align_reference(features, empty, 7, 0.25, 2, True).shape == (0, 2, 7, 7)
    assert roi_align(features, empty, 7, 0.25, 2, True).shape == (0, 2, 7, 7)


def test_hand_computed_bilinear_sample():
    # A ramp f(y, x) = x: the average of samples is the bin centre's x (aligned frame).
    features = torch.arange(8.0).repeat(8, 1)[None, None]  # (1, 1, 8, 8)
    rois = torch.tensor([[0.0, 2.0, 1.0, 6.0, 5.0]])  # x from 2 to 6 pixels
    out = roi_align_reference(features, rois, (1, 2), 1.0, 2, aligned=True)
    # aligned: pixel centres at .5, so x in [1.5, 5.5]; bin centres 2.5 and 4.5
    assert out.flatten().tolist() == pytest.approx([2.5, 4.5])


def test_boxes_to_rois():
    rois = boxes_to_rois([torch.ones(2, 4), torch.zeros(0, 4), 2 * torch.ones(1, 4)])
    assert rois[:, 0].tolist() == [0, 0, 2]
    assert rois[2, 1:].tolist() == [2, 2, 2, 2]


def fpn_features(image_hw, channels=4, seed=3):
    generator = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (
            name,
            torch.randn(
                2, channels, image_hw[0] // stride, image_hw[1] // stride, generator=generator
            ),
        )
        for name, stride in (("0", 4), ("1", 8), ("2", 16), ("3", 32), ("pool", 64))
    )


def multiscale_proposals(seed=4):
    generator = torch.Generator().manual_seed(seed)
    proposals = []
    for count in (25, 17):
        top_left = torch.rand(count, 2, generator=generator) * 200
        # sides from about 1 to 900 pixels so that every level 2..5 is used
        scale = torch.exp(torch.rand(count, 1, generator=generator) * 6.4)
        size = scale * (0.5 + torch.rand(count, 2, generator=generator)) + 0.5
        proposals.append(torch.cat((top_left, top_left + size), dim=1))
    return proposals


def test_multiscale_roi_align_equals_torchvision():
    image_sizes = [(256, 192), (240, 200)]
    features = fpn_features((256, 256))
    proposals = multiscale_proposals()
    names = ["0", "1", "2", "3"]
    ours = MultiScaleRoIAlign(names, 7, sampling_ratio=2, aligned=False)
    theirs = torchvision.ops.MultiScaleRoIAlign(names, 7, sampling_ratio=2)
    expected = theirs(features, proposals, image_sizes)
    result = ours(features, proposals, image_sizes)  # every level in one sparse product
    all_levels = torch.cat([level.flatten() for level in features.values()])
    assert (result - expected).abs().max() <= summation_bound(all_levels, grid=2)
    levels = ours._assign_levels(torch.cat(proposals), [1 / 4, 1 / 8, 1 / 16, 1 / 32])
    assert set(levels.tolist()) == {0, 1, 2, 3}  # every level really is exercised


def test_multiscale_level_rule_and_edge_boxes():
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], (14, 14), 2, aligned=True)
    boxes = torch.tensor(
        [
            [0.0, 0.0, 224.0, 224.0],  # canonical: level k0 = 4 -> index 2
            [0.0, 0.0, 112.0, 112.0],  # half the size: level 3 -> index 1
            [0.0, 0.0, 448.0, 448.0],  # double: level 5 -> index 3
            [0.0, 0.0, 1.0, 1.0],  # tiny: clamped to level 2 -> index 0
            [5.0, 5.0, 5.0, 5.0],  # zero area: log2(0) = -inf, clamped to the finest
        ]
    )
    assert pooler._assign_levels(boxes, [1 / 4, 1 / 8, 1 / 16, 1 / 32]).tolist() == [2, 1, 3, 0, 0]

    features = fpn_features((256, 256))
    proposals = [boxes, boxes[:0]]  # the second image has no proposals
    result = pooler(features, proposals, [(256, 256), (256, 256)])
    assert result.shape == (5, 4, 14, 14)
    theirs = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2)
    # torchvision has no `aligned` switch (always False): compare on aligned=False
    pooler_unaligned = MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2, aligned=False)
    difference = pooler_unaligned(features, proposals, [(256, 256)] * 2) - theirs(
        features, proposals, [(256, 256)] * 2
    )
    all_levels = torch.cat([level.flatten() for level in features.values()])
    assert difference.abs().max() <= summation_bound(all_levels, grid=2)


def per_image_boxes() -> list[torch.Tensor]:
    """torchvision's other form of regions: (K_i, 4) xyxy boxes per image (one has none)."""
    rois = edge_case_rois(batch_size=2)
    return [rois[rois[:, 0] == 0, 1:], torch.zeros(0, 4), rois[rois[:, 0] == 1, 1:]]


def test_a_list_of_boxes_per_image_as_torchvision_takes_it():
    features = torch.randn(3, 3, 32, 35, generator=torch.Generator().manual_seed(5))
    boxes = per_image_boxes()
    ours = roi_align(features, boxes, 7, 0.5, 2, True)
    theirs = torchvision.ops.roi_align(features, boxes, 7, 0.5, 2, True)
    assert ours.shape == theirs.shape == (sum(len(b) for b in boxes), 3, 7, 7)
    assert (ours - theirs).abs().max() <= summation_bound(features, grid=2)
    assert torch.equal(ours, roi_align(features, boxes_to_rois(boxes), 7, 0.5, 2, True))


@pytest.mark.parametrize(
    "rois, message",
    [
        (torch.zeros(4, 4), r"got \(4, 4\); need \(K, 5\)"),  # boxes without the image index
        ([torch.zeros(2, 5)], r"image 0's boxes are \(2, 5\); need"),  # rois in a list
        (torch.zeros(5), r"got \(5,\); need"),
    ],
)
def test_regions_of_another_shape_say_what_is_needed(rois, message):
    with pytest.raises(ValueError, match=message):
        roi_align(torch.zeros(1, 1, 8, 8), rois, 2)
