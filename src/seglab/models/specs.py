"""Model names -> task and parts: the table that `seglab.models.zoo` builds models from.

Nothing here imports torch: a config's `model.name` is checked, and its task known, before
PyTorch is loaded (`seglab train`'s config mistakes answer at once). A model's code is
imported when its parts are first asked for.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from seglab.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from seglab.ops.selective_search import ProposalSettings

Builder = Callable[..., "nn.Module"]


@dataclass(frozen=True)
class ModelSpec:
    """A model name's task and parts.

    The task is known before the model is built, so that the trainer can open the task's
    dataset and read `num_classes: auto` from it. `parts` returns the builder and the class
    whose keyword arguments it takes (an options dataclass, or the model class itself); it
    is a function so that a model's code is imported when the model is first asked for (the
    detectors import torchvision: seconds that `import seglab` and `seglab --help` spare).
    """

    task: str
    parts: Callable[[], tuple[Builder, type]]

    def build(self, **kwargs: Any) -> nn.Module:
        builder, _ = self.parts()
        return builder(**kwargs)

    def parameters(self) -> list[str]:
        """The keyword arguments the builder accepts, in order."""
        _, options = self.parts()
        return parameter_names(options)


def _cnn() -> tuple[Builder, type]:
    from seglab.models.classification.cnn import CNNClassifier, build_cnn

    return build_cnn, CNNClassifier


def _rcnn() -> tuple[Builder, type]:
    from seglab.models.detection.builders import RCNNOptions, build_rcnn

    return build_rcnn, RCNNOptions


def _fast_rcnn() -> tuple[Builder, type]:
    from seglab.models.detection.builders import FastRCNNOptions, build_fast_rcnn

    return build_fast_rcnn, FastRCNNOptions


def _faster_rcnn() -> tuple[Builder, type]:
    from seglab.models.detection.builders import FasterRCNNOptions, build_faster_rcnn

    return build_faster_rcnn, FasterRCNNOptions


def _mask_rcnn() -> tuple[Builder, type]:
    from seglab.models.detection.builders import MaskRCNNOptions, build_mask_rcnn

    return build_mask_rcnn, MaskRCNNOptions


def _unet() -> tuple[Builder, type]:
    from seglab.models.segmentation.unet import UNet, build_unet

    return build_unet, UNet


# The task of each model: docs/conventions.md, Models.
MODEL_SPECS: dict[str, ModelSpec] = {
    "cnn": ModelSpec("classification", _cnn),
    "rcnn": ModelSpec("detection", _rcnn),
    "fast_rcnn": ModelSpec("detection", _fast_rcnn),
    "faster_rcnn": ModelSpec("detection", _faster_rcnn),
    "mask_rcnn": ModelSpec("instance", _mask_rcnn),
    "unet": ModelSpec("semantic", _unet),
}


def parameter_names(target: Callable[..., Any] | type) -> list[str]:
    """The keyword names `target` (a dataclass, or any callable) accepts, in order.

    A dataclass gives its `__init__` fields; `*args` and `**kwargs` are left out.
    """
    if dataclasses.is_dataclass(target):
        return [f.name for f in dataclasses.fields(target) if f.init]
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    parameters = inspect.signature(target).parameters.values()
    return [p.name for p in parameters if p.kind not in variadic]


def model_spec(name: str) -> ModelSpec:
    """The spec of model `name`; UserError naming the known models when there is none."""
    if name not in MODEL_SPECS:
        known = ", ".join(sorted(MODEL_SPECS))
        raise UserError(f"unknown model name {name!r}; known models: {known}")
    return MODEL_SPECS[name]


def model_task(name: str) -> str:
    """The task (`classification`, `detection`, `instance`, `semantic`) of model `name`."""
    return model_spec(name).task


def builder_parameters(name: str) -> list[str]:
    """The keyword arguments the builder of model `name` accepts, in order."""
    return model_spec(name).parameters()


def data_proposals(name: str, arguments: dict) -> ProposalSettings | None:
    """The proposals model `name` built with `arguments` reads from its data's targets
    (`seglab.data.build_dataset(..., proposals=...)`), or None for a model that makes its
    own (the RPN) or has none. Known before the model is built (no `num_classes` needed)."""
    from seglab.models.detection.options import SelectiveSearchOptions

    _, options_class = model_spec(name).parts()
    if not issubclass(options_class, SelectiveSearchOptions):
        return None
    # num_classes does not change the proposals: any valid value when not yet known
    return options_class(**{"num_classes": 2, **arguments}).proposal_settings()
