"""Small models trained for seconds, for a page made without `--model`.

Each recipe is a real seglab model (`seglab.build_model`), narrowed and fed small images
so that a few dozen optimizer steps take seconds on a CPU. A detector learns nothing useful
from data in so few steps, but it can learn one scene: on the page's own generated scene it
trains on that scene alone (it memorises it, and the figures show the mechanism at work);
otherwise, and for the classifier, on scenes or crops of the built-in shapes generator
(`seglab.data.shapes.render_scene`), made in memory. A model trained with `seglab train`
(`seglab explain --model RUN/model.safetensors`) shows what training on data gives.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from seglab.data.shapes import CLASS_NAMES, render_scene
from seglab.models.card import ModelCard
from seglab.models.zoo import build_from_card, model_task
from seglab.ops.roi_align import roi_align
from seglab.structures.masks import masks_to_boxes

DETECTOR_SIZE = 128  # the short side the small detectors resize images to
CROP_SIDE = 48  # the small classifier's input side
# Faster R-CNN §3.3: images rescaled to a 600 px short side (1000 px long side at most),
# anchors of 3 scales (box areas 128^2, 256^2, 512^2 px) and 3 aspect ratios (§3.1.1: k = 9)
PAPER_SHORT_SIDE = 600
PAPER_LONG_SIDE = 1000
PAPER_ANCHOR_SIZES = (128, 256, 512)
PAPER_ASPECT_RATIOS = (0.5, 1.0, 2.0)
SINGLE_MAP_SIZE = 256  # the short side of the small single-map Faster R-CNN


def paper_anchor_sizes(short_side: int) -> tuple[int, ...]:
    """The paper's anchor sizes for images resized to `short_side` px: 128, 256, 512 at 600
    px and above, scaled with the image below it (each anchor then covers the same share of
    the image as in the paper)."""
    scale = min(1.0, short_side / PAPER_SHORT_SIDE)
    return tuple(round(size * scale) for size in PAPER_ANCHOR_SIZES)


@dataclass(frozen=True)
class QuickRecipe:
    """A small model and how long to train it (optimizer steps of `batch_size` samples)."""

    arch: str
    label: str  # how the page names it
    kwargs: dict = field(default_factory=dict)
    steps: int = 20
    batch_size: int = 2
    lr: float = 2e-3
    crops: bool = False  # classifier: single-object crops instead of scenes


_SMALL_DETECTOR = dict(
    num_classes=len(CLASS_NAMES) + 1, backbone="resnet18", norm="bn", trainable_stages=5,
    min_size=DETECTOR_SIZE, max_size=DETECTOR_SIZE, representation_size=256,
)  # fmt: skip
_SELECTIVE_SEARCH = dict(proposal_mode="fast", max_proposals=200, fpn=False, feature_stage="c4")
# Faster R-CNN as the paper has it: one stride-16 map (C4 here, VGG16's conv5_3 there), one
# 3x3 conv in the RPN, 9 anchors per position, RoI max pooling, 300 proposals at test (§4.1)
_SINGLE_MAP_RPN = dict(
    fpn=False, feature_stage="c4", min_size=SINGLE_MAP_SIZE,
    max_size=round(SINGLE_MAP_SIZE * PAPER_LONG_SIDE / PAPER_SHORT_SIDE),
    anchor_sizes=paper_anchor_sizes(SINGLE_MAP_SIZE), aspect_ratios=PAPER_ASPECT_RATIOS,
    rpn_head_convs=1, roi_pool="max", rpn_post_nms_top_n_test=300,
)  # fmt: skip

QUICK_RECIPES = {
    "cnn": QuickRecipe(
        "cnn",
        "a small CNN classifier",
        dict(num_classes=len(CLASS_NAMES), widths=(16, 32, 64, 64), hidden=64, dropout=0.1),
        steps=100,
        batch_size=32,
        lr=3e-3,
        crops=True,
    ),  # fmt: skip
    "mask_rcnn": QuickRecipe(
        "mask_rcnn",
        "a small Mask R-CNN (ResNet-18 + FPN)",
        dict(
            _SMALL_DETECTOR,
            fpn_channels=64,
            anchor_sizes=(16, 32, 64, 128, 256),
            rpn_pre_nms_top_n_train=600,
            rpn_post_nms_top_n_train=300,
            rpn_pre_nms_top_n_test=300,
            rpn_post_nms_top_n_test=100,
            rpn_batch_size_per_image=128,
            box_batch_size_per_image=128,
            box_positive_fraction=0.5,
            sampling_ratio=2,
            mask_head_channels=64,
            mask_head_convs=2,
            detections_per_img=30,
        ),
        steps=40,
        batch_size=1,
    ),  # fmt: skip
    "faster_rcnn": QuickRecipe(
        "faster_rcnn",
        "a small single-map Faster R-CNN (ResNet-18 C4)",
        dict(
            _SMALL_DETECTOR,
            **_SINGLE_MAP_RPN,
            rpn_batch_size_per_image=128,
            box_batch_size_per_image=128,
            box_positive_fraction=0.5,
            detections_per_img=30,
        ),
        steps=40,
        batch_size=1,
    ),  # fmt: skip
    "fast_rcnn": QuickRecipe(
        "fast_rcnn",
        "a small Fast R-CNN (ResNet-18 C4)",
        dict(
            _SMALL_DETECTOR,
            **_SELECTIVE_SEARCH,
            box_batch_size_per_image=64,
            box_positive_fraction=0.5,
            min_size=384,  # as its recipe: a 60 px shape spans ~8 cells of the stride-16 map
            max_size=384,
        ),
        steps=20,
        batch_size=1,
    ),  # fmt: skip
    "rcnn": QuickRecipe(
        "rcnn",
        "a small R-CNN (ResNet-18 C4 on 64 px warps)",
        dict(
            _SMALL_DETECTOR,
            **_SELECTIVE_SEARCH,
            warp_size=64,
            context_padding=4,
            box_roi_size=2,
            representation_size=128,
            box_batch_size_per_image=32,
            box_positive_fraction=0.5,
        ),
        steps=20,
        batch_size=1,
    ),  # fmt: skip
}


def shapes_scene(seed: int, size: int, count: int = 4) -> tuple[Tensor, dict]:
    """A generated scene: float (3, H, W) image in [0, 1] and its detection target
    (`boxes` (N, 4) xyxy of the visible parts, `labels` (N,) 1..3, `masks` (N, H, W) uint8)."""
    rgb, shapes = render_scene(size, np.random.default_rng([seed, size]), count=count)
    image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255  # (H, W, 3) -> (3, H, W)
    masks = torch.from_numpy(np.stack([shape.visible_mask for shape in shapes])).to(torch.uint8)
    labels = torch.tensor([shape.label for shape in shapes], dtype=torch.int64)
    return image, {"boxes": masks_to_boxes(masks), "labels": labels, "masks": masks}


def shapes_crop(seed: int, size: int) -> tuple[Tensor, dict]:
    """One object filling most of a (3, size, size) image; `labels` 0..2 (no background)."""
    rng = np.random.default_rng([seed, size, 1])
    rgb, shapes = render_scene(
        size, rng, count=1, radius_fn=lambda side, r: float(r.uniform(side / 5, side / 2.6)),
        margin=1.2,
    )  # fmt: skip
    image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    return image, {"labels": torch.tensor(shapes[0].label - 1)}


def object_crops(image: Tensor, target: dict, side: int, copies: int) -> list[tuple[Tensor, dict]]:
    """Each object of a scene as classifier samples: its box with R-CNN's context (16 px at
    a 224 px warp, ~8% a side) and with a quarter of its size a side, resampled to
    side x side (RoIAlign), each repeated `copies` times."""
    boxes = target["boxes"].float()
    sizes = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2) * torch.tensor([-1.0, -1.0, 1.0, 1.0])
    samples = []
    for context in (16 / 192, 0.25):
        rois = torch.cat([boxes.new_zeros(len(boxes), 1), boxes + sizes * context], dim=1)
        crops = roi_align(image[None], rois, side, 1.0, sampling_ratio=2, aligned=True)
        samples += [(crop, {"labels": label - 1}) for crop, label in zip(crops, target["labels"],
                                                                         strict=True)]  # fmt: skip
    return samples * copies


def build_quick_model(name: str, *, seed: int) -> nn.Module:
    """The untrained model of recipe `name`, initialised from `seed`."""
    recipe = QUICK_RECIPES[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        card = ModelCard(recipe.arch, dict(recipe.kwargs), model_task(recipe.arch),
                         class_names=tuple(CLASS_NAMES))  # fmt: skip
        model = build_from_card(card)
    return model.eval()


def train_quick_model(model: nn.Module, name: str, *, seed: int, samples: list | None = None):
    """Train `model` (from `build_quick_model(name)`) for its recipe's steps, in place.

    Args:
        samples: (image, target) pairs to train on; None: generated ones (a classifier
            trains on generated crops and these).

    Returns:
        seconds spent.
    """
    recipe = QUICK_RECIPES[name]
    if recipe.crops:  # generated crops, plus the given objects' own
        samples = _training_samples(recipe, seed) + list(samples or [])
    samples = samples or _training_samples(recipe, seed)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _train(model, samples, recipe)
    return time.perf_counter() - start


def _training_samples(recipe: QuickRecipe, seed: int) -> list[tuple[Tensor, dict]]:
    if recipe.crops:
        return [shapes_crop(seed * 1000 + index, CROP_SIDE) for index in range(512)]
    return [shapes_scene(seed * 1000 + index, 192) for index in range(32)]


def _train(model: nn.Module, samples: list, recipe: QuickRecipe) -> None:
    """AdamW with a linear warmup over the first quarter of the steps, gradients clipped."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=recipe.lr, weight_decay=1e-4)
    warmup = max(1, recipe.steps // 4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    model.train()
    for _ in range(recipe.steps):
        chosen = torch.randperm(len(samples))[: recipe.batch_size].tolist()
        images = [samples[index][0] for index in chosen]
        targets = [samples[index][1] for index in chosen]
        _, losses = model.forward_with_losses(images, targets)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(parameters, 10.0)
        optimizer.step()
        schedule.step()
    model.eval()
