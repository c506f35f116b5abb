"""The sparse RoIAlign's autograd node (`ops/roi_align_sparse.py`): its backward is torch.mm's,
from a transposed matrix built in the forward (int32, nothing converted in the backward);
several poolings and fc6 in one node equal the separate modules; the node's backward
releases fc6's input before it allocates the pyramid's gradient."""

from collections import OrderedDict

import pytest
import torch
from tests.memory import backward_peak_bytes
from torch import nn

from seglab.ops.roi_align import MultiScaleRoIAlign, pool_jointly
from seglab.ops.roi_align_sparse import BLOCK_VALUES, pool_pyramid, sparse_pooling, stack_levels
from seglab.ops.roi_levels import boxes_to_rois
from seglab.ops.roi_pool import MultiScaleRoIPool

pytestmark = [
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta"),
    pytest.mark.filterwarnings("ignore:Sparse invariant checks"),
]
EPS = 2.0**-24  # float32's unit roundoff
NAMES = ["0", "1", "2", "3"]
IMAGE_SIZES = [(128, 96), (120, 128)]


def pyramid(channels: int = 8, seed: int = 0) -> OrderedDict:
    """Four FPN levels of 2 images padded to 128 x 128 px (strides 4..32), channels-last as
    the models' are, with gradients."""
    generator = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (name, torch.randn(2, channels, 128 // stride, 128 // stride, generator=generator)
         .contiguous(memory_format=torch.channels_last).requires_grad_(True))
        for name, stride in zip(NAMES, (4, 8, 16, 32), strict=True)
    )  # fmt: skip


def proposals(count: int, seed: int) -> list[torch.Tensor]:
    """Per image `count` boxes of 2 to 490 px (levels 0..2 used by 60), many past the border."""
    generator = torch.Generator().manual_seed(seed)
    boxes = []
    for _ in IMAGE_SIZES:
        top_left = torch.rand(count, 2, generator=generator) * 120 - 8
        size = torch.exp(torch.rand(count, 2, generator=generator) * 6.2) + 1
        boxes.append(torch.cat((top_left, top_left + size), dim=1))
    return boxes


def one_level_pooling(levels, rois, *, block_regions=None):
    """The sparse pooling of `rois` (7 x 7, 2 samples per bin) from the first level."""
    level_of_roi = torch.zeros(len(rois), dtype=torch.int64)
    shapes = [(level.shape[0], level.shape[2], level.shape[3]) for level in levels]
    return sparse_pooling(
        shapes, rois, level_of_roi, [1 / 4], 7, 2, False, dtype=torch.float32, backward=True,
        block_regions=block_regions,
    )  # fmt: skip


def torch_mm_reference(pooling, stacked):
    """`torch.mm` of the same matrix with int64 indices (what the node replaces)."""
    matrix = pooling.matrix
    return torch.sparse_csr_tensor(
        matrix.crow_indices().long(), matrix.col_indices().long(), matrix.values(),
        size=matrix.shape,
    ) @ stacked  # fmt: skip


def test_one_block_is_torch_mm_bit_for_bit_values_and_gradient():
    """With M^T in one block the values and the gradient are torch.mm's exactly: the
    transpose built by the stable sort adds each feature cell's taps in the order torch's
    own conversion of M's transpose does."""
    levels = list(pyramid().values())[:1]
    rois = boxes_to_rois(proposals(40, seed=1))
    stacked = stack_levels(levels, torch.float32)
    pooling = one_level_pooling(levels, rois)
    upstream = torch.randn(
        len(rois) * 49, stacked.shape[1], generator=torch.Generator().manual_seed(2)
    )
    (result,) = pool_pyramid(levels, [pooling])
    result = result.permute(0, 2, 3, 1).reshape(-1, stacked.shape[1])
    (gradient,) = torch.autograd.grad((result * upstream).sum(), levels)
    expected = torch_mm_reference(pooling, stacked)
    (expected_gradient,) = torch.autograd.grad((expected * upstream).sum(), levels)
    assert torch.equal(result, expected)
    assert torch.equal(gradient, expected_gradient)
    assert gradient.abs().sum() > 0


def test_blocks_of_regions_give_the_one_block_gradient_to_summation_order():
    """M^T in blocks of 3 regions: each feature cell adds the same terms, in block order."""
    levels = list(pyramid().values())[:1]
    rois = boxes_to_rois(proposals(40, seed=1))
    upstream = torch.randn(len(rois), levels[0].shape[1], 7, 7)
    gradients = []
    for block in (None, 3):
        (result,) = pool_pyramid(levels, [one_level_pooling(levels, rois, block_regions=block)])
        gradients.append(torch.autograd.grad((result * upstream).sum(), levels)[0])
    assert len(one_level_pooling(levels, rois, block_regions=3).transposed) == 27  # 80 / 3
    # |difference| <= (terms - 1) EPS sum|terms|: bilinear weights are in [0, 1], so the
    # terms' absolute sum is at most the absolute upstream summed over the taps reading a cell
    (absolute,) = torch.autograd.grad(
        (pool_pyramid(levels, [one_level_pooling(levels, rois)])[0] * upstream.abs()).sum(),
        levels,
    )  # fmt: skip
    terms = torch.diff(one_level_pooling(levels, rois).transposed[0][0].crow_indices()).max()
    assert torch.all((gradients[0] - gradients[1]).abs() <= terms * EPS * absolute + 1e-30)
    assert not torch.equal(gradients[0], torch.zeros_like(gradients[0]))


def test_the_backward_keeps_an_int32_transpose_only_and_converts_nothing():
    """The node keeps M^T (int32 indices, what MKL takes) and not M, and releases it with its
    backward; the backward runs no sparse conversion (torch.mm converted M's transpose to
    CSR there: 15.7 MiB at a Mask R-CNN step's peak)."""
    levels = list(pyramid().values())[:1]
    rois = boxes_to_rois(proposals(10, seed=3))
    (result,) = pool_pyramid(levels, [one_level_pooling(levels, rois)])
    node = result.grad_fn.next_functions[0][0].next_functions[0][0]  # permute <- view <- ours
    assert [pooling.matrix for pooling in node.poolings] == [None]
    ((transposed,),) = node.poolings[0].transposed  # one block, one level
    assert transposed.crow_indices().dtype == transposed.col_indices().dtype == torch.int32
    with torch.profiler.profile() as profile:
        result.sum().backward()
    operators = {event.name for event in profile.events()}
    assert not {"aten::_to_sparse_csr", "aten::to_sparse_csr", "aten::sort"} & operators
    assert node.poolings is None  # M^T released with the backward, not with the graph


def separate_and_joint(linear: nn.Linear, features, box_boxes, mask_boxes):
    """The two poolers and fc6 as separate modules, and as one node (`pool_jointly`)."""
    box_pool = MultiScaleRoIAlign(NAMES, 7, sampling_ratio=2, aligned=False)
    mask_pool = MultiScaleRoIAlign(NAMES, 14, sampling_ratio=2, aligned=False)
    separate = (
        linear(box_pool(features, box_boxes, IMAGE_SIZES).flatten(1)),
        mask_pool(features, mask_boxes, IMAGE_SIZES),
    )
    joint = pool_jointly(
        [box_pool, mask_pool], features, [box_boxes, mask_boxes], IMAGE_SIZES, linear=linear
    )
    return separate, tuple(joint)


def test_joint_poolings_and_fc6_equal_the_separate_modules():
    """Values bit-equal; fc6's gradients bit-equal (the same products); the levels' gradient,
    which adds the box and mask terms in one buffer (the box ones in blocks of regions),
    equal to the separate modules' to float32 summation order."""
    torch.manual_seed(0)
    features = pyramid(channels=16)
    linear = nn.Linear(16 * 49, 24)
    box_boxes, mask_boxes = proposals(60, seed=4), proposals(5, seed=5)
    separate, joint = separate_and_joint(linear, features, box_boxes, mask_boxes)
    upstream = [torch.randn(value.shape) for value in separate]
    parameters = [*features.values(), linear.weight, linear.bias]
    gradients = []
    for values in (separate, joint):
        loss = sum((value * up).sum() for value, up in zip(values, upstream, strict=True))
        gradients.append(torch.autograd.grad(loss, parameters, materialize_grads=True))
    for ours, theirs in zip(joint, separate, strict=True):
        assert torch.equal(ours, theirs)
    assert torch.equal(gradients[1][-2], gradients[0][-2])  # fc6's weight
    assert torch.equal(gradients[1][-1], gradients[0][-1])  # fc6's bias
    # A feature cell adds (taps of the box and mask poolings) terms, each a sum of the 24
    # fc6 outputs' products: both orders are within (taps + 24) EPS of the terms' absolute
    # sum, which the separate modules give for |fc6 weight| and |upstream|.
    with torch.no_grad():
        absolute = nn.Linear(16 * 49, 24)
        absolute.weight.copy_(linear.weight.abs())
    absolute_values, _ = separate_and_joint(absolute, features, box_boxes, mask_boxes)
    loss = sum(
        (value * up.abs()).sum() for value, up in zip(absolute_values, upstream, strict=True)
    )
    bounds = torch.autograd.grad(loss, list(features.values()), materialize_grads=True)
    for ours, theirs, bound in zip(gradients[1], gradients[0], bounds, strict=False):
        assert torch.all((ours - theirs).abs() <= (16 * 2 + 24) * EPS * bound + 1e-30)
    assert all(gradient.abs().sum() > 0 for gradient in gradients[0][:3])  # levels with RoIs


def test_the_mask_pooling_adds_to_the_pyramids_gradient():
    """The joint backward adds every pooling's term: without the mask's gradient the levels'
    gradient differs (the test above would fail on a node that drops it; this says so by
    name)."""
    features = pyramid(channels=4)
    box_pool = MultiScaleRoIAlign(NAMES, 7, sampling_ratio=2, aligned=False)
    mask_pool = MultiScaleRoIAlign(NAMES, 14, sampling_ratio=2, aligned=False)
    boxes = [proposals(20, seed=6), proposals(4, seed=7)]
    box, mask = pool_jointly([box_pool, mask_pool], features, boxes, IMAGE_SIZES)
    with_mask = torch.autograd.grad(
        (box.sum() + mask.sum()), list(features.values()), materialize_grads=True
    )
    box, mask = pool_jointly([box_pool, mask_pool], features, boxes, IMAGE_SIZES)
    box_only = torch.autograd.grad(
        box.sum() + 0 * mask.sum(), list(features.values()), materialize_grads=True
    )
    expected = mask_pool(features, boxes[1], IMAGE_SIZES).sum()
    (mask_gradient,) = torch.autograd.grad(expected, [features["0"]])
    torch.testing.assert_close(with_mask[0] - box_only[0], mask_gradient, atol=1e-5, rtol=0)
    assert mask_gradient.abs().sum() > 0


def test_pool_jointly_declines_poolers_it_cannot_join():
    features = pyramid(channels=4)
    box_pool = MultiScaleRoIAlign(NAMES, 7, sampling_ratio=2, aligned=False)
    adaptive = MultiScaleRoIAlign(NAMES, 14, sampling_ratio=0, aligned=False)  # kernel path
    other_levels = MultiScaleRoIAlign(NAMES[:2], 14, sampling_ratio=2, aligned=False)
    boxes = proposals(3, seed=8)
    for second in (adaptive, other_levels):
        assert pool_jointly([box_pool, second], features, [boxes, boxes], IMAGE_SIZES) is None
    max_pool = MultiScaleRoIPool(NAMES, 7)  # Fast R-CNN's RoI pooling, first
    assert pool_jointly([max_pool, box_pool], features, [boxes, boxes], IMAGE_SIZES) is None


def test_the_backward_releases_fc6s_input_before_the_pyramids_gradient():
    """fc6's input (K, C 7 7) goes once fc6's weight gradient is made, before the pyramid's
    gradient is allocated, and the pooled features' gradient is never whole (blocks of
    regions, each block's released before the next's): the backward holds fc6's weight
    gradient, then that plus the pyramid's gradient and two blocks, less fc6's input (here
    the pyramid is small: with fc6's input kept, or the blocks whole, the backward would
    hold more than fc6's weight gradient and the pyramid's gradient)."""
    torch.manual_seed(0)
    features = pyramid(channels=64)
    box_pool = MultiScaleRoIAlign(NAMES, 7, sampling_ratio=2, aligned=False)
    linear = nn.Linear(64 * 49, 16)
    boxes = proposals(1500, seed=9)  # fc6's input: 3000 x 64 x 49 floats, 38 MB
    weight_gradient = linear.weight.numel() * 4
    pyramid_gradient = sum(level.numel() for level in features.values()) * 4
    block = BLOCK_VALUES * 4
    assert 3000 * 64 * 49 * 4 > 2 * block + pyramid_gradient  # fc6's input is larger

    def forward():
        return pool_jointly([box_pool], features, [boxes], IMAGE_SIZES, linear=linear)[0].sum()

    peak = backward_peak_bytes(forward)
    assert weight_gradient <= peak < weight_gradient + pyramid_gradient


def test_each_level_gets_a_gradient_of_its_own():
    """Each level's gradient is a buffer of its own (the engine adds the level's other
    gradients into it and releases it level by level), not a view of one buffer for all
    levels, which stays until the last level's gradient is consumed."""
    features = pyramid(channels=4)
    box_pool = MultiScaleRoIAlign(NAMES, 7, sampling_ratio=2, aligned=False)
    mask_pool = MultiScaleRoIAlign(NAMES, 14, sampling_ratio=2, aligned=False)
    boxes = [proposals(30, seed=10), proposals(6, seed=11)]
    box, mask = pool_jointly([box_pool, mask_pool], features, boxes, IMAGE_SIZES)
    received = {}
    for name, level in features.items():
        level.register_hook(lambda grad, name=name: received.setdefault(name, grad))
    (box.sum() + mask.sum()).backward()
    received = {name: grad for name, grad in received.items() if grad is not None}
    assert len(received) >= 3  # (a level that no region reads gets no gradient)
    for name, grad in received.items():
        assert grad.untyped_storage().nbytes() == features[name].numel() * 4
        assert grad.is_contiguous(memory_format=torch.channels_last)
