"""torchvision's detector names -> our model name and the builder arguments they imply.

A table without torch, so that `seglab convert --help` lists the names at once; the
conversion itself is `convert.py`.
"""

# torchvision's v1 detectors: RoIAlign without the half-pixel offset, and FrozenBatchNorm
# with eps=0 in its pretrained COCO checkpoints (a randomly initialised torchvision model
# has eps=1e-5: convert it with `--set frozen_bn_eps=1e-5`).
_V1 = {"roi_align_half_pixel": False, "frozen_bn_eps": 0.0}
# torchvision's v2 detectors (Li et al., "Benchmarking detection transfer learning with
# vision transformers", 2021): BatchNorm in the backbone, FPN and heads, two RPN convs, a
# 4-conv + 1-fc box head.
_V2 = {
    "roi_align_half_pixel": False, "norm": "bn", "fpn_norm": "bn", "rpn_head_convs": 2,
    "box_head": "conv", "head_norm": "bn",
}  # fmt: skip

# torchvision architecture -> (our model name, builder arguments it implies)
TORCHVISION_ARCHS: dict[str, tuple[str, dict]] = {
    "faster_rcnn_resnet50_fpn": ("faster_rcnn", {"backbone": "resnet50", **_V1}),
    "mask_rcnn_resnet50_fpn": ("mask_rcnn", {"backbone": "resnet50", **_V1}),
    "faster_rcnn_resnet50_fpn_v2": ("faster_rcnn", {"backbone": "resnet50", **_V2}),
    "mask_rcnn_resnet50_fpn_v2": ("mask_rcnn", {"backbone": "resnet50", **_V2}),
}
