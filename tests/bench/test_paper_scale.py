"""The papers' scale timing runs what the papers ran: R-CNN's CNN on every region warped to
224 px, Fast R-CNN's once on the image scaled to a 600 px shorter side."""

from __future__ import annotations

import torch

from seglab.bench import lineage
from seglab.bench.paper_scale import paper_scale_features, random_boxes
from seglab.engine.config import load_config
from seglab.models.zoo import build_model


def recipe_model(name: str):
    recipe = load_config(lineage.RECIPES[name], ["data.root=/data"])
    return build_model(name, num_classes=3, **recipe.model.args).eval()


def test_every_region_is_warped_to_224_px_and_the_image_scaled_to_600_px():
    rcnn, fast_rcnn = recipe_model("rcnn"), recipe_model("fast_rcnn")
    rcnn.roi_heads.box_roi_pool.crops_per_batch = 4  # 9 regions: CNN calls of 4, 4 and 1
    seen = {"regions": [], "image": []}
    rcnn.roi_heads.box_roi_pool.cnn.register_forward_pre_hook(
        lambda module, args: seen["regions"].append(tuple(args[0].shape))
    )
    fast_rcnn.backbone.register_forward_pre_hook(
        lambda module, args: seen["image"].append(tuple(args[0].shape))
    )
    result = paper_scale_features(rcnn, fast_rcnn, torch.rand(3, 200, 300), regions=9)
    timed = seen["regions"][1:]  # after the untimed first call on 2 regions
    assert [shape[0] for shape in timed] == [4, 4, 1]
    assert {shape[1:] for shape in timed} == {(3, 224, 224)}
    assert seen["image"] == [(1, 3, 600, 900)] * 2  # once untimed, once timed
    assert result["regions"] == 9 and result["image_size"] == [600, 900]
    assert result["rcnn_features_s"] > 0 and result["fast_rcnn_features_s"] > 0


def test_random_boxes_lie_in_the_image_and_are_seeded():
    boxes = random_boxes(500, (600, 900))
    assert boxes.shape == (500, 4) and torch.equal(boxes, random_boxes(500, (600, 900)))
    assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes >= 0).all()
    assert (boxes[:, [0, 2]] <= 899).all() and (boxes[:, [1, 3]] <= 599).all()
