"""Wiring of the two-stage detectors from shared parts.

Faster R-CNN and Mask R-CNN are built from the same backbone, RPN, RoI pooling and box
branch; Mask R-CNN adds a mask branch. Diff `build_faster_rcnn` and `build_mask_rcnn` to
see the lineage of the papers. Every knob is a keyword argument with torchvision's default
(except `roi_aligned=True`, the RoIAlign of the Mask R-CNN paper; converted torchvision
v1 checkpoints need `roi_aligned=False`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import Tensor, nn

from seglab.errors import UserError
from seglab.models.backbones.resnet import ResNetBackbone, set_frozen_bn_eps
from seglab.models.detection.box_head import BoxPredictor, ConvFCHead, TwoMLPHead
from seglab.models.detection.faster_rcnn import FasterRCNN
from seglab.models.detection.mask_head import MaskHead, MaskPredictor
from seglab.models.detection.mask_rcnn import MaskRCNN
from seglab.models.detection.roi_heads import RoIHeads
from seglab.models.detection.rpn import RegionProposalNetwork, RPNHead
from seglab.models.detection.transform import DetectionTransform
from seglab.models.inputs import IMAGENET_MEAN, IMAGENET_STD
from seglab.models.necks.fpn import FPN
from seglab.ops.anchors import AnchorGenerator
from seglab.ops.roi_align import MultiScaleRoIAlign

RESNET_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}


@dataclass(frozen=True)
class DetectorOptions:
    """The builders' keyword arguments, with torchvision's defaults."""

    num_classes: int
    backbone: str = "resnet50"
    fpn: bool = True
    fpn_channels: int = 256
    norm: str = "frozen_bn"  # backbone norm: frozen_bn | bn | gn
    frozen_bn_eps: float = 1e-5  # torchvision's pretrained COCO detectors use 0.0
    fpn_norm: str | None = None  # None (the paper, torchvision v1) | bn | gn
    trainable_stages: int = 3
    in_channels: int = 3
    min_size: int | tuple[int, ...] = 800
    max_size: int = 1333
    image_mean: tuple[float, ...] = IMAGENET_MEAN
    image_std: tuple[float, ...] = IMAGENET_STD
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)  # one per FPN level
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_score_thresh: float = 0.0
    rpn_head_convs: int = 1  # torchvision's v2 detectors: 2
    roi_aligned: bool = True
    sampling_ratio: int = 2
    box_roi_size: int = 7
    box_head: str = "mlp"  # mlp: fc6 + fc7 (Fast R-CNN) | conv: 4 convs + 1 fc (v2)
    representation_size: int = 1024
    head_norm: str | None = None  # None | bn: BatchNorm in the conv box head and mask head
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    detections_per_img: int = 100
    mask_roi_size: int = 14
    mask_head_channels: int = 256
    mask_head_convs: int = 4

    def __post_init__(self):
        if self.backbone not in RESNET_DEPTHS:
            known = ", ".join(RESNET_DEPTHS)
            raise UserError(f"unknown detector backbone {self.backbone!r}; use one of {known}")
        if self.norm not in ("frozen_bn", "bn", "gn"):
            raise UserError(f"unknown norm {self.norm!r}; use frozen_bn, bn or gn")
        if self.box_head not in ("mlp", "conv"):
            raise UserError(f"unknown box_head {self.box_head!r}; use mlp or conv")
        if self.head_norm not in (None, "bn"):
            raise UserError(f"unknown head_norm {self.head_norm!r}; use bn or leave it unset")
        if self.num_classes < 2:
            raise UserError(f"num_classes={self.num_classes}: detectors count the background, "
                            "so K object classes need num_classes=K+1 >= 2")  # fmt: skip


def build_faster_rcnn(**options) -> FasterRCNN:
    """Faster R-CNN: backbone (+FPN), RPN, RoIAlign, two-FC box head."""
    o = DetectorOptions(**options)
    backbone = _backbone(o)
    return FasterRCNN(
        transform=_transform(o, masks=False),
        backbone=backbone,
        rpn=_rpn(o, backbone),
        roi_heads=RoIHeads(**_box_branch(o, backbone), **_roi_options(o)),
    )


def build_mask_rcnn(**options) -> MaskRCNN:
    """Mask R-CNN: Faster R-CNN + a mask branch on 14x14 RoIAlign features."""
    o = DetectorOptions(**options)
    backbone = _backbone(o)
    return MaskRCNN(
        transform=_transform(o, masks=True),
        backbone=backbone,
        rpn=_rpn(o, backbone),
        roi_heads=RoIHeads(
            **_box_branch(o, backbone), **_mask_branch(o, backbone), **_roi_options(o)
        ),  # fmt: skip
    )


class ResNetFeatures(nn.Module):
    """ResNet stages c2..c5, then FPN levels p2..p5 + pool (or only c5 without FPN).

    (B, 3, H, W) -> ordered dict name -> (B, out_channels, H / stride, W / stride).
    """

    def __init__(self, body: ResNetBackbone, fpn: FPN | None, out_channels: int):
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = out_channels

    @property
    def level_names(self) -> list[str]:
        """Names of the levels the RoIs are pooled from (not the extra pool level)."""
        return ["p2", "p3", "p4", "p5"] if self.fpn is not None else ["c5"]

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        stages = self.body(images)
        if self.fpn is None:
            return OrderedDict(c5=stages["c5"])
        return self.fpn(stages)


def _backbone(o: DetectorOptions) -> ResNetFeatures:
    body = ResNetBackbone(
        RESNET_DEPTHS[o.backbone], norm=o.norm, trainable_stages=o.trainable_stages,
        in_channels=o.in_channels,
    )  # fmt: skip
    set_frozen_bn_eps(body, o.frozen_bn_eps)
    if not o.fpn:
        return ResNetFeatures(body, None, body.out_channels[-1])
    fpn = FPN(body.out_channels, o.fpn_channels, extra_pool=True, norm=o.fpn_norm)
    return ResNetFeatures(body, fpn, o.fpn_channels)


def _transform(o: DetectorOptions, *, masks: bool) -> DetectionTransform:
    mean, std = tuple(o.image_mean), tuple(o.image_std)
    if len(mean) != o.in_channels:  # e.g. grey images with the RGB defaults: their average
        mean = (sum(mean) / len(mean),) * o.in_channels
        std = (sum(std) / len(std),) * o.in_channels
    return DetectionTransform(
        min_size=o.min_size, max_size=o.max_size, image_mean=mean, image_std=std,
        resize_masks=masks,
    )  # fmt: skip


def _rpn(o: DetectorOptions, backbone: ResNetFeatures) -> RegionProposalNetwork:
    if o.fpn:  # one anchor size per level (FPN §4.1), all aspect ratios on every level
        sizes = tuple((size,) for size in o.anchor_sizes)
    else:  # a single level carries every size (Faster R-CNN §3.1.1: 3 scales x 3 ratios)
        sizes = (tuple(o.anchor_sizes),)
    ratios = (tuple(o.aspect_ratios),) * len(sizes)
    anchors = AnchorGenerator(sizes, ratios)
    return RegionProposalNetwork(
        anchor_generator=anchors,
        head=RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0],
                     o.rpn_head_convs),
        fg_iou_thresh=o.rpn_fg_iou_thresh, bg_iou_thresh=o.rpn_bg_iou_thresh,
        batch_size_per_image=o.rpn_batch_size_per_image,
        positive_fraction=o.rpn_positive_fraction,
        pre_nms_top_n={"training": o.rpn_pre_nms_top_n_train,
                       "testing": o.rpn_pre_nms_top_n_test},
        post_nms_top_n={"training": o.rpn_post_nms_top_n_train,
                        "testing": o.rpn_post_nms_top_n_test},
        nms_thresh=o.rpn_nms_thresh, score_thresh=o.rpn_score_thresh,
    )  # fmt: skip


def _box_branch(o: DetectorOptions, backbone: ResNetFeatures) -> dict[str, nn.Module]:
    channels, size = backbone.out_channels, o.box_roi_size
    if o.box_head == "mlp":
        head = TwoMLPHead(channels * size**2, o.representation_size)
    else:
        head = ConvFCHead(channels, size, o.representation_size, norm=o.head_norm)
    return {
        "box_roi_pool": MultiScaleRoIAlign(
            backbone.level_names, o.box_roi_size, o.sampling_ratio, o.roi_aligned
        ),
        "box_head": head,
        "box_predictor": BoxPredictor(o.representation_size, o.num_classes),
    }


def _mask_branch(o: DetectorOptions, backbone: ResNetFeatures) -> dict[str, nn.Module]:
    return {
        "mask_roi_pool": MultiScaleRoIAlign(
            backbone.level_names, o.mask_roi_size, o.sampling_ratio, o.roi_aligned
        ),
        "mask_head": MaskHead(
            backbone.out_channels, o.mask_head_channels, o.mask_head_convs, o.head_norm
        ),
        "mask_predictor": MaskPredictor(
            o.mask_head_channels, o.mask_head_channels, o.num_classes
        ),  # fmt: skip
    }


def _roi_options(o: DetectorOptions) -> dict:
    return {
        "fg_iou_thresh": o.box_fg_iou_thresh,
        "bg_iou_thresh": o.box_bg_iou_thresh,
        "batch_size_per_image": o.box_batch_size_per_image,
        "positive_fraction": o.box_positive_fraction,
        "score_thresh": o.box_score_thresh,
        "nms_thresh": o.box_nms_thresh,
        "detections_per_img": o.detections_per_img,
        "mask_target_aligned": o.roi_aligned,
    }
