"""Images in, a padded batch out; detections back in the frame of the original images.

Detectors take images of any size in [0, 1]. This module normalises them with the backbone's
mean and std, resizes each so that its short side is `min_size` (its long side at most
`max_size`, Faster R-CNN §4: "re-scale the images such that their shorter side is 600
pixels"), resizes the targets with them, and pads the batch to a multiple of 32 so that
every FPN level divides evenly. `postprocess` maps boxes back to the original size.
Semantics (interpolation, rounding, padding) follow torchvision's GeneralizedRCNNTransform
so that a converted checkpoint reproduces torchvision's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seglab.models.inputs import IMAGENET_MEAN, IMAGENET_STD

# Target entries that are xyxy boxes in the image's pixels, resized with it: the ground
# truth, and the given proposals of R-CNN and Fast R-CNN (selective search, from the data).
BOX_KEYS = frozenset({"boxes", "proposals"})


@dataclass
class ImageBatch:
    """Resized, normalised, zero-padded images, the size of each before padding, and the
    images as given (what selective search reads: it segments the pixels of the original
    image, not the network's normalised input).

    Attributes:
        tensors: (B, C, H_pad, W_pad) float, H_pad and W_pad multiples of `size_divisible`.
        image_sizes: per image (h, w) after resizing, before padding.
        original_images: per image the (C, h0, w0) float input in [0, 1], before resizing.
    """

    tensors: Tensor
    image_sizes: list[tuple[int, int]]
    original_images: list[Tensor]

    # Sizes stay torch's ints (no int()): under ONNX export they are symbolic, and int()
    # would fix the graph to the example image's size.
    @property
    def padded_size(self) -> tuple[int, int]:
        return self.tensors.shape[-2], self.tensors.shape[-1]

    @property
    def original_sizes(self) -> list[tuple[int, int]]:
        """Per image (h0, w0) of the input, the frame detections are returned in."""
        return [(image.shape[-2], image.shape[-1]) for image in self.original_images]

    def to_resized_frame(self, boxes: Tensor, index: int) -> Tensor:
        """(N, 4) xyxy boxes in the pixels of original image `index` -> its resized frame."""
        return resize_boxes(boxes, self.original_sizes[index], self.image_sizes[index])


class DetectionTransform(nn.Module):
    """Normalise, resize (short side `min_size`, long side <= `max_size`) and batch.

    Args:
        min_size: short side after resizing; a tuple picks one at random per image in
            training (multi-scale training) and uses the last in evaluation.
        max_size: cap on the long side after resizing.
        image_mean, image_std: per-channel normalisation of the [0, 1] input.
        size_divisible: the padded batch's height and width are multiples of this.
        resize_masks: resize `target["masks"]` too (Mask R-CNN needs them, Faster R-CNN not).
    """

    def __init__(
        self,
        *,
        min_size: int | tuple[int, ...],
        max_size: int,
        image_mean: tuple[float, ...] = IMAGENET_MEAN,
        image_std: tuple[float, ...] = IMAGENET_STD,
        size_divisible: int = 32,
        resize_masks: bool = False,
    ):
        super().__init__()
        self.min_size = tuple(min_size) if isinstance(min_size, list | tuple) else (min_size,)
        self.max_size = max_size
        self.register_buffer(
            "image_mean", torch.tensor(image_mean)[:, None, None], persistent=False
        )
        self.register_buffer("image_std", torch.tensor(image_std)[:, None, None], persistent=False)
        self.size_divisible = size_divisible
        self.resize_masks = resize_masks

    def forward(
        self, images: list[Tensor], targets: list[dict] | None = None
    ) -> tuple[ImageBatch, list[dict] | None]:
        """Return the padded batch and the targets in its frame (boxes scaled, masks resized)."""
        resized_images, resized_targets = [], []
        for index, image in enumerate(images):
            if image.dim() != 3 or not image.is_floating_point():
                raise ValueError(f"image {index}: expected a float (C, H, W) tensor in [0, 1]")
            target = targets[index] if targets is not None else None
            image, target = self._resize(self._normalise(image), target)
            resized_images.append(image)
            resized_targets.append(target)
        image_sizes = [(image.shape[-2], image.shape[-1]) for image in resized_images]
        batch = ImageBatch(self._pad_and_stack(resized_images), image_sizes, list(images))
        return batch, (resized_targets if targets is not None else None)

    def _normalise(self, image: Tensor) -> Tensor:
        mean = self.image_mean.to(image)
        std = self.image_std.to(image)
        return (image - mean) / std

    def _scale_factor(self, height: int, width: int) -> float:
        short_side = self.min_size[-1]
        if self.training and len(self.min_size) > 1:
            # multi-scale training; torch's RNG (not Python's) so that seeding torch is enough
            choice = int(torch.empty(1).uniform_(0.0, float(len(self.min_size))).item())
            short_side = self.min_size[choice]
        # sym_min/sym_max: min/max that ONNX export keeps in the graph for any image size
        return torch.sym_min(
            short_side / torch.sym_min(height, width), self.max_size / torch.sym_max(height, width)
        )

    def _resize(self, image: Tensor, target: dict | None) -> tuple[Tensor, dict | None]:
        height, width = image.shape[-2:]
        scale = self._scale_factor(height, width)
        # recompute_scale_factor=True: the output size is floor(size * scale), and the
        # sampling grid follows that size (as torchvision does).
        image = F.interpolate(
            image[None], scale_factor=scale, mode="bilinear",
            recompute_scale_factor=True, align_corners=False,
        )[0]  # fmt: skip
        if target is None:
            return image, None
        target = {key: _plain(value) for key, value in target.items()}
        for key in BOX_KEYS.intersection(target):
            target[key] = resize_boxes(target[key].to(image.device), (height, width),
                                       image.shape[-2:])  # fmt: skip
        if "labels" in target:  # optional, as in torchvision: a target may hold boxes only
            target["labels"] = target["labels"].to(image.device)
        if self.resize_masks and "masks" in target:
            masks = target["masks"].to(image.device)
            # (N, H, W) -> (N, 1, H, W) -> nearest resize -> (N, H', W') uint8
            target["masks"] = F.interpolate(masks[:, None].float(), size=image.shape[-2:])[
                :, 0
            ].byte()
        return image, target

    def _pad_and_stack(self, images: list[Tensor]) -> Tensor:
        stride = self.size_divisible
        # rounded up to a multiple of the stride (non-negative operands: ONNX's integer
        # division truncates, Python's floors)
        height = (max(image.shape[-2] for image in images) + stride - 1) // stride * stride
        width = (max(image.shape[-1] for image in images) + stride - 1) // stride * stride
        # (C, h, w) -> (C, height, width): zeros below and to the right (a Pad in ONNX)
        padded = [
            F.pad(image, (0, width - image.shape[-1], 0, height - image.shape[-2]))
            for image in images
        ]
        return torch.stack(padded)

    def postprocess(
        self,
        detections: list[dict],
        image_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
    ) -> list[dict]:
        """Scale each image's `boxes` from the resized frame back to its original size."""
        for detection, size, original in zip(detections, image_sizes, original_sizes, strict=True):
            detection["boxes"] = resize_boxes(detection["boxes"], size, original)
        return detections


def resize_boxes(boxes: Tensor, old_size_hw, new_size_hw) -> Tensor:
    """Scale xyxy boxes (N, 4) from an image of `old_size_hw` to one of `new_size_hw`."""
    # float32 ratios of the sizes, as torchvision; scalar_tensor keeps symbolic sizes (export)
    ratio_h = torch.scalar_tensor(new_size_hw[0]) / torch.scalar_tensor(old_size_hw[0])
    ratio_w = torch.scalar_tensor(new_size_hw[1]) / torch.scalar_tensor(old_size_hw[1])
    scale = torch.stack([ratio_w, ratio_h, ratio_w, ratio_h]).to(boxes)
    return boxes * scale


def _plain(value):
    """tv_tensors (BoundingBoxes, Mask) -> plain tensors, so arithmetic returns plain tensors."""
    return value.as_subclass(Tensor) if isinstance(value, Tensor) else value
