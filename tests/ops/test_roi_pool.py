"""RoI max pooling: the plain-PyTorch reference equals torchvision's kernel."""

import pytest
import torch
import torchvision

from seglab.ops.roi_levels import boxes_to_rois
from seglab.ops.roi_pool import MultiScaleRoIPool, roi_pool, roi_pool_reference


def rois_with_edge_cases(batch_size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    top_left = torch.rand(30, 2, generator=generator) * 60 - 4
    size = torch.rand(30, 2, generator=generator) * 40
    boxes = torch.cat((top_left, top_left + size), dim=1)
    special = torch.tensor(
        [
            [-30.0, -20.0, -5.0, -2.0],  # outside
            [70.0, 70.0, 90.0, 95.0],  # outside
            [-10.0, 50.0, 80.0, 75.0],  # straddles the border
            [10.0, 10.0, 10.0, 10.0],  # zero size: one cell
            [30.0, 30.0, 20.0, 20.0],  # inverted (malformed): one cell
            [0.0, 0.0, 64.0, 64.0],
            [2.5, 3.5, 9.5, 10.5],  # halves: C rounding goes away from zero
            [-2.5, -0.5, 5.0, 6.0],  # negative halves
        ]
    )
    boxes = torch.cat((boxes, special))
    batch_index = torch.arange(len(boxes)) % batch_size
    return torch.cat((batch_index[:, None].float(), boxes), dim=1)


@pytest.mark.parametrize("spatial_scale, output_size", [(1.0, 7), (0.5, (3, 5)), (0.25, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reference_equals_kernel_values_and_gradients(spatial_scale, output_size, dtype):
    size = int(64 * spatial_scale)
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2, 3, size, size + 2, generator=generator, dtype=dtype)
    rois = rois_with_edge_cases(batch_size=2).to(dtype)

    ours_input = features.clone().requires_grad_(True)
    kernel_input = features.clone().requires_grad_(True)
    ours = roi_pool_reference(ours_input, rois, output_size, spatial_scale)
    kernel = roi_pool(kernel_input, rois, output_size, spatial_scale)
    assert torch.equal(ours, kernel)  # a max is exact: no tolerance

    upstream = torch.randn(kernel.shape, generator=generator, dtype=dtype)
    (ours * upstream).sum().backward()
    (kernel * upstream).sum().backward()
    torch.testing.assert_close(ours_input.grad, kernel_input.grad)


def test_hand_computed_pooling_and_ties():
    features = torch.arange(16.0).reshape(1, 1, 4, 4)
    rois = torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]])  # 4 x 4 cells -> 2 x 2 sub-windows of 2 x 2
    assert roi_pool_reference(features, rois, 2).flatten().tolist() == [5.0, 7.0, 13.0, 15.0]
    # Ties: all equal, the gradient goes to the first cell of each sub-window (as the kernel).
    flat = torch.ones(1, 1, 4, 4, requires_grad=True)
    roi_pool_reference(flat, rois, 2).sum().backward()
    expected = torch.zeros(4, 4)
    expected[0, 0] = expected[0, 2] = expected[2, 0] = expected[2, 2] = 1
    assert torch.equal(flat.grad[0, 0], expected)
    flat_kernel = torch.ones(1, 1, 4, 4, requires_grad=True)
    roi_pool(flat_kernel, rois, 2).sum().backward()
    assert torch.equal(flat_kernel.grad, flat.grad)


def test_no_rois_and_fast_path():
    features = torch.randn(1, 2, 8, 8)
    empty = torch.zeros((0, 5))
    assert roi_pool_reference(features, empty, 3).shape == (0, 2, 3, 3)
    rois = rois_with_edge_cases(batch_size=1)
    assert torch.equal(
        roi_pool(features, rois, 3, 0.125), torchvision.ops.roi_pool(features, rois, (3, 3), 0.125)
    )


def test_module_pools_the_proposals_of_each_image_from_one_map():
    """Fast R-CNN's layer: per-image proposals in pixels, the map's stride inferred (16)."""
    features = {"conv5": torch.randn(2, 4, 6, 8, generator=torch.Generator().manual_seed(2))}
    proposals = [torch.tensor([[0.0, 0.0, 50.0, 40.0], [16.0, 8.0, 120.0, 90.0]]),
                 torch.tensor([[30.0, 20.0, 70.0, 95.0]])]  # fmt: skip
    pooled = MultiScaleRoIPool(["conv5"], 7)(features, proposals, [(96, 128), (90, 100)])
    rois = torch.tensor([[0.0, 0, 0, 50, 40], [0, 16, 8, 120, 90], [1, 30, 20, 70, 95]])
    expected = torchvision.ops.RoIPool((7, 7), spatial_scale=1 / 16)(features["conv5"], rois)
    assert pooled.shape == (3, 4, 7, 7) and torch.equal(pooled, expected)


def test_a_list_of_boxes_per_image_as_torchvision_takes_it():
    features = torch.randn(3, 2, 16, 16, generator=torch.Generator().manual_seed(6))
    rois = rois_with_edge_cases(batch_size=2)
    boxes = [rois[rois[:, 0] == 0, 1:], torch.zeros(0, 4), rois[rois[:, 0] == 1, 1:]]
    pooled = roi_pool(features, boxes, 3, 0.25)
    assert torch.equal(pooled, torchvision.ops.roi_pool(features, boxes, (3, 3), 0.25))
    assert torch.equal(pooled, roi_pool(features, boxes_to_rois(boxes), 3, 0.25))
    with pytest.raises(ValueError, match=r"got \(4, 4\); need \(K, 5\)"):
        roi_pool(features, torch.zeros(4, 4), 3)
