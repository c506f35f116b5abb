"""Small detectors and synthetic images for the detection model tests (64-96 px, ResNet-18)."""

from __future__ import annotations

import math

import pytest
import torch

import seglab

# A detector small enough for a unit test: 96 px images, narrow FPN and heads, few RoIs.
TINY_ARGS = {
    "backbone": "resnet18",
    "norm": "bn",
    "trainable_stages": 5,
    "min_size": 96,
    "max_size": 96,
    "fpn_channels": 32,
    "anchor_sizes": [8, 16, 32, 64, 128],
    "rpn_pre_nms_top_n_train": 200,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_train": 100,
    "rpn_post_nms_top_n_test": 50,
    "rpn_batch_size_per_image": 64,
    "box_batch_size_per_image": 32,
    "representation_size": 64,
    "box_score_thresh": 0.0,
}
TINY_MASK_ARGS = {"mask_head_channels": 32}  # Mask R-CNN only: the others have no mask branch


def tiny_detector(name: str, num_classes: int = 3, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    mask_args = TINY_MASK_ARGS if name == "mask_rcnn" else {}
    return seglab.build_model(
        name, num_classes=num_classes, **{**TINY_ARGS, **mask_args, **overrides}
    )


def square_image(size: int = 96, box=(20, 24, 60, 72), label: int = 1):
    """An image with one bright rectangle, its target (boxes, labels, masks)."""
    image = torch.full((3, size, size), 0.2)
    x0, y0, x1, y1 = box
    image[:, y0:y1, x0:x1] = torch.tensor([0.9, 0.5, 0.1])[:, None, None]
    masks = torch.zeros((1, size, size), dtype=torch.uint8)
    masks[0, y0:y1, x0:x1] = 1
    target = {
        "boxes": torch.tensor([box], dtype=torch.float32),
        "labels": torch.tensor([label]),
        "masks": masks,
        "image_id": 0,
    }
    return image, target


def empty_image(size: int = 96):
    """An image without objects, and its empty target."""
    target = {
        "boxes": torch.zeros((0, 4)),
        "labels": torch.zeros((0,), dtype=torch.int64),
        "masks": torch.zeros((0, size, size), dtype=torch.uint8),
        "image_id": 1,
    }
    return torch.full((3, size, size), 0.3), target


def train_on(model, images, targets, *, steps: int, lr: float, cosine: bool = False):
    """AdamW on `model`'s trainable parameters for `steps` steps on one batch, the
    learning rate decayed to zero by a cosine when `cosine`; the total loss of each step."""
    trained = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=lr)
    decay = (lambda step: 0.5 * (1 + math.cos(math.pi * step / steps))) if cosine else None
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, decay or (lambda step: 1.0))
    totals = []
    for _ in range(steps):
        _, losses = model.forward_with_losses(images, targets)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        schedule.step()
        totals.append(float(total.detach()))
    return totals


@pytest.fixture(params=["faster_rcnn", "mask_rcnn"])
def detector_name(request) -> str:
    return request.param
