"""The detector builders' keyword arguments: one frozen dataclass per detector.

Every detector takes the options of the parts it has. All four share the backbone, the
input transform and the box branch (`DetectorOptions`); Faster R-CNN adds the RPN
(`FasterRCNNOptions`), Mask R-CNN the mask branch (`MaskRCNNOptions`); R-CNN and Fast
R-CNN take selective search instead of the RPN (`SelectiveSearchOptions`), and R-CNN the
warp of each region (`RCNNOptions`). Defaults are the papers' for R-CNN and Fast R-CNN and
torchvision's for Faster and Mask R-CNN (so that converted checkpoints reproduce it).
"""

from __future__ import annotations

from dataclasses import dataclass

from seglab.errors import UserError, did_you_mean
from seglab.models.backbones.resnet import NORMS as RESNET_NORMS
from seglab.models.backbones.vgg import VGG_NORMS, VGG_STAGES
from seglab.models.inputs import IMAGENET_MEAN, IMAGENET_STD
from seglab.models.layers import check_norm
from seglab.models.necks.fpn import FPN_NORMS
from seglab.ops.selective_search import ProposalSettings

RESNET_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}
AUTO = "auto"
# Options a recipe may leave `auto`: `seglab train` plans them from the training boxes
# (`seglab.data.box_fingerprint`) and records the values in RUN/config.yaml; a detector is
# built from numbers only (`check_planned`).
AUTO_OPTIONS = (
    "min_size",
    "max_size",
    "anchor_sizes",
    "aspect_ratios",
    "detections_per_img",
    "box_batch_size_per_image",
    "rpn_post_nms_top_n_train",
    "rpn_post_nms_top_n_test",
)
BACKBONES = (*RESNET_DEPTHS, *VGG_STAGES)
ROI_POOLS = ("align", "max")


@dataclass(frozen=True, kw_only=True)
class DetectorOptions:
    """What every detector has: a backbone, the input transform and the box branch.

    The backbone gives an FPN (`fpn`, ResNet only) or a single feature map: a ResNet's C4
    (stride 16) or C5 (stride 32) by `feature_stage`, or a VGG's conv5 (stride 16).
    """

    num_classes: int
    # backbone
    backbone: str = "resnet50"
    fpn: bool = True
    fpn_channels: int = 256
    fpn_norm: str | None = None  # none (None: the paper, torchvision v1) | bn | gn
    feature_stage: str = "c4"  # without FPN, the ResNet stage pooled from: c4 | c5
    norm: str | None = None  # None: the backbone's own (ResNet frozen_bn, VGG none) | bn | gn
    frozen_bn_eps: float = 1e-5  # torchvision's pretrained COCO detectors use 0.0
    trainable_stages: int = 3
    in_channels: int = 3
    # input: resize the short side to min_size (a tuple: one at random per training image)
    min_size: int | tuple[int, ...] = 800
    max_size: int = 1333
    image_mean: tuple[float, ...] = IMAGENET_MEAN
    image_std: tuple[float, ...] = IMAGENET_STD
    # RoI features: align (RoIAlign, Mask R-CNN §3) | max (RoI max pooling, Fast R-CNN §2.1)
    roi_pool: str = "align"
    roi_align_half_pixel: bool = True  # RoIAlign's aligned=True; torchvision's v1: False
    sampling_ratio: int = 2
    box_roi_size: int = 7
    # box branch
    box_head: str = "mlp"  # mlp: fc6 + fc7 (Fast R-CNN) | conv: 4 convs + 1 fc (v2)
    representation_size: int = 1024
    head_norm: str | None = None  # none (None) | bn | gn: in the conv box head and mask head
    fc_svd_ranks: tuple[int, int] | None = None  # truncated SVD of fc6, fc7 at test (§3.1)
    # training RoIs: foreground IoU >= fg, background IoU in [bg_floor, bg)
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_bg_iou_floor: float = 0.0
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    box_loss_beta: float = 1 / 9  # smooth L1 beta; torchvision's 1/9, Fast R-CNN eq. 3: 1
    # the box deltas' scaling (wx, wy, ww, wh): targets divided by Fast R-CNN's fixed stds
    # (0.1, 0.1, 0.2, 0.2, §2.3 "normalized to have zero mean and unit variance")
    box_coder_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    # None: PyTorch's default init of the class and box layers (torchvision); (0.01, 0.001):
    # Fast R-CNN §2.3, zero-mean Gaussians of these stds, biases 0
    box_predictor_init_std: tuple[float, float] | None = None
    # detections
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    detections_per_img: int = 100

    def __post_init__(self):
        _check_auto(self)
        _check_choice("backbone", self.backbone, BACKBONES)
        _check_choice("box_head", self.box_head, ("mlp", "conv"))
        check_norm(self.head_norm, owner="head_norm", allowed=("none", "bn", "gn"))
        check_norm(self.fpn_norm, owner="fpn_norm", allowed=FPN_NORMS)
        _check_choice("roi_pool", self.roi_pool, ROI_POOLS)
        _check_choice("feature_stage", self.feature_stage, ("c4", "c5"))
        if self.backbone in VGG_STAGES:
            check_norm(self.norm, owner="VGG", allowed=VGG_NORMS)
            if self.fpn:
                raise UserError(f"fpn: needs a ResNet backbone, not {self.backbone}; "
                                "set fpn: false")  # fmt: skip
        elif self.norm is not None:  # None: the ResNet's own frozen_bn
            check_norm(self.norm, owner="ResNet", allowed=RESNET_NORMS)
        if self.num_classes < 2:
            raise UserError(f"num_classes={self.num_classes}: detectors count the background, "
                            "so K object classes need num_classes=K+1 >= 2")  # fmt: skip
        if self.box_predictor_init_std is not None and (
            len(self.box_predictor_init_std) != 2 or min(self.box_predictor_init_std) <= 0
        ):
            raise UserError(f"box_predictor_init_std {self.box_predictor_init_std}: give two "
                            "stds > 0 (class scores, box deltas), e.g. [0.01, 0.001]")  # fmt: skip
        if len(self.box_coder_weights) != 4 or min(self.box_coder_weights) <= 0:
            raise UserError(f"box_coder_weights {self.box_coder_weights}: give four weights > 0")
        if self.fc_svd_ranks is not None and (
            len(self.fc_svd_ranks) != 2 or min(self.fc_svd_ranks) < 1
        ):
            raise UserError(f"fc_svd_ranks {self.fc_svd_ranks}: give two ranks >= 1 (fc6, fc7)")


@dataclass(frozen=True, kw_only=True)
class FasterRCNNOptions(DetectorOptions):
    """Faster R-CNN: the detector's options and the RPN's (torchvision's defaults)."""

    # None: one size per FPN level (32..512, FPN §4.1); without FPN 128, 256, 512 (§3.1.1);
    # these, detections_per_img, box_batch_size_per_image, min_size, max_size and
    # rpn_post_nms_top_n_*: `auto` plans them from the training boxes (AUTO_OPTIONS)
    anchor_sizes: tuple[int, ...] | None = None
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
    # §3.3: None labels every anchor in training (torchvision); 0 ignores the anchors that
    # cross the image boundary (the paper), k lets them stick out by k pixels
    rpn_allowed_border: float | None = None
    # eq. (1): the RPN box loss divided by the sampled anchors (torchvision) or by the
    # anchor locations N_reg (the paper, with rpn_box_loss_weight lambda = 10)
    rpn_box_loss_normalization: str = "sampled"  # sampled | locations
    rpn_box_loss_weight: float = 1.0
    rpn_box_loss_beta: float = 1 / 9  # py-faster-rcnn and torchvision; the paper's eq. 1: 1

    def __post_init__(self):
        super().__post_init__()
        _check_choice(
            "rpn_box_loss_normalization", self.rpn_box_loss_normalization, ("sampled", "locations")
        )
        if self.rpn_allowed_border is not None and self.rpn_allowed_border < 0:
            raise UserError(f"rpn_allowed_border {self.rpn_allowed_border}: give pixels >= 0, "
                            "or leave it unset to label every anchor")  # fmt: skip

    @property
    def anchor_sizes_per_level(self) -> tuple[tuple[int, ...], ...]:
        """FPN: one size per level; a single map carries all sizes (3 scales x 3 ratios)."""
        if self.fpn:
            return tuple((size,) for size in (self.anchor_sizes or (32, 64, 128, 256, 512)))
        return (tuple(self.anchor_sizes or (128, 256, 512)),)


@dataclass(frozen=True, kw_only=True)
class MaskRCNNOptions(FasterRCNNOptions):
    """Mask R-CNN: Faster R-CNN's options and the mask branch's."""

    mask_roi_size: int = 14
    mask_head_channels: int = 256
    mask_head_convs: int = 4


@dataclass(frozen=True, kw_only=True)
class SelectiveSearchOptions(DetectorOptions):
    """The detector's options with selective-search proposals instead of an RPN, and the
    defaults the R-CNN and Fast R-CNN papers share: VGG16, 4096-wide fc6 and fc7, one
    feature map, box regression with smooth L1 of beta 1, per-class NMS at 0.3 (their
    released code's `cfg.TEST.NMS`)."""

    backbone: str = "vgg16"
    fpn: bool = False
    representation_size: int = 4096
    box_loss_beta: float = 1.0
    box_nms_thresh: float = 0.3
    # selective search (`proposal_settings`)
    proposal_mode: str = "fast"  # fast (R-CNN's) | quality | single
    proposal_scale: int | None = None  # short side the image is searched at (None: as is)
    proposal_min_size: float = 0.0  # drop proposals narrower or shorter (original pixels)
    max_proposals: int | None = 2000  # about 2000 per image (R-CNN §2.1)

    def proposal_settings(self) -> ProposalSettings:
        """How the detector's proposals are computed (and cached beside the data)."""
        return ProposalSettings(
            mode=self.proposal_mode, scale=self.proposal_scale,
            min_size=self.proposal_min_size, max_proposals=self.max_proposals,
        )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class FastRCNNOptions(SelectiveSearchOptions):
    """Fast R-CNN (§2-§3): RoI max pooling 7 x 7 from the shared map, mini-batches of 2
    images x 64 RoIs with 25% foreground and background IoU in [0.1, 0.5), images at
    600 px (short side) and at most 1000 px (long side)."""

    min_size: int | tuple[int, ...] = 600
    max_size: int = 1000
    roi_pool: str = "max"
    box_bg_iou_floor: float = 0.1
    box_batch_size_per_image: int = 64


@dataclass(frozen=True, kw_only=True)
class RCNNOptions(SelectiveSearchOptions):
    """R-CNN (§2): each region dilated by `context_padding` warped pixels of context, warped
    to `warp_size` x `warp_size` and through the CNN; its last map max pooled to
    `box_roi_size` (pool5: 224 px at stride 16 gives 14 x 14, pooled to 7 x 7 as VGG16's
    pool5 does). Fine-tuning samples 25% foreground (IoU >= 0.5) and 75% background,
    128 regions per 2-image batch (§2.3, "32 positive windows and 96 background windows").
    """

    min_size: int | tuple[int, ...] = 600
    max_size: int = 1000
    box_batch_size_per_image: int = 64
    warp_size: int = 224  # AlexNet's 227 in the paper; 224 for VGG16
    context_padding: int = 16  # §2.1 / appendix A: p = 16
    crops_per_batch: int = 64  # warped regions per CNN call at test (memory, not results)
    # softmax: the network's own classifier and box regressor (Fast R-CNN's loss); svm: the
    # paper's per-class linear SVMs on fc7 and ridge box regressors on pool5 (§2.3,
    # appendix C), fitted after the CNN by `rcnn_svm.fit_rcnn_svms` (until then: softmax)
    second_stage: str = "softmax"

    def __post_init__(self):
        super().__post_init__()
        _check_choice("second_stage", self.second_stage, ("softmax", "svm"))
        if self.fpn:
            raise UserError("fpn: R-CNN runs the CNN on each warped region; set fpn: false")
        if self.roi_pool != DetectorOptions.roi_pool:
            raise UserError("roi_pool: R-CNN pools no RoIs from a shared map; leave it out")
        if self.warp_size <= 2 * self.context_padding:
            raise UserError(
                f"warp_size {self.warp_size} leaves no room for {self.context_padding} px of "
                "context on each side; raise warp_size or lower context_padding"
            )


def planned_options(options: DetectorOptions) -> list[str]:
    """The options of `options` still `auto` (left to the training data)."""
    return [name for name in AUTO_OPTIONS if getattr(options, name, None) == AUTO]


def check_planned(options: DetectorOptions) -> None:
    """A detector is built from numbers: UserError naming the options still `auto`."""
    if names := planned_options(options):
        raise UserError(
            f"{', '.join(names)}: auto is planned from the training data by `seglab train` "
            f"(recorded in RUN/config.yaml); give numbers to build the model without data"
        )


def _check_auto(options: DetectorOptions) -> None:
    """A plannable option is `auto` or a value: a misspelt `auto` is named here, at load."""
    for name in AUTO_OPTIONS:
        value = getattr(options, name, None)
        if isinstance(value, str) and value != AUTO:
            raise UserError(f"{name} {value!r}: give a number (a list for anchor_sizes, "
                            f"aspect_ratios) or auto (planned from the training data)")  # fmt: skip


def _check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        shown = ", ".join("unset" if choice is None else str(choice) for choice in choices)
        hint = did_you_mean(str(value), [str(choice) for choice in choices if choice is not None])
        raise UserError(f"{name} {value!r}: unknown{hint}; use one of {shown}")
