"""The detectors' `_paper` recipes (issue 21): each paper's training rules written out in
the recipe itself (not left to a default), a step schedule at the paper's fractions, every
reduction for the CPU named in a comment, and one training step that runs."""

from __future__ import annotations

import pytest
import torch
import yaml

import seglab
from seglab.engine.config import config_warnings, load_config, recipes_dir
from seglab.engine.optim import build_optimizer, build_scheduler

FAST_RCNN_HEAD = {  # Fast R-CNN §2.3, eq. (3), §3
    "box_fg_iou_thresh": 0.5, "box_bg_iou_thresh": 0.5, "box_positive_fraction": 0.25,
    "box_loss_beta": 1.0, "box_coder_weights": [10.0, 10.0, 5.0, 5.0],
    "box_predictor_init_std": [0.01, 0.001],
}  # fmt: skip
FASTER_RPN = {  # Faster R-CNN §3.1.2, §3.1.3, §3.3
    "rpn_fg_iou_thresh": 0.7, "rpn_bg_iou_thresh": 0.3, "rpn_batch_size_per_image": 256,
    "rpn_positive_fraction": 0.5, "rpn_nms_thresh": 0.7, "rpn_allowed_border": 0,
    "aspect_ratios": [0.5, 1.0, 2.0],
}  # fmt: skip
SGD = {"optimizer": "sgd", "momentum": 0.9, "warmup_steps": 0, "schedule": "step", "gamma": 0.1}

# recipe -> (model rules, train rules, milestones as fractions of max_steps)
RULES = {
    "rcnn_r18_c4_shapes_paper": (
        {"second_stage": "svm", "proposal_mode": "fast", "max_proposals": 2000,
         "box_fg_iou_thresh": 0.5, "box_batch_size_per_image": 64, "box_positive_fraction": 0.25,
         "box_nms_thresh": 0.3, "fpn": False},
        {**SGD, "lr": 0.001, "weight_decay": 0.0005, "batch_size": 2},
        [2 / 7, 4 / 7, 6 / 7],
    ),
    "fast_rcnn_r18_c4_shapes_paper": (
        {**FAST_RCNN_HEAD, "roi_pool": "max", "box_roi_size": 7, "box_bg_iou_floor": 0.1,
         "box_batch_size_per_image": 64, "box_nms_thresh": 0.3, "max_proposals": 2000,
         "fpn": False},
        {**SGD, "lr": 0.001, "weight_decay": 0.0005, "batch_size": 2},
        [3 / 4],
    ),
    "faster_rcnn_r18_c4_shapes_paper": (
        {**FAST_RCNN_HEAD, **FASTER_RPN, "rpn_box_loss_normalization": "locations",
         "rpn_box_loss_weight": 10.0, "rpn_post_nms_top_n_train": 2000,
         "rpn_post_nms_top_n_test": 300, "roi_pool": "max", "fpn": False,
         "box_bg_iou_floor": 0.1, "box_nms_thresh": 0.3},
        {**SGD, "lr": 0.001, "weight_decay": 0.0005, "batch_size": 1},
        [3 / 4],
    ),
    "mask_rcnn_r18_fpn_shapes_paper": (
        {**FAST_RCNN_HEAD, **FASTER_RPN, "fpn": True, "roi_pool": "align", "sampling_ratio": 2,
         "box_batch_size_per_image": 512, "mask_roi_size": 14, "mask_head_convs": 4,
         "rpn_post_nms_top_n_test": 1000, "detections_per_img": 100, "box_nms_thresh": 0.5},
        {**SGD, "lr": 0.02 * 2 / 16, "weight_decay": 0.0001, "batch_size": 2},
        [3 / 4],
    ),
}  # fmt: skip


def test_every_detector_has_a_paper_recipe():
    assert set(RULES) <= {path.stem for path in recipes_dir().glob("*_paper.yaml")}


@pytest.mark.parametrize("name", sorted(RULES))
def test_the_papers_rules_are_written_in_the_recipe(name):
    """Each rule is a key of the file itself (a default would hide it from the reader)."""
    written = yaml.safe_load((recipes_dir() / f"{name}.yaml").read_text())
    model_rules, train_rules, fractions = RULES[name]
    assert {key: written["model"].get(key, "missing") for key in model_rules} == model_rules
    assert {key: written["train"].get(key, "missing") for key in train_rules} == train_rules
    train = written["train"]
    assert train["milestones"] == [round(f * train["max_steps"]) for f in fractions]
    config = load_config(name)
    assert config_warnings(config) == []


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_reduction_is_named_in_a_comment(name):
    text = (recipes_dir() / f"{name}.yaml").read_text()
    header = text.split("\nseed:")[0]
    assert "Reduced for the CPU, and only these:" in header
    for reduced in ("backbone", "image size", "steps"):
        assert f"# - {reduced}" in header
    reduced_lines = [line for line in text.splitlines() if "(reduced, see above)" in line]
    assert reduced_lines, "each reduced value points at the header"


def scene(size: int):
    """An image with two rectangles, its target with masks and selective-search-like regions."""
    image = torch.full((3, size, size), 0.2)
    boxes = torch.tensor([[20.0, 30.0, 90.0, 100.0], [120.0, 60.0, 200.0, 180.0]]) * size / 256
    masks = torch.zeros((2, size, size), dtype=torch.uint8)
    for index, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        image[:, y0:y1, x0:x1] = 0.8 - 0.4 * index
        masks[index, y0:y1, x0:x1] = 1
    jitter = torch.tensor([[0.0, 0, 0, 0], [4, -3, 2, 5], [-6, 2, -4, -2], [30, 30, 40, 40]])
    regions = (boxes[:, None] + jitter[None]).reshape(-1, 4).clamp(0, size)
    target = {"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks,
              "proposals": regions, "image_id": 0}  # fmt: skip
    return image, target


@pytest.mark.parametrize("name", sorted(RULES))
def test_one_training_step_of_the_recipe_runs(name):
    config = load_config(name)
    torch.manual_seed(0)
    model = seglab.build_model(config.model.name, num_classes=4, **config.model.args).train()
    optimizer = build_optimizer(model, config.train)
    scheduler = build_scheduler(optimizer, config.train)
    batch = [scene(256) for _ in range(config.train.batch_size)]
    _, losses = model.forward_with_losses([i for i, _ in batch], [t for _, t in batch])
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(config.train.lr)
