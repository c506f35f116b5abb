"""What the figures of one page share: the image they are drawn on and the models.

A figure asks for a model by kind (`cnn`, `rcnn`, `fast_rcnn`, `faster_rcnn_single_map`,
`faster_rcnn`, `mask_rcnn`). The user's model (`--model`) serves every kind its architecture
can show (a Mask R-CNN is also a Faster R-CNN: same RPN; an RPN on one map, as the Faster
R-CNN paper's, shows `faster_rcnn_single_map`, one on FPN levels `faster_rcnn`); any other
kind gets a small model of
`seglab.explain.training`, built once per page, and trained there when some figure of the
page needs learned weights (the anchors, RoI sampling grids and shapes do not).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seglab.data.images import load_image
from seglab.explain.training import (
    CROP_SIDE,
    QUICK_RECIPES,
    build_quick_model,
    object_crops,
    shapes_scene,
    train_quick_model,
)
from seglab.models.detection.selective_search import SelectiveSearchProposals

# kind of figure -> the architectures that can show it
KIND_ARCHS = {
    "cnn": ("cnn",),
    "rcnn": ("rcnn",),
    "fast_rcnn": ("fast_rcnn",),
    "faster_rcnn_single_map": ("faster_rcnn", "mask_rcnn"),
    "faster_rcnn": ("faster_rcnn", "mask_rcnn"),
    "mask_rcnn": ("mask_rcnn",),
}
# kinds that show an RPN -> whether its anchors lie on one map (True) or on FPN levels
RPN_SINGLE_MAP = {"faster_rcnn_single_map": True, "faster_rcnn": False}
# kind -> the small model that shows it when the user gave none of that kind
QUICK_FOR_KIND = {
    "cnn": "cnn",
    "rcnn": "rcnn",
    "fast_rcnn": "fast_rcnn",
    "faster_rcnn_single_map": "faster_rcnn",
    "faster_rcnn": "mask_rcnn",
    "mask_rcnn": "mask_rcnn",
}
SCENE_SIZE = 192
SCENE_OBJECTS = 4
MAX_IMAGE_SIDE = 512


@dataclass(frozen=True)
class PageImage:
    """The image the figures are drawn on.

    Attributes:
        image: float (3, H, W) in [0, 1].
        description: how the page names it.
        target: the ground truth (`boxes`, `labels`, `masks`) of a generated scene, else None.
    """

    image: Tensor
    description: str
    target: dict | None = None


def load_page_image(path: Path) -> PageImage:
    """An image file as datasets read it (`seglab.data.images`), RGB, long side <= 512 px
    (selective search and the figures' grids stay legible and quick)."""
    image = load_image(path, 3).as_subclass(Tensor)
    image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    height, width = image.shape[-2:]
    scale = MAX_IMAGE_SIDE / max(height, width)
    if scale >= 1:
        return PageImage(image, str(path))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    # (3, H, W) -> (1, 3, H, W) -> (1, 3, h, w) -> (3, h, w)
    image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0]
    return PageImage(image.clamp(0, 1), f"{path} (resized to {size[1]} x {size[0]} px)")


def generated_image(seed: int) -> PageImage:
    """A scene of the built-in shapes generator, with its ground truth."""
    image, target = shapes_scene(seed, SCENE_SIZE, count=SCENE_OBJECTS)
    return PageImage(image, f"a generated shapes scene ({SCENE_SIZE} px, seed {seed})", target)


class Context:
    """The page's image and models.

    Args:
        page_image: the image every figure is drawn on.
        user_model: a model loaded from `--model`, or None.
        user_model_path: where it was loaded from (for the captions).
        trained: names of small models (`QUICK_RECIPES`) to train before use.
        seed: seeds the small models' initialisation and training.
        log: called with one line of progress (training of the small models).
    """

    def __init__(
        self,
        page_image: PageImage,
        *,
        user_model: nn.Module | None = None,
        user_model_path: Path | None = None,
        trained: frozenset[str] = frozenset(),
        seed: int = 0,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.page_image = page_image
        self.user_model = user_model
        self.user_model_path = user_model_path
        self.trained = trained
        self.seed = seed
        self.log = log
        self._quick: dict[str, nn.Module] = {}
        self._notes: dict[int, str] = {}

    @property
    def image(self) -> Tensor:
        return self.page_image.image

    def model(self, kind: str) -> nn.Module:
        """The model that shows figures of `kind`, in eval mode."""
        if self.user_model is not None and shows_kind(self.user_model, kind):
            return self.user_model
        name = QUICK_FOR_KIND[kind]
        if name not in self._quick:
            self._quick[name] = self._build(name)
        return self._quick[name]

    def note(self, model: nn.Module) -> str:
        """Which model a figure shows, for its caption."""
        if model is self.user_model:
            return f"the model {self.user_model_path} ({model.card.arch})"
        return self._notes[id(model)]

    def image_for(self, model: nn.Module) -> Tensor:
        """The page's image with as many channels as `model` takes (grey: luma)."""
        channels = model_channels(model)
        if channels == self.image.shape[0]:
            return self.image
        luma = torch.tensor([0.299, 0.587, 0.114])[:, None, None]
        return (self.image * luma).sum(dim=0, keepdim=True)

    def _build(self, name: str) -> nn.Module:
        recipe = QUICK_RECIPES[name]
        model = build_quick_model(name, seed=self.seed)
        if name not in self.trained:
            self._notes[id(model)] = f"{recipe.label} with its initial (untrained) weights"
            return model
        self.log(f"training {recipe.label} for {recipe.steps} steps")
        own = self._own_samples(recipe.crops, model)
        seconds = train_quick_model(model, name, seed=self.seed, samples=own)
        if recipe.crops:
            data = "generated crops" + (" and this page's objects" if own else "")
        elif own:
            data = "this page's scene alone (it has learnt this one scene)"
        else:
            data = "generated shapes, so expect rough results"
        self._notes[id(model)] = (
            f"{recipe.label} trained here for {recipe.steps} steps ({seconds:.0f} s) on {data}"
        )
        return model

    def _own_samples(self, crops: bool, model: nn.Module) -> list[tuple[Tensor, dict]] | None:
        """The page's own scene (detectors) or its objects (classifier), when generated.

        A selective-search detector gets the scene's proposals in its target, searched
        once by its own proposal generator (as the data's proposal cache gives them), not
        again at every step."""
        target = self.page_image.target
        if target is None:
            return None
        if crops:
            return object_crops(self.page_image.image, target, CROP_SIDE, copies=12)
        generator = getattr(model, "proposal_generator", None)
        if isinstance(generator, SelectiveSearchProposals):
            target = {**target, "proposals": generator.search(self.image_for(model))}
        return [(self.image_for(model), target)]


def shows_kind(model: nn.Module, kind: str) -> bool:
    """Whether `model` (a seglab model with its card) can show the figures of `kind`."""
    if model.card.arch not in KIND_ARCHS[kind]:
        return False
    if kind not in RPN_SINGLE_MAP:
        return True
    return has_single_map_rpn(model) == RPN_SINGLE_MAP[kind]


def has_single_map_rpn(model: nn.Module) -> bool:
    """Whether the model's RPN puts all its anchors on one feature map (Faster R-CNN §3.1)."""
    return len(model.proposal_generator.anchor_generator.sizes) == 1


def model_channels(model: nn.Module) -> int:
    """Image channels a model takes (its `in_channels`, or its transform's mean length)."""
    if hasattr(model, "in_channels"):
        return int(model.in_channels)
    transform = getattr(model, "transform", None)
    if transform is not None:
        return int(transform.image_mean.shape[0])
    normalize = getattr(model, "normalize", None)
    return int(normalize.mean.shape[0]) if normalize is not None else 3
