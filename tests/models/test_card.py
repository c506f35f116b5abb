"""The model card: its metadata keys (those model files have always had) and its readings."""

from __future__ import annotations

import json

from seglab.models.card import ModelCard

CARD = ModelCard(
    arch="mask_rcnn", arch_args={"num_classes": 3, "in_channels": 1}, task="instance",
    class_names=("circle", "square"), category_ids=(4, 9),
    config={"seed": 0, "data": {"image_size": 96}},
)  # fmt: skip


def test_metadata_round_trip_with_the_keys_model_files_use():
    metadata = CARD.to_metadata()
    assert metadata == {
        "seglab_arch": "mask_rcnn",
        "seglab_args": json.dumps({"num_classes": 3, "in_channels": 1}),
        "seglab_classes": json.dumps(["circle", "square"]),
        "seglab_config": json.dumps({"seed": 0, "data": {"image_size": 96}}),
        "seglab_category_ids": "[4, 9]",
    }
    assert all(isinstance(value, str) for value in metadata.values())  # safetensors' rule
    assert ModelCard.from_metadata(metadata, task="instance") == CARD


def test_without_coco_ids_the_labels_are_the_ids_and_no_key_is_written():
    card = ModelCard("unet", {"num_classes": 3}, "semantic", class_names=("a", "b"))
    assert "seglab_category_ids" not in card.to_metadata()
    assert card.label_category_ids() == [1, 2] and CARD.label_category_ids() == [4, 9]


def test_training_data_settings_and_channels():
    assert CARD.data == {"image_size": 96} and CARD.in_channels == 1
    untrained = ModelCard("cnn", {"num_classes": 2}, "classification")
    assert untrained.data == {} and untrained.in_channels == 3
