"""The model card: what a model is beyond its weights, carried with it and saved with them.

Every model built by seglab has one, `model.card` (`seglab.models.zoo.build` gives it). The
trainer builds its model from a card that also names the classes and the recipe;
`save_model` writes the card into the safetensors metadata beside the weights and
`load_model` builds the model again from it. Whoever needs to know what a model was built
or trained with (evaluation, `seglab predict`, `seglab eval`) reads `model.card`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelCard:
    """What `load_model` needs to rebuild a model, and what it was trained on.

    Attributes:
        arch: the model name, a key of `seglab.MODEL_BUILDERS` (`mask_rcnn`).
        arch_args: the builder's keyword arguments (`num_classes`, `backbone`, ...).
        task: `classification`, `detection`, `instance` or `semantic`.
        class_names: the dataset's classes, background excluded: labels 1..K (0..K-1 for
            the classifier).
        category_ids: the COCO category id of each label 1..K; None when the labels are the
            ids (data that is not COCO, converted or untrained models).
        config: the recipe the model was trained with, as a dict (`seglab.engine.config`);
            empty when seglab did not train it.
    """

    arch: str
    arch_args: dict[str, Any]
    task: str
    class_names: tuple[str, ...] = ()
    category_ids: tuple[int, ...] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> dict[str, Any]:
        """The training data settings (the recipe's `data:` section); empty without one."""
        return self.config.get("data") or {}

    @property
    def in_channels(self) -> int:
        """The image channels the model takes (its `in_channels` argument, 3 by default)."""
        return int(self.arch_args.get("in_channels", 3))

    def label_category_ids(self) -> list[int]:
        """The COCO category id of each label 1..K (the labels themselves without COCO data)."""
        if self.category_ids is not None:
            return list(self.category_ids)
        return list(range(1, len(self.class_names) + 1))

    def to_metadata(self) -> dict[str, str]:
        """The card as safetensors metadata (str -> str); the task follows from `arch`."""
        metadata = {
            "seglab_arch": self.arch,
            "seglab_args": json.dumps(self.arch_args),
            "seglab_classes": json.dumps(list(self.class_names)),
            "seglab_config": json.dumps(self.config),
        }
        if self.category_ids is not None:
            metadata["seglab_category_ids"] = json.dumps([int(c) for c in self.category_ids])
        return metadata

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], *, task: str) -> ModelCard:
        """The card `to_metadata` wrote (files of every seglab version so far)."""
        category_ids = json.loads(metadata.get("seglab_category_ids", "null"))
        return cls(
            arch=metadata["seglab_arch"],
            arch_args=json.loads(metadata["seglab_args"]),
            task=task,
            class_names=tuple(json.loads(metadata["seglab_classes"])),
            category_ids=None if category_ids is None else tuple(category_ids),
            config=json.loads(metadata.get("seglab_config", "{}")),
        )
