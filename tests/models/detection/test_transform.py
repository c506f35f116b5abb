"""DetectionTransform against torchvision's GeneralizedRCNNTransform (resize, normalise,
pad to a multiple of 32, targets, and the way back to the original frame)."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from seglab.models.detection.transform import IMAGENET_MEAN, IMAGENET_STD, DetectionTransform


def make_targets(sizes):
    targets = []
    for height, width in sizes:
        masks = torch.zeros((2, height, width), dtype=torch.uint8)
        masks[0, 3:20, 5:30] = 1
        masks[1, height // 2 :, width // 3 :] = 1
        boxes = torch.tensor([[5.0, 3.0, 30.0, 20.0], [width / 3, height / 2, width, height]])
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks})
    return targets


@pytest.mark.parametrize("min_size,max_size", [(96, 160), (128, 128), (50, 1000)])
def test_matches_torchvision(min_size, max_size):
    torch.manual_seed(0)
    sizes = [(70, 123), (100, 61)]
    images = [torch.rand(3, h, w) for h, w in sizes]
    ours = DetectionTransform(min_size=min_size, max_size=max_size, resize_masks=True).eval()
    theirs = GeneralizedRCNNTransform(min_size, max_size, IMAGENET_MEAN, IMAGENET_STD).eval()
    batch, targets = ours(images, make_targets(sizes))
    expected, expected_targets = theirs(images, make_targets(sizes))
    assert batch.image_sizes == expected.image_sizes
    assert batch.tensors.shape[-2] % 32 == 0 and batch.tensors.shape[-1] % 32 == 0
    torch.testing.assert_close(batch.tensors, expected.tensors, rtol=0, atol=0)
    for got, want in zip(targets, expected_targets, strict=True):
        torch.testing.assert_close(got["boxes"], want["boxes"], rtol=0, atol=0)
        assert torch.equal(got["masks"], want["masks"])


def test_short_side_and_cap():
    transform = DetectionTransform(min_size=100, max_size=150).eval()
    batch, _ = transform([torch.rand(3, 50, 60), torch.rand(3, 40, 200)])
    assert batch.image_sizes == [(100, 120), (30, 150)]  # short side 100; long side capped at 150
    assert batch.padded_size == (128, 160)
    assert batch.tensors[0, :, 100:, :].abs().sum() == 0  # zero padding below the image


def test_postprocess_maps_boxes_back_to_the_original_frame():
    transform = DetectionTransform(min_size=128, max_size=256).eval()
    image = torch.rand(3, 64, 100)
    target = {"boxes": torch.tensor([[10.0, 20.0, 50.0, 60.0]]), "labels": torch.tensor([1])}
    batch, (resized,) = transform([image], [target])
    torch.testing.assert_close(resized["boxes"], torch.tensor([[20.0, 40.0, 100.0, 120.0]]))
    (back,) = transform.postprocess([{"boxes": resized["boxes"]}], batch.image_sizes, [(64, 100)])
    torch.testing.assert_close(back["boxes"], target["boxes"])


def test_multi_scale_training_picks_one_of_the_sizes():
    transform = DetectionTransform(min_size=(64, 96), max_size=1000).train()
    seen = {transform([torch.rand(3, 32, 32)])[0].image_sizes[0] for _ in range(30)}
    assert seen == {(64, 64), (96, 96)}
    assert transform.eval()([torch.rand(3, 32, 32)])[0].image_sizes == [(96, 96)]


def test_rejects_non_float_images():
    with pytest.raises(ValueError, match="float"):
        DetectionTransform(min_size=64, max_size=64)([torch.zeros(3, 8, 8, dtype=torch.uint8)])


def test_targets_with_boxes_only_as_torchvision():
    """torchvision's transform takes targets without labels (e.g. for box-only tooling)."""
    torch.manual_seed(0)
    sizes = [(70, 123), (100, 61)]
    images = [torch.rand(3, h, w) for h, w in sizes]
    boxes_only = [{"boxes": target["boxes"]} for target in make_targets(sizes)]
    ours = DetectionTransform(min_size=96, max_size=160).eval()
    theirs = GeneralizedRCNNTransform(96, 160, IMAGENET_MEAN, IMAGENET_STD).eval()
    _, targets = ours(images, [dict(target) for target in boxes_only])
    _, expected = theirs(images, [dict(target) for target in boxes_only])
    for got, want in zip(targets, expected, strict=True):
        assert set(got) == set(want) == {"boxes"}
        torch.testing.assert_close(got["boxes"], want["boxes"], rtol=0, atol=0)
