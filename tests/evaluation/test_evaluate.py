"""`evaluate` over fake models and hand-made datasets: plumbing, loss, modes, dispatch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from synthetic_coco import make_gt, make_predictions, pycocotools_stats, write_json
from torch import nn

from seglab.errors import UserError
from seglab.evaluation import TILE_SIZE, evaluate, metric_value, primary_metric
from seglab.evaluation.classification import classification_metrics
from seglab.evaluation.confusion import ConfusionMatrix
from seglab.evaluation.semantic import semantic_metrics
from seglab.inference.tiling import predict_tiled
from seglab.models.segmentation.unet import UNet


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items, class_names, **attributes):
        self.items, self.class_names = items, class_names
        self.__dict__.update(attributes)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


class FakeModel(nn.Module):
    """Returns canned outputs per image id; its loss is the batch's first image id."""

    def __init__(self, task, outputs_by_id):
        super().__init__()
        self.task, self.outputs_by_id = task, outputs_by_id
        self.weight = nn.Parameter(torch.zeros(1))
        self.seen_modes = []

    def forward_with_losses(self, images, targets):
        self.seen_modes.append((self.training, torch.is_grad_enabled()))
        outputs = [self.outputs_by_id[target["image_id"]] for target in targets]
        first_id = float(targets[0]["image_id"])
        return outputs, {"a": torch.tensor(first_id), "b": torch.tensor(1.0) + self.weight[0]}


def semantic_case():
    targets = {1: torch.tensor([[0, 1], [1, 255]]), 2: torch.tensor([[2, 2], [0, 1]])}
    predictions = {1: torch.tensor([[0, 1], [0, 2]]), 2: torch.tensor([[2, 1], [0, 1]])}
    items = [
        (torch.zeros(3, 2, 2), {"semantic_mask": targets[i], "image_id": i}) for i in (2, 1, 1)
    ]
    outputs = {
        i: {"logits": nn.functional.one_hot(p, 3).permute(2, 0, 1).float()}
        for i, p in predictions.items()
    }
    return items, targets, predictions, outputs


def test_semantic_metrics_and_image_weighted_loss():
    items, targets, predictions, outputs = semantic_case()
    model = FakeModel("semantic", outputs).train()
    metrics = evaluate(model, ListDataset(items, ["a", "b"]), batch_size=2)
    expected = ConfusionMatrix(3)
    for _, target in items:
        expected.update(predictions[target["image_id"]], targets[target["image_id"]])
    assert {k: v for k, v in metrics.items() if k != "loss"} == semantic_metrics(
        expected.matrix, ["background", "a", "b"]
    )
    assert list(metrics["per_class"]) == ["background", "a", "b"]
    # batches: ids (2, 1) then (1,): losses a + b = 2 + 1 and 1 + 1, weighted 2 and 1 images.
    assert metrics["loss"] == pytest.approx((3 * 2 + 2 * 1) / 3)
    # evaluated in eval mode without gradients; the caller's mode comes back.
    assert model.seen_modes == [(False, False), (False, False)]
    assert model.training


def test_semantic_logits_smaller_than_the_mask_are_refused():
    """Scoring the centre of the mask only (a valid U-Net's forward) is the defect refused."""
    item = (torch.zeros(3, 6, 6), {"semantic_mask": torch.zeros(6, 6, dtype=torch.int64),
                                   "image_id": 0})  # fmt: skip
    model = FakeModel("semantic", {0: {"logits": torch.zeros(2, 2, 2)}})
    with pytest.raises(ValueError, match=r"logits \(2, 2\) must cover the whole mask \(6, 6\)"):
        evaluate(model, ListDataset([item], ["a"]))


@pytest.mark.parametrize("side", [252, 256])
def test_valid_unet_is_scored_on_every_pixel_of_an_image_of_any_size(side):
    """252 is an allowed input side for depth 3 (its forward pass outputs the centre 164 px);
    256 is not (its forward pass refuses it). Both are scored on all their pixels, with the
    overlap-tile probabilities `seglab predict` takes, and the model's loss of those logits."""
    torch.manual_seed(0)
    model = UNet(in_channels=1, num_classes=3, base_channels=4, depth=3, padding="valid",
                 norm="none", init="he")  # fmt: skip
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(module.bias, std=0.1)  # a class map with all classes in it
    image = torch.rand(1, side, side)
    mask = torch.randint(0, 3, (side, side))
    mask[:5] = 255  # ignored rows
    item = (image, {"semantic_mask": mask, "image_id": 0})
    metrics = evaluate(model, ListDataset([item], ["a", "b"]))
    probabilities = predict_tiled(model, image, tile_size=TILE_SIZE)
    expected = ConfusionMatrix(3)
    expected.update(probabilities.argmax(0), mask)
    assert {k: v for k, v in metrics.items() if k != "loss"} == semantic_metrics(
        expected.matrix, ["background", "a", "b"]
    )
    loss = nn.functional.cross_entropy(probabilities.log()[None], mask[None], ignore_index=255)
    assert metrics["loss"] == pytest.approx(float(loss), rel=1e-5)  # float32 log of softmax
    assert len(set(probabilities.argmax(0).flatten().tolist())) == 3


def test_classification_metrics():
    labels = {0: 0, 1: 1, 2: 1, 3: 2}
    predicted = {0: 0, 1: 1, 2: 0, 3: 2}
    outputs = {
        i: {"logits": nn.functional.one_hot(torch.tensor(p), 3).float()}
        for i, p in predicted.items()
    }
    items = [
        (torch.zeros(3, 4, 4), {"labels": torch.tensor(labels[i]), "image_id": i}) for i in labels
    ]
    metrics = evaluate(
        FakeModel("classification", outputs), ListDataset(items, ["x", "y", "z"]), batch_size=3
    )
    expected = ConfusionMatrix(3, ignore_index=None)
    expected.update(torch.tensor(list(predicted.values())), torch.tensor(list(labels.values())))
    assert {k: v for k, v in metrics.items() if k != "loss"} == classification_metrics(
        expected.matrix, ["x", "y", "z"]
    )
    assert metrics["accuracy"] == 0.75
    assert primary_metric(metrics, "classification") == ("accuracy", 0.75)


def detection_case(seed: int):
    """A synthetic COCO ground truth, and model outputs that are random predictions on it."""
    gt = make_gt(seed)
    predictions = make_predictions(gt, seed, masks=True)
    label_of = {1: 1, 3: 2, 7: 3}
    outputs, items = {}, []
    for image in gt["images"]:
        mine = [p for p in predictions if p["image_id"] == image["id"]]
        boxes = torch.tensor([p["bbox"] for p in mine], dtype=torch.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        masks = [mask_utils.decode(p["segmentation"]) for p in mine]
        height, width = image["height"], image["width"]
        outputs[image["id"]] = {
            "boxes": boxes.float(),
            "labels": torch.tensor([label_of[p["category_id"]] for p in mine], dtype=torch.int64),
            "scores": torch.tensor([p["score"] for p in mine]),
            "masks": torch.from_numpy(np.stack(masks)).float()[:, None]
            if masks
            else torch.zeros(0, 1, height, width),
        }
        items.append((torch.zeros(3, height, width), {"image_id": image["id"]}))
    dataset = ListDataset(items, ["circle", "square", "tri"], coco_gt=gt, category_ids=[1, 3, 7])
    return dataset, outputs, gt, predictions


@pytest.mark.parametrize("task", ["detection", "instance"])
def test_detection_and_instance_metrics_equal_pycocotools(tmp_path, task):
    dataset, outputs, gt, predictions = detection_case(seed=5)
    metrics = evaluate(FakeModel(task, outputs), dataset, batch_size=3)
    iou_types = ["bbox", "segm"] if task == "instance" else ["bbox"]
    assert sorted(metrics) == sorted(["loss", "per_class_AP", *iou_types])
    for iou_type in iou_types:
        reference = pycocotools_stats(*write_json(tmp_path, gt, predictions), iou_type)
        assert 0.05 < reference[0] < 0.95
        assert list(metrics[iou_type].values()) == pytest.approx(reference, abs=1e-3)
        # each class's AP is COCOeval's AP with that category alone (params.catIds)
        per_class = metrics["per_class_AP"][iou_type]
        assert list(per_class) == ["circle", "square", "tri"]
        for name, category_id in zip(per_class, [1, 3, 7], strict=True):
            alone = pycocotools_stats(*write_json(tmp_path, gt, predictions), iou_type,
                                      category_ids=[category_id])  # fmt: skip
            assert per_class[name]["AP"] == pytest.approx(alone[0], abs=1e-9)
            assert per_class[name]["AP50"] == pytest.approx(alone[1], abs=1e-9)
    name, value = primary_metric(metrics, task)
    assert name == ("segm.AP" if task == "instance" else "bbox.AP")
    assert value == metrics[name.split(".")[0]]["AP"]


def test_instance_masks_outside_the_image_frame_are_refused():
    dataset, outputs, _, _ = detection_case(seed=5)
    for output in outputs.values():
        output["masks"] = output["masks"][..., :-1]
    model = FakeModel("instance", outputs).train()
    with pytest.raises(ValueError, match="must be in the image frame"):
        evaluate(model, dataset)
    assert model.training  # the caller's mode comes back on an error too


def test_instance_model_without_masks_is_refused():
    dataset, outputs, _, _ = detection_case(seed=5)
    for output in outputs.values():
        del output["masks"]
    with pytest.raises(ValueError, match="must output 'masks'"):
        evaluate(FakeModel("instance", outputs), dataset)
    assert "segm" not in evaluate(FakeModel("detection", outputs), dataset)


def test_instance_ground_truth_without_area_is_refused_before_the_pass():
    dataset, outputs, _, _ = detection_case(seed=5)
    del dataset.coco_gt["annotations"][0]["area"]
    model = FakeModel("instance", outputs)
    with pytest.raises(UserError, match="lacks area"):
        evaluate(model, dataset)
    assert model.seen_modes == []


def test_empty_dataset_is_a_user_error():
    with pytest.raises(UserError, match="no images to evaluate"):
        evaluate(FakeModel("semantic", {}), ListDataset([], ["a"]))


@pytest.mark.parametrize(
    "dotted,expected",
    [("segm.AP", 0.4), ("loss", 0.8), ("bbox.AP", None), ("segm.AP.x", None), ("name", None)],
)
def test_metric_value_of_a_dotted_name(dotted, expected):
    metrics = {"loss": 0.8, "segm": {"AP": 0.4}, "name": "mask_rcnn"}
    assert metric_value(metrics, dotted) == expected


def test_primary_metric_of_each_task():
    assert primary_metric({"mIoU": 0.5, "dice": 0.6}, "semantic") == ("mIoU", 0.5)
    assert primary_metric({"bbox": {"AP": 0.25}}, "detection") == ("bbox.AP", 0.25)
