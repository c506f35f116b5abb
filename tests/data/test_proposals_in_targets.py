"""Selective-search proposals in the targets of R-CNN and Fast R-CNN: read from the cache
by `build_dataset(..., proposals=...)`, moved with the image by the augmentation, and left
alone by the sanitizing of the objects' boxes."""

from __future__ import annotations

import torch
from torchvision import tv_tensors

from seglab.data import DataConfig, build_dataset
from seglab.data.proposals import load_proposals
from seglab.data.shapes import generate_shapes
from seglab.data.transforms import SanitizeObjectBoxes
from seglab.ops.selective_search import ProposalSettings

SETTINGS = ProposalSettings(mode="single", max_proposals=40)


def test_proposals_follow_the_flip_of_their_image(tmp_path):
    root = generate_shapes(tmp_path / "shapes", task="instance", train=3, val=1, size=64, seed=2)
    config = DataConfig(root=str(root), hflip=1.0)  # every image flipped left-right
    flipped = build_dataset(config, "train", task="detection", train=True, proposals=SETTINGS)
    image_ids = [info["id"] for info in flipped.images]
    cached = load_proposals(root, "train", image_ids, SETTINGS, workers=0, progress=False)
    plain = build_dataset(config, "val", task="detection", train=False)
    assert "proposals" not in plain[0][1]  # only asked for by the models that read them
    for index in range(len(image_ids)):
        image, target = flipped[index]
        boxes = torch.from_numpy(cached[target["image_id"]])
        assert len(boxes) > 0 and isinstance(target["proposals"], tv_tensors.BoundingBoxes)
        width = image.shape[-1]
        expected = torch.stack(
            [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1
        )
        torch.testing.assert_close(target["proposals"].as_subclass(torch.Tensor), expected)


def test_sanitizing_drops_objects_not_proposals():
    """As many proposals as objects: torchvision's SanitizeBoundingBoxes would drop the
    proposals at the positions of the degenerate objects too."""
    canvas = (50, 50)
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor([[5.0, 5.0, 20.0, 20.0], [30.0, 30.0, 30.0, 40.0]]),  # 2nd: no width
            format="XYXY",
            canvas_size=canvas,
        ),  # fmt: skip
        "labels": torch.tensor([1, 2]),
        "proposals": tv_tensors.BoundingBoxes(
            torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 45.0, 40.0]]),
            format="XYXY",
            canvas_size=canvas,
        ),  # fmt: skip
    }
    image = tv_tensors.Image(torch.zeros(3, *canvas))
    _, sanitized = SanitizeObjectBoxes(min_size=1.0)(image, target)
    assert sanitized["labels"].tolist() == [1] and len(sanitized["boxes"]) == 1
    assert torch.equal(sanitized["proposals"], target["proposals"])
