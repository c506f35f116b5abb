"""The detector plan from a fingerprint of the training boxes (`seglab.data.box_fingerprint`):
exact values for constructed box sets, small objects -> a larger scale and smaller anchors,
crowded images -> more detections and RoIs, given options kept and followed."""

from __future__ import annotations

import numpy as np
import pytest

from seglab.data.box_fingerprint import (
    PLANNED_OPTIONS,
    box_fingerprint,
    plan_detector,
)
from seglab.errors import UserError
from seglab.models.detection.options import AUTO_OPTIONS

# the Mask R-CNN shapes recipe's foreground share and proposals before NMS
RECIPE = {"box_positive_fraction": 0.5, "rpn_pre_nms_top_n_train": 600,
          "rpn_pre_nms_top_n_test": 600}  # fmt: skip
ALL_AUTO = {name: "auto" for name in PLANNED_OPTIONS}


def box_set(*, size: float, per_image: int, images: int = 4, side=(256, 256), ratio=1.0):
    """A COCO dict and its image entries: `images` images of `side` (h, w), each holding
    `per_image` boxes of `sqrt(w * h) = size` and `h / w = ratio` (one size: every
    percentile is that size)."""
    width, height = size / np.sqrt(ratio), size * np.sqrt(ratio)
    entries = [{"id": k + 1, "height": side[0], "width": side[1]} for k in range(images)]
    annotations = [
        {"id": len(entries) * k + j, "image_id": k + 1, "bbox": [1, 1, width, height]}
        for k in range(images)
        for j in range(per_image)
    ]
    return {"annotations": annotations}, entries


def plan(size, per_image, *, given=None, fpn=True, **kwargs):
    coco, images = box_set(size=size, per_image=per_image, **kwargs)
    return plan_detector(box_fingerprint(coco, images), {**RECIPE, **ALL_AUTO, **(given or {})},
                         fpn=fpn)  # fmt: skip


def test_the_fingerprint_reads_the_kept_images_boxes_without_crowds_or_empty_boxes():
    coco = {
        "annotations": [
            {"image_id": 1, "bbox": [0, 0, 4, 16]},
            {"image_id": 1, "bbox": [0, 0, 9, 9], "iscrowd": 1},  # a crowd region
            {"image_id": 2, "bbox": [0, 0, 0, 5]},  # no area
            {"image_id": 7, "bbox": [0, 0, 5, 5]},  # an image the dataset left out
        ]
    }
    images = [{"id": 1, "height": 100, "width": 300}, {"id": 2, "height": 50, "width": 50}]
    found = box_fingerprint(coco, images)
    assert found.sizes.tolist() == [8.0] and found.aspect_ratios.tolist() == [4.0]
    assert found.image_sides.tolist() == [[100, 300]]
    assert found.objects_per_image.tolist() == [1, 0] and found.images == 2


def test_the_shapes_like_set_gives_back_the_shapes_recipe():
    """Small objects 16 px in 256 px images: 12 px at 192 px, the recipe's numbers."""
    planned = plan(16, 3)
    assert planned.values == {
        "min_size": 192,
        "max_size": 192,
        "anchor_sizes": (16, 32, 64, 128, 256),
        "aspect_ratios": (0.5, 1.0, 2.0),
        "detections_per_img": 100,
        "box_batch_size_per_image": 128,
        "rpn_post_nms_top_n_train": 300,
        "rpn_post_nms_top_n_test": 300,
    }
    assert planned.reason.startswith("model options auto: min_size=192, max_size=192, ")
    assert "planned from 4 training images, 12 boxes" in planned.reason


def test_small_objects_get_a_larger_scale_and_smaller_anchors_within_the_cost_cap():
    small = plan(8, 3).values  # 12 px would need 384 px: capped at 256 x 256 pixels
    assert small["min_size"] == small["max_size"] == 256
    assert small["anchor_sizes"] == (8, 16, 32, 64, 128)  # 8 px objects at 256 px
    upsampled = plan(4, 3, side=(64, 64)).values  # 12 px would need 192: at most 2 x 64
    assert upsampled["min_size"] == 128 and upsampled["anchor_sizes"][0] == 8


def test_large_objects_get_a_smaller_scale_down_to_the_floor():
    assert plan(64, 3).values["min_size"] == 128  # 12 px would need 48 px
    assert plan(24, 3).values["min_size"] == 128  # 128 exactly
    assert plan(12, 3).values["min_size"] == 256  # 12 px at 256


def test_crowded_images_get_more_detections_rois_and_proposals():
    crowded = plan(16, 150).values
    assert crowded["detections_per_img"] == 230  # 1.5 x 150, up to a multiple of 10
    assert crowded["box_batch_size_per_image"] == 256  # 4 x 150 / 0.5: capped at 256
    assert crowded["rpn_post_nms_top_n_train"] == 512  # 2 x the RoIs
    assert crowded["rpn_post_nms_top_n_test"] == 600  # 4 x 150: all 600 before NMS
    some = plan(16, 20).values  # 4 x 20 / 0.5 = 160 RoIs; 30 detections: COCO's 100
    assert some["box_batch_size_per_image"] == 160 and some["detections_per_img"] == 100
    assert plan(16, 90).values["rpn_post_nms_top_n_test"] == 400  # 4 x 90, up to 50s


def test_long_boxes_get_long_anchors_and_wide_images_a_longer_side():
    planned = plan(16, 3, ratio=4.0, side=(256, 512)).values
    assert planned["aspect_ratios"] == (0.5, 1.0, 2.0, 4.0)
    # 12 px objects need 192 x 384 px: over the 256 x 256 pixels, so 160 x 320
    assert planned["min_size"] == 160 and planned["max_size"] == 320
    assert plan(16, 3, ratio=1 / 8).values["aspect_ratios"] == (0.125, 0.25, 0.5, 1.0, 2.0)


def test_given_options_are_kept_and_the_plan_follows_them():
    given = {"min_size": 384, "max_size": 384, "rpn_pre_nms_top_n_test": 300}
    planned = plan(16, 3, given=given).values
    assert set(planned) == set(PLANNED_OPTIONS) - {"min_size", "max_size"}
    assert planned["anchor_sizes"] == (32, 64, 128, 256, 512)  # 24 px objects at 384 px
    assert planned["rpn_post_nms_top_n_test"] == 150  # half the given 300 before NMS


def test_one_feature_map_gets_the_sizes_of_the_small_median_and_large_objects():
    coco, images = box_set(size=16, per_image=10)
    large, _ = box_set(size=128, per_image=10)
    coco["annotations"] += large["annotations"]
    given = {"min_size": 256, "max_size": 256}
    planned = plan_detector(box_fingerprint(coco, images), {**ALL_AUTO, **given}, fpn=False)
    assert planned.values["anchor_sizes"] == (16, 64, 128)  # 16, 72 (median), 128 px


def test_no_boxes_to_plan_from_is_one_clear_line():
    coco, images = box_set(size=16, per_image=0)
    with pytest.raises(UserError, match="no boxes to plan from"):
        plan_detector(box_fingerprint(coco, images), ALL_AUTO, fpn=True)


def test_the_plan_covers_every_option_a_detector_may_leave_auto():
    assert set(PLANNED_OPTIONS) == set(AUTO_OPTIONS)
