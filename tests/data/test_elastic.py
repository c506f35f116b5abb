"""Elastic deformation (U-Net paper §3.1): valid, aligned label maps; identity at sigma 0."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from seglab.data.elastic import ElasticDeformation, random_displacement, warp


def shapes_mask(size: int = 64) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.int64)
    mask[10:30, 8:40] = 1
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask[(yy - 45) ** 2 + (xx - 40) ** 2 < 100] = 2
    mask[:3, :] = 255
    return mask


def sample(mask: torch.Tensor):
    image = tv_tensors.Image(mask.float().clamp(max=2)[None].repeat(3, 1, 1) / 2)
    weights = tv_tensors.Mask(torch.rand(mask.shape))
    return image, {"semantic_mask": tv_tensors.Mask(mask), "weight_map": weights, "image_id": 7}


def test_displacement_passes_through_the_coarse_grid_vectors():
    generator = torch.Generator().manual_seed(3)
    field = random_displacement(41, 61, sigma=10.0, generator=generator)
    coarse = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(3))[0] * 10
    assert field.shape == (2, 41, 61)
    for (row, col), (coarse_row, coarse_col) in [((0, 0), (0, 0)), ((20, 30), (1, 1))]:
        torch.testing.assert_close(field[:, row, col], coarse[:, coarse_row, coarse_col])
    torch.testing.assert_close(field[:, -1, -1], coarse[:, 2, 2])


def test_masks_stay_valid_label_maps():
    torch.manual_seed(0)
    mask = shapes_mask()
    for _ in range(5):
        _, target = ElasticDeformation(sigma=10.0)(*sample(mask))
        warped = target["semantic_mask"]
        assert isinstance(warped, tv_tensors.Mask) and warped.dtype == torch.int64
        assert set(warped.unique().tolist()) <= {0, 1, 2, 255}
        binary = warp((mask == 1).to(torch.uint8), random_displacement(64, 64), mode="nearest")
        assert set(binary.unique().tolist()) <= {0, 1}


def test_image_and_mask_are_deformed_identically():
    """The deformed image of the mask equals the deformed mask (up to interpolation edges)."""
    torch.manual_seed(1)
    mask = shapes_mask()
    mask[:3, :] = 0
    image, target = ElasticDeformation(sigma=10.0)(*sample(mask))
    labels_from_image = (image[0] * 2).round().long()
    warped = target["semantic_mask"]
    assert not torch.equal(warped, mask)  # it did deform
    agreement = (labels_from_image == warped).float().mean()
    assert agreement > 0.98
    uniform = (image[0] * 2 - (image[0] * 2).round()).abs() < 1e-4  # away from label edges
    assert torch.equal(labels_from_image[uniform], warped[uniform])


def test_weight_map_is_warped_with_the_same_field_pixel_for_pixel():
    torch.manual_seed(2)
    mask = shapes_mask()
    image, target = sample(mask)
    target["weight_map"] = tv_tensors.Mask(mask.float() * 1.5)
    _, warped = ElasticDeformation(sigma=10.0)(image, target)
    assert warped["weight_map"].dtype == torch.float32
    assert torch.equal(warped["weight_map"], warped["semantic_mask"].float() * 1.5)


def test_zero_sigma_is_the_identity():
    mask = shapes_mask()
    image, target = sample(mask)
    warped_image, warped_target = ElasticDeformation(sigma=0.0)(image, target)
    torch.testing.assert_close(warped_image, image, atol=1e-5, rtol=0)
    assert torch.equal(warped_target["semantic_mask"], mask)
    torch.testing.assert_close(warped_target["weight_map"], target["weight_map"], atol=1e-5, rtol=0)
    assert warped_target["image_id"] == 7


def test_boxes_are_refused():
    boxes = tv_tensors.BoundingBoxes(torch.zeros(1, 4), format="XYXY", canvas_size=(8, 8))
    with pytest.raises(TypeError, match="boxes"):
        ElasticDeformation()(tv_tensors.Image(torch.rand(3, 8, 8)), {"boxes": boxes})
