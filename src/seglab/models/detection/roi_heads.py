"""Second stage of the two-stage detectors: per-RoI classification, box refinement and,
for Mask R-CNN, masks.

Training RoIs: the proposals plus the ground-truth boxes, labelled by their best IoU with
the ground truth and sampled per image with a set share of foreground. Fast R-CNN §2.3
takes 64 RoIs per image (2 images per mini-batch), 25% foreground (IoU >= 0.5), background
with IoU in [0.1, 0.5); R-CNN's fine-tuning (§2.3) 25% foreground (IoU >= 0.5), the rest
background; torchvision's Faster and Mask R-CNN 512 per image, 25% foreground, background
IoU < 0.5 (the builders set these). An image without objects has only background RoIs.
Losses are computed whenever targets are given, with the same sampling in train and eval
mode, so a validation loss exists; detections are produced in eval mode from all proposals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seglab.models.detection.box_head import fast_rcnn_loss, postprocess_boxes
from seglab.models.detection.mask_head import mask_loss, mask_probabilities, mask_targets
from seglab.ops.matcher import Matcher
from seglab.ops.precision import autocast_dtype, full_precision
from seglab.ops.roi_align import pool_jointly
from seglab.ops.sampler import BalancedPositiveNegativeSampler
from seglab.structures.boxes import BoxCoder, box_iou


@dataclass
class ImageRoIs:
    """One image's training RoIs, row by row with what each is matched to; indexing
    (`rois[keep]`, a boolean mask or indices) keeps the rows in step."""

    proposals: Tensor  # (S, 4) xyxy in the resized frame
    labels: Tensor  # (S,) int64: 0 background, -1 ignored (never sampled), else the class
    matched_gt_index: Tensor  # (S,) index into the image's gt boxes (0 for background)
    matched_boxes: Tensor  # (S, 4) those gt boxes (zeros in an image without objects)

    def __getitem__(self, keep: Tensor) -> ImageRoIs:
        return ImageRoIs(
            self.proposals[keep], self.labels[keep], self.matched_gt_index[keep],
            self.matched_boxes[keep],
        )  # fmt: skip


class RoIHeads(nn.Module):
    """Box branch (+ optional mask branch) on pooled RoI features.

    Args:
        box_roi_pool: (features, proposals, image_sizes) -> (K, C, S, S), e.g. RoIAlign.
        box_head: (K, C, S, S) -> (K, R); box_predictor: (K, R) -> logits, deltas.
        mask_roi_pool, mask_head, mask_predictor: the mask branch (all three, or none).
        fg_iou_thresh, bg_iou_thresh: RoI labelling thresholds (0.5, 0.5).
        bg_iou_floor: RoIs below this IoU are not sampled as background (Fast R-CNN: 0.1).
        batch_size_per_image, positive_fraction: RoI sampling (512, 0.25).
        box_loss_beta: smooth L1 beta of the box loss (1/9, torchvision's; Fast R-CNN: 1).
        box_coder_weights: scaling of the deltas (10, 10, 5, 5).
        score_thresh, nms_thresh, detections_per_img: post-processing.
        mask_target_aligned: half-pixel offset when cropping gt masks to targets.
        box_svm: R-CNN's second stage (`rcnn_svm.SVMSecondStage`): once fitted, it scores
            and regresses the boxes at test instead of `box_predictor`; the losses (the
            CNN's fine-tuning) always use `box_predictor`.
    """

    def __init__(
        self,
        *,
        box_roi_pool: nn.Module,
        box_head: nn.Module,
        box_predictor: nn.Module,
        mask_roi_pool: nn.Module | None = None,
        mask_head: nn.Module | None = None,
        mask_predictor: nn.Module | None = None,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.5,
        bg_iou_floor: float = 0.0,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        box_loss_beta: float = 1 / 9,
        box_coder_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        mask_target_aligned: bool = True,
        box_svm: nn.Module | None = None,
    ):
        super().__init__()
        self.box_roi_pool = box_roi_pool
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.mask_roi_pool = mask_roi_pool
        self.mask_head = mask_head
        self.mask_predictor = mask_predictor
        self.matcher = Matcher(
            fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False,
            background_floor=bg_iou_floor,
        )  # fmt: skip
        self.box_loss_beta = box_loss_beta
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.box_coder = BoxCoder(weights=tuple(box_coder_weights))
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.mask_target_aligned = mask_target_aligned
        self.box_svm = box_svm

    @property
    def has_mask(self) -> bool:
        return self.mask_predictor is not None

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict] | None = None,
    ) -> tuple[list[dict], dict[str, Tensor]]:
        """Detections (eval mode; else empty dicts) and losses (when targets are given)."""
        losses: dict[str, Tensor] = {}
        if targets is not None:
            rois = self.sample_rois(proposals, targets)
            positives = [image_rois[image_rois.labels > 0] for image_rois in rois]
            box_features, mask_pooled = self._pool_for_losses(
                features, rois, positives, image_sizes
            )  # fmt: skip
            losses.update(self._box_losses(box_features, rois))
            if self.has_mask:
                losses.update(self._mask_losses(mask_pooled, positives, targets))
        if self.training:
            return [{} for _ in proposals], losses
        detections = self._forward_box(features, proposals, image_sizes)
        if self.has_mask:
            self._forward_mask(features, detections, image_sizes)
        return detections, losses

    def sample_rois(self, proposals: list[Tensor], targets: list[dict]) -> list[ImageRoIs]:
        """Add gt boxes to the proposals, label them by IoU, sample a balanced batch."""
        labelled = [
            self._label_rois(
                torch.cat([image_proposals, target["boxes"].to(image_proposals)]), target
            )  # fmt: skip
            for image_proposals, target in zip(proposals, targets, strict=True)
        ]  # the gt boxes are RoIs too (they give the first positives of training)
        positive, negative = self.sampler([rois.labels for rois in labelled])
        sampled = zip(labelled, positive, negative, strict=True)
        return [rois[pos | neg] for rois, pos, neg in sampled]

    def _label_rois(self, rois: Tensor, target: dict) -> ImageRoIs:
        """Per RoI: class label (0 background, -1 ignored) and matched gt box.

        An image without objects gets one dummy zero gt box, so that every RoI has a
        (never used) regression target.
        """
        gt_boxes, gt_labels = target["boxes"].to(rois), target["labels"]
        if gt_boxes.numel() == 0:
            zeros = torch.zeros(rois.shape[0], dtype=torch.int64, device=rois.device)
            return ImageRoIs(rois, zeros, zeros.clone(), gt_boxes.new_zeros((1, 4))[zeros])
        matched = self.matcher(box_iou(gt_boxes, rois))
        gt_index = matched.clamp(min=0)
        labels = gt_labels[gt_index].to(torch.int64)
        labels[matched == Matcher.BACKGROUND] = 0
        labels[matched == Matcher.IGNORED] = -1
        return ImageRoIs(rois, labels, gt_index, gt_boxes[gt_index])

    def _pool_for_losses(
        self, features, rois: list[ImageRoIs], positives: list[ImageRoIs], image_sizes
    ) -> tuple[Tensor, Tensor | None]:
        """The box head's output (K, R) for the training RoIs and, with a mask branch, the
        positive RoIs' pooled features (P, C, M, M) (Mask R-CNN §3: the mask loss is on the
        positives only).

        Where both poolers are sparse RoIAligns of the same levels, one autograd node pools
        both and applies the box head's fc6 (`ops.roi_align.pool_jointly`): the pyramid's
        gradient in one buffer, and neither fc6's input nor its gradient held with it (the
        training step's peak memory, docs/benchmarks.md "Training memory"). Under autocast
        fc6 runs in its own node, in autocast's dtype.
        """
        poolers, boxes = [self.box_roi_pool], [[image_rois.proposals for image_rois in rois]]
        if self.has_mask:
            poolers.append(self.mask_roi_pool)
            boxes.append([positive.proposals for positive in positives])
        fc6 = getattr(self.box_head, "dense_fc6", None) if autocast_dtype("cpu") is None else None
        pooled = pool_jointly(poolers, features, boxes, image_sizes, linear=fc6)
        if pooled is None:
            pooled = [
                pool(features, b, image_sizes) for pool, b in zip(poolers, boxes, strict=True)
            ]
            fc6 = None
        box_features = (
            self.box_head(pooled[0]) if fc6 is None else self.box_head.after_fc6(pooled[0])
        )
        return box_features, (pooled[1] if self.has_mask else None)

    def _box_losses(self, box_features: Tensor, rois: list[ImageRoIs]) -> dict[str, Tensor]:
        class_logits, box_deltas = map(full_precision, self.box_predictor(box_features))
        labels = torch.cat([image_rois.labels for image_rois in rois])
        regression_targets = torch.cat([
            self.box_coder.encode(image_rois.matched_boxes, image_rois.proposals)
            for image_rois in rois
        ])  # fmt: skip
        return fast_rcnn_loss(
            class_logits, box_deltas, labels, regression_targets, beta=self.box_loss_beta
        )

    def _mask_losses(
        self, pooled: Tensor, positives: list[ImageRoIs], targets: list[dict]
    ) -> dict[str, Tensor]:
        """Mask loss on the positive training RoIs (their pooled features (P, C, M, M))."""
        mask_logits = self._pooled_mask_logits(pooled)
        size = mask_logits.shape[-1]
        mask_target = torch.cat([
            mask_targets(target["masks"], positive.proposals, positive.matched_gt_index, size,
                         aligned=self.mask_target_aligned)
            for target, positive in zip(targets, positives, strict=True)
        ])  # fmt: skip
        labels = torch.cat([positive.labels for positive in positives])
        return {"loss_mask": mask_loss(mask_logits, labels, mask_target)}

    def _pooled_mask_logits(self, pooled: Tensor) -> Tensor:
        logits = self.mask_predictor(self.mask_head(pooled))  # (K, num_classes, 2M, 2M)
        return full_precision(logits)  # float32 from here: the loss, the pasting

    def _forward_box(self, features, proposals: list[Tensor], image_sizes) -> list[dict]:
        """Eval mode: score every proposal, refine its box per class, keep the best."""
        class_scores, box_deltas = self._test_outputs(features, proposals, image_sizes)
        counts = [image_proposals.shape[0] for image_proposals in proposals]
        detections = []
        for image_scores, deltas, image_proposals, size in zip(
            class_scores.split(counts), box_deltas.split(counts), proposals, image_sizes,
            strict=True,
        ):  # fmt: skip
            boxes, scores, labels = postprocess_boxes(
                image_scores, deltas, image_proposals, size, box_coder=self.box_coder,
                score_thresh=self.score_thresh, nms_thresh=self.nms_thresh,
                detections_per_img=self.detections_per_img,
            )  # fmt: skip
            detections.append({"boxes": boxes, "labels": labels, "scores": scores})
        return detections

    def _test_outputs(self, features, proposals, image_sizes) -> tuple[Tensor, Tensor]:
        """Class scores (K, num_classes) in [0, 1] and box deltas (K, num_classes*4): the
        softmax of `box_predictor`, or R-CNN's SVMs (sigmoid of their margins) and ridge
        regressors once fitted."""
        pooled = self.box_roi_pool(features, proposals, image_sizes)  # (K, C, S, S)
        fc7 = self.box_head(pooled)  # (K, R)
        if self.box_svm is not None and self.box_svm.fitted:
            scores, box_deltas = map(full_precision, self.box_svm(pooled, fc7))
            return scores, box_deltas
        class_logits, box_deltas = map(full_precision, self.box_predictor(fc7))
        return class_logits.softmax(dim=-1), box_deltas

    def _forward_mask(self, features, detections: list[dict], image_sizes) -> None:
        """Eval mode: a (1, 2M, 2M) mask probability map per detection, in its box (in
        place); M x M is `mask_roi_pool`'s output (`mask_roi_size`; the paper's 14 x 14)."""
        boxes = [d["boxes"] for d in detections]
        pooled = self.mask_roi_pool(features, boxes, image_sizes)  # (N, C, M, M)
        mask_logits = self._pooled_mask_logits(pooled)
        labels = torch.cat([d["labels"] for d in detections])
        probabilities = mask_probabilities(mask_logits, labels)  # (N, 1, 2M, 2M)
        for detection, masks in zip(
            detections,
            probabilities.split([image_boxes.shape[0] for image_boxes in boxes]),
            strict=True,
        ):
            detection["masks"] = masks
