"""Augmentation pipelines on `(image, target)` with torchvision.transforms.v2.

Boxes (`tv_tensors.BoundingBoxes`) and masks (`tv_tensors.Mask`) are transformed together
with the image. After any geometric step that can move boxes out of the image, boxes are
clipped to it and those left degenerate (side < 1 px) are dropped together with their
labels and masks (`SanitizeBoundingBoxes`).

Pipelines (`build_transforms`):
- classification: resize to `S x S`; train adds scale jitter (zoom about a random window),
  flips, rot90, photometric jitter.
- semantic: train: resize the shortest side to `S` (times the scale jitter), random square
  crop of side `crop_size` (default `S`; zero padding, labelled background where the image
  is smaller; with `mirror_margin`, grown by it and mirrored, labelled ignored, beyond the
  image), flips, rot90, photometric, elastic, weight map; val: resize the shortest side
  to `S`.
- detection / instance: no resize (the model resizes); train: large-scale jitter (resize by
  the jitter factor, crop or pad back to the input size), flips, rot90, photometric.
Masks are resized by sampling at pixel centres, aligned with the image (`_resize`).
Last step everywhere: uint8 image -> float32 in [0, 1].
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2._utils import query_size

from seglab.data.config import AUTO, DataConfig, check_transform_options
from seglab.data.elastic import ElasticDeformation
from seglab.ops.windows import mirror_indices
from seglab.structures.masks import IGNORE_INDEX


class RandomRot90(v2.Transform):
    """Rotate by a random multiple of 90 degrees (counter-clockwise), exactly (no resampling)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"turns": int(torch.randint(4, ())), "size": query_size(flat_inputs)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        turns = params["turns"]
        if turns == 0:
            return inpt
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return _rot90_boxes(inpt, turns, params["size"])
        rotated = torch.rot90(inpt.as_subclass(torch.Tensor), turns, dims=(-2, -1))
        return tv_tensors.wrap(rotated, like=inpt)


def _rot90_boxes(boxes: tv_tensors.BoundingBoxes, turns: int, size_hw: tuple[int, int]):
    """Counter-clockwise quarter turns of xyxy boxes on a canvas of `size_hw`."""
    height, width = size_hw
    xyxy = F.convert_bounding_box_format(boxes, new_format=tv_tensors.BoundingBoxFormat.XYXY)
    xyxy = xyxy.as_subclass(torch.Tensor)
    for _ in range(turns):
        # A pixel at (x, y) goes to (y, W - x): x' spans [y0, y1], y' spans [W - x1, W - x0].
        x0, y0, x1, y1 = xyxy.unbind(-1)
        xyxy = torch.stack([y0, width - x1, y1, width - x0], dim=-1)
        height, width = width, height
    rotated = tv_tensors.wrap(xyxy, like=boxes, canvas_size=(height, width))
    return F.convert_bounding_box_format(rotated, new_format=boxes.format)


def _randint_inclusive(low: int, high: int) -> int:
    # torch RNG, like torchvision's own transforms, so one seed fixes every augmentation.
    return int(torch.randint(low, high + 1, ()))


class RandomScaleCrop(v2.Transform):
    """Resize by a random factor, then crop (or zero-pad) a random window.

    With `output_size=None` the window has the input's size: large-scale jitter (Ghiasi et
    al., 2021). With `short_side`, the factor is relative to resizing the shortest side to it.
    With `mirror_margin` m the window is grown by m on every side, read from the image and
    mirrored beyond its border (`_mirror_window`): the context a `valid` U-Net needs to
    predict the window itself (U-Net paper §2, Fig. 2).
    """

    def __init__(
        self,
        scale_range: tuple[float, float] = (1.0, 1.0),
        *,
        output_size: tuple[int, int] | None = None,
        short_side: int | None = None,
        mirror_margin: int = 0,
    ):
        super().__init__()
        self.scale_range, self.output_size, self.short_side = scale_range, output_size, short_side
        self.mirror_margin = mirror_margin

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = query_size(flat_inputs)
        base = self.short_side / min(height, width) if self.short_side else 1.0
        scale = base * float(torch.empty(()).uniform_(*self.scale_range))
        resized = _scaled_size(height, width, scale)
        out_h, out_w = self.output_size or (height, width)
        # Zooming in: a random window inside; zooming out: the image at a random place.
        top = _randint_inclusive(min(0, resized[0] - out_h), max(0, resized[0] - out_h))
        left = _randint_inclusive(min(0, resized[1] - out_w), max(0, resized[1] - out_w))
        return {"resized": resized, "window": (top, left, out_h, out_w)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        resized = _resize(self, inpt, params["resized"])
        if self.mirror_margin:
            return _mirror_window(resized, params["window"], self.mirror_margin)
        return self._call_kernel(F.crop, resized, *params["window"])


def _mirror_window(inpt: Any, window: tuple[int, int, int, int], margin: int) -> Any:
    """The (h + 2 m, w + 2 m) window around `window` = (top, left, h, w) of an image or
    mask (..., H, W), mirrored where it leaves [0, H) x [0, W). A mask is not mirrored
    there: class maps (integers) are ignored (255) and weight maps (floats) 0, so no
    mirrored copy of a pixel is supervised twice."""
    top, left, height, width = window
    size_h, size_w = inpt.shape[-2:]
    rows = mirror_indices(size_h, margin - top, top + height + margin - size_h)
    columns = mirror_indices(size_w, margin - left, left + width + margin - size_w)
    plain = inpt.as_subclass(torch.Tensor)
    extended = plain[..., rows[:, None], columns[None, :]]
    if isinstance(inpt, tv_tensors.Mask):
        outside = (
            _outside(top - margin, len(rows), size_h)[:, None]
            | _outside(left - margin, len(columns), size_w)[None, :]
        )
        fill = 0 if plain.is_floating_point() else IGNORE_INDEX
        extended = extended.masked_fill(outside, fill)
    return tv_tensors.wrap(extended, like=inpt)


def _outside(start: int, count: int, length: int) -> torch.Tensor:
    """(count,) bool: which of the positions start, start + 1, ... lie outside [0, length)."""
    positions = torch.arange(start, start + count)
    return (positions < 0) | (positions >= length)


class ResizeShortSide(v2.Transform):
    """Resize so that the shortest side is `size` (aspect ratio kept)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = query_size(flat_inputs)
        return {"resized": _scaled_size(height, width, self.size / min(height, width))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return _resize(self, inpt, params["resized"])


def _scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(round(height * scale), 1), max(round(width * scale), 1)


def _resize(transform: v2.Transform, inpt: Any, size_hw: tuple[int, int]) -> Any:
    """Resize images (antialiased) and boxes as torchvision does; masks at pixel centres.

    torchvision resizes masks with "nearest", which samples source pixel floor(i * scale):
    shrinking 256 -> 96 px that shifts a mask up to 0.8 source pixels towards the top-left
    of its image, and after a random flip the shift points the other way, so the labels of
    object borders disagree from sample to sample. "nearest-exact" samples at the centre
    floor((i + 0.5) * scale), where the image's own resampling is centred.
    """
    if isinstance(inpt, tv_tensors.Mask):
        planes = inpt.as_subclass(torch.Tensor)
        resized = F.resize_image(
            planes.reshape(planes.shape[:-2].numel(), 1, *planes.shape[-2:]),
            list(size_hw),
            interpolation=v2.InterpolationMode.NEAREST_EXACT,
        )
        return tv_tensors.wrap(resized.reshape(*planes.shape[:-2], *size_hw), like=inpt)
    return transform._call_kernel(F.resize, inpt, size=list(size_hw), antialias=True)


def _geometric_and_photometric(cfg: DataConfig) -> list:
    steps: list = []
    if cfg.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(cfg.hflip))
    if cfg.vflip > 0:
        steps.append(v2.RandomVerticalFlip(cfg.vflip))
    if cfg.rot90:
        steps.append(RandomRot90())
    if cfg.photometric:
        steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05))
    return steps


class SanitizeObjectBoxes(v2.SanitizeBoundingBoxes):
    """`SanitizeBoundingBoxes` of the objects (`boxes`, their labels and masks) only.

    R-CNN's and Fast R-CNN's `target["proposals"]` are boxes too, moved and clamped with
    the image, but nothing is kept in step with them; torchvision's transform would apply
    the objects' keep-mask to them. They pass unchanged (the model drops empty ones).
    """

    def forward(self, *inputs: Any) -> Any:
        image, target = inputs if len(inputs) > 1 else inputs[0]
        if "proposals" not in target:
            return super().forward(image, target)
        objects = {key: value for key, value in target.items() if key != "proposals"}
        image, objects = super().forward(image, objects)
        return image, {**objects, "proposals": target["proposals"]}


def _sanitize_boxes() -> list:
    return [v2.ClampBoundingBoxes(), SanitizeObjectBoxes(min_size=1.0)]


def _classification_steps(cfg: DataConfig, train: bool) -> list:
    size = (cfg.image_size, cfg.image_size)
    steps: list = [v2.Resize(size, antialias=True)]
    if train and cfg.scale_jitter:
        steps.append(RandomScaleCrop(cfg.scale_jitter, output_size=size))
    return steps + (_geometric_and_photometric(cfg) if train else [])


def _semantic_steps(cfg: DataConfig, train: bool) -> list:
    if cfg.image_size == AUTO:
        raise ValueError("data.image_size auto: plan it first (seglab.data.plan_image_size)")
    if not train:
        return [ResizeShortSide(cfg.image_size)]
    crop = cfg.crop_size or cfg.image_size
    size = (crop, crop)
    scale_range = cfg.scale_jitter or (1.0, 1.0)
    steps = [RandomScaleCrop(scale_range, output_size=size, short_side=cfg.image_size,
                             mirror_margin=cfg.mirror_margin)]  # fmt: skip
    steps += _geometric_and_photometric(cfg)
    if cfg.elastic:
        steps.append(ElasticDeformation())
    return steps


def _detection_steps(cfg: DataConfig, train: bool) -> list:
    if not train:
        return []
    steps: list = [RandomScaleCrop(cfg.scale_jitter)] if cfg.scale_jitter else []
    return steps + _geometric_and_photometric(cfg) + _sanitize_boxes()


_STEPS = {
    "classification": _classification_steps,
    "semantic": _semantic_steps,
    "detection": _detection_steps,
    "instance": _detection_steps,
}


def build_transforms(cfg: DataConfig, *, task: str, train: bool) -> v2.Compose:
    """The `(image, target) -> (image, target)` pipeline for `task`; see the module doc.
    A semantic `cfg.image_size` must be planned (a number, not `auto`)."""
    check_transform_options(cfg, task=task)
    steps: list = []
    if cfg.weight_map:  # first: computed (and cached) once per image, then augmented with it
        from seglab.data.weight_map import AddWeightMap  # scipy: imported only when asked for

        steps.append(AddWeightMap(w0=cfg.weight_map_w0, sigma=cfg.weight_map_sigma))
    steps += _STEPS[task](cfg, train)
    steps.append(v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True))
    return v2.Compose(steps)
