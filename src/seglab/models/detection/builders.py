"""Wiring of the four two-stage detectors from shared parts.

Diff the four builders to see the lineage of the papers: R-CNN runs the CNN on each
warped region; Fast R-CNN runs it once per image and RoI-pools the regions from the
shared map; Faster R-CNN replaces selective search by an RPN on the same features; Mask
R-CNN adds a mask branch. Every knob is a keyword argument (`options.py`).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from seglab.errors import UserError
from seglab.models.backbones.resnet import ResNetBackbone, set_frozen_bn_eps
from seglab.models.backbones.vgg import VGGBackbone
from seglab.models.detection.box_head import BoxPredictor, ConvFCHead, TwoMLPHead
from seglab.models.detection.fast_rcnn import FastRCNN
from seglab.models.detection.faster_rcnn import FasterRCNN
from seglab.models.detection.mask_head import MaskHead, MaskPredictor
from seglab.models.detection.mask_rcnn import MaskRCNN
from seglab.models.detection.options import (
    RESNET_DEPTHS,
    DetectorOptions,
    FasterRCNNOptions,
    FastRCNNOptions,
    MaskRCNNOptions,
    RCNNOptions,
    SelectiveSearchOptions,
    check_planned,
)
from seglab.models.detection.rcnn import RCNN, ImagePixels, WarpedRegionCNN
from seglab.models.detection.rcnn_svm import SVMSecondStage
from seglab.models.detection.roi_heads import RoIHeads
from seglab.models.detection.rpn import RegionProposalNetwork, RPNHead
from seglab.models.detection.selective_search import SelectiveSearchProposals
from seglab.models.detection.transform import DetectionTransform
from seglab.models.necks.fpn import FPN
from seglab.ops.anchors import AnchorGenerator
from seglab.ops.roi_align import MultiScaleRoIAlign
from seglab.ops.roi_pool import MultiScaleRoIPool

__all__ = [
    "DetectorOptions",
    "FastRCNNOptions",
    "FasterRCNNOptions",
    "MaskRCNNOptions",
    "RCNNOptions",
    "build_fast_rcnn",
    "build_faster_rcnn",
    "build_mask_rcnn",
    "build_rcnn",
]

# Options renamed for what they do; a saved model or recipe with the old name gets told.
RENAMED_OPTIONS = {"roi_aligned": "roi_align_half_pixel"}


def build_rcnn(**kwargs) -> RCNN:
    """R-CNN: selective search; each region warped and through the CNN; fc6, fc7, outputs."""
    options = _options(RCNNOptions, kwargs)
    branch = _warped_region_branch(options)
    return RCNN(
        transform=_transform(options, masks=False),
        backbone=ImagePixels(options.in_channels),
        proposal_generator=_selective_search(options),
        roi_heads=RoIHeads(**branch, **_roi_options(options), box_svm=_svm_stage(options, branch)),
    )


def build_fast_rcnn(**kwargs) -> FastRCNN:
    """Fast R-CNN: selective search; one CNN pass; RoI max pooling; fc6, fc7, outputs."""
    options = _options(FastRCNNOptions, kwargs)
    backbone = _backbone(options)
    return FastRCNN(
        transform=_transform(options, masks=False),
        backbone=backbone,
        proposal_generator=_selective_search(options),
        roi_heads=RoIHeads(**_box_branch(options, backbone), **_roi_options(options)),
    )


def build_faster_rcnn(**kwargs) -> FasterRCNN:
    """Faster R-CNN: one CNN pass (+FPN); RPN; RoIAlign; fc6, fc7, outputs."""
    options = _options(FasterRCNNOptions, kwargs)
    backbone = _backbone(options)
    return FasterRCNN(
        transform=_transform(options, masks=False),
        backbone=backbone,
        proposal_generator=_rpn(options, backbone),
        roi_heads=RoIHeads(**_box_branch(options, backbone), **_roi_options(options)),
    )


def build_mask_rcnn(**kwargs) -> MaskRCNN:
    """Mask R-CNN: Faster R-CNN + a mask branch on RoIAlign features (`mask_roi_size`: 14x14)."""
    options = _options(MaskRCNNOptions, kwargs)
    backbone = _backbone(options)
    return MaskRCNN(
        transform=_transform(options, masks=True),
        backbone=backbone,
        proposal_generator=_rpn(options, backbone),
        roi_heads=RoIHeads(
            **_box_branch(options, backbone),
            **_mask_branch(options, backbone),
            **_roi_options(options),
        ),  # fmt: skip
    )


def _options(options_class: type[DetectorOptions], kwargs: dict) -> DetectorOptions:
    for old, new in RENAMED_OPTIONS.items():
        if old in kwargs:
            raise UserError(f"model option {old!r} is now called {new!r}; rename it")
    options = options_class(**kwargs)
    check_planned(options)
    return options


class BackboneFeatures(nn.Module):
    """A backbone's feature maps: FPN levels p2..p5 + pool, or its one map (C4, C5, conv5).

    (B, C, H, W) -> ordered dict name -> (B, out_channels, H / stride, W / stride).
    """

    def __init__(self, body: nn.Module, fpn: FPN | None, out_channels: int):
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = out_channels
        self.single_map = None if fpn is not None else _single_map_name(body)

    @property
    def level_names(self) -> list[str]:
        """Names of the levels the RoIs are pooled from (not the extra pool level)."""
        return ["p2", "p3", "p4", "p5"] if self.fpn is not None else [self.single_map]

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        stages = self.body(images)
        if self.fpn is None:
            return OrderedDict([(self.single_map, stages[self.single_map])])
        return self.fpn(stages)


def _single_map_name(body: nn.Module) -> str:
    return "conv5" if isinstance(body, VGGBackbone) else f"c{len(body.out_channels) + 1}"


def _backbone(options: DetectorOptions) -> BackboneFeatures:
    body = _backbone_body(options)
    if not options.fpn:
        return BackboneFeatures(body, None, body.out_channels[-1])
    fpn = FPN(body.out_channels, options.fpn_channels, extra_pool=True, norm=options.fpn_norm)
    return BackboneFeatures(body, fpn, options.fpn_channels)


def _backbone_body(options: DetectorOptions) -> nn.Module:
    if options.backbone not in RESNET_DEPTHS:
        return VGGBackbone(
            options.backbone, norm=options.norm, trainable_stages=options.trainable_stages,
            in_channels=options.in_channels,
        )  # fmt: skip
    body = ResNetBackbone(
        RESNET_DEPTHS[options.backbone], norm=options.norm or "frozen_bn",
        trainable_stages=options.trainable_stages, in_channels=options.in_channels,
        last_stage=5 if options.fpn or options.feature_stage == "c5" else 4,
    )  # fmt: skip
    set_frozen_bn_eps(body, options.frozen_bn_eps)
    return body


def _transform(options: DetectorOptions, *, masks: bool) -> DetectionTransform:
    mean, std = tuple(options.image_mean), tuple(options.image_std)
    if len(mean) != options.in_channels:  # e.g. grey images with the RGB defaults: average
        mean = (sum(mean) / len(mean),) * options.in_channels
        std = (sum(std) / len(std),) * options.in_channels
    return DetectionTransform(
        min_size=options.min_size, max_size=options.max_size, image_mean=mean, image_std=std,
        resize_masks=masks,
    )  # fmt: skip


def _rpn(options: FasterRCNNOptions, backbone: BackboneFeatures) -> RegionProposalNetwork:
    sizes = options.anchor_sizes_per_level
    anchors = AnchorGenerator(sizes, (tuple(options.aspect_ratios),) * len(sizes))
    return RegionProposalNetwork(
        anchor_generator=anchors,
        head=RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0],
                     options.rpn_head_convs),
        fg_iou_thresh=options.rpn_fg_iou_thresh, bg_iou_thresh=options.rpn_bg_iou_thresh,
        batch_size_per_image=options.rpn_batch_size_per_image,
        positive_fraction=options.rpn_positive_fraction,
        pre_nms_top_n={"training": options.rpn_pre_nms_top_n_train,
                       "testing": options.rpn_pre_nms_top_n_test},
        post_nms_top_n={"training": options.rpn_post_nms_top_n_train,
                        "testing": options.rpn_post_nms_top_n_test},
        nms_thresh=options.rpn_nms_thresh, score_thresh=options.rpn_score_thresh,
        allowed_border=options.rpn_allowed_border,
        box_loss_normalization=options.rpn_box_loss_normalization,
        box_loss_weight=options.rpn_box_loss_weight, box_loss_beta=options.rpn_box_loss_beta,
    )  # fmt: skip


def _selective_search(options: SelectiveSearchOptions) -> SelectiveSearchProposals:
    return SelectiveSearchProposals(options.proposal_settings())


def _box_branch(options: DetectorOptions, backbone: BackboneFeatures) -> dict[str, nn.Module]:
    return {
        "box_roi_pool": _roi_pool(options, backbone, options.box_roi_size),
        **_box_head(options, backbone.out_channels),
    }


def _warped_region_branch(options: RCNNOptions) -> dict[str, nn.Module]:
    cnn = _backbone(options)
    return {
        "box_roi_pool": WarpedRegionCNN(
            cnn,
            warp_size=options.warp_size,
            context_padding=options.context_padding,
            output_size=options.box_roi_size,
            crops_per_batch=options.crops_per_batch,
        ),  # fmt: skip
        **_box_head(options, cnn.out_channels),
    }


def _svm_stage(options: RCNNOptions, branch: dict[str, nn.Module]) -> SVMSecondStage | None:
    """R-CNN's paper second stage (`second_stage: svm`): SVMs on fc7, ridge on pool5."""
    if options.second_stage != "svm":
        return None
    pool5_size = branch["box_roi_pool"].cnn.out_channels * options.box_roi_size**2
    return SVMSecondStage(pool5_size, options.representation_size, options.num_classes)


def _box_head(options: DetectorOptions, channels: int) -> dict[str, nn.Module]:
    size = options.box_roi_size
    if options.box_head == "mlp":
        head = TwoMLPHead(
            channels * size**2, options.representation_size, svd_ranks=options.fc_svd_ranks
        )
    else:
        head = ConvFCHead(channels, size, options.representation_size, norm=options.head_norm)
    return {
        "box_head": head,
        "box_predictor": BoxPredictor(
            options.representation_size,
            options.num_classes,
            init_std=options.box_predictor_init_std,
        ),
    }


def _roi_pool(options: DetectorOptions, backbone: BackboneFeatures, size: int) -> nn.Module:
    if options.roi_pool == "max":
        return MultiScaleRoIPool(backbone.level_names, size)
    return MultiScaleRoIAlign(
        backbone.level_names, size, options.sampling_ratio, options.roi_align_half_pixel
    )


def _mask_branch(options: MaskRCNNOptions, backbone: BackboneFeatures) -> dict[str, nn.Module]:
    channels = options.mask_head_channels
    return {
        "mask_roi_pool": _roi_pool(options, backbone, options.mask_roi_size),
        "mask_head": MaskHead(
            backbone.out_channels, channels, options.mask_head_convs, options.head_norm
        ),
        "mask_predictor": MaskPredictor(channels, channels, options.num_classes),
    }


def _roi_options(options: DetectorOptions) -> dict:
    return {
        "fg_iou_thresh": options.box_fg_iou_thresh,
        "bg_iou_thresh": options.box_bg_iou_thresh,
        "bg_iou_floor": options.box_bg_iou_floor,
        "batch_size_per_image": options.box_batch_size_per_image,
        "positive_fraction": options.box_positive_fraction,
        "box_loss_beta": options.box_loss_beta,
        "box_coder_weights": tuple(options.box_coder_weights),
        "score_thresh": options.box_score_thresh,
        "nms_thresh": options.box_nms_thresh,
        "detections_per_img": options.detections_per_img,
        "mask_target_aligned": options.roi_align_half_pixel,
    }
