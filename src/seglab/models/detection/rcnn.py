"""R-CNN (Girshick et al., 2014): regions with CNN features.

About 2000 selective-search regions per image (§2.1, `selective_search.py`); each region is
dilated so that `p = 16` pixels of context surround it at the warped size (appendix A),
warped (anisotropically) to a fixed square, and run through the CNN on its own
(`WarpedRegionCNN`); the CNN's last map is max pooled (pool5), then fc6, fc7 and the
outputs of the shared box branch (`box_head.py`). One forward of the CNN per region is
what Fast R-CNN removed: it runs the CNN once per image and pools the regions from the
shared map. As a `TwoStageDetector`, R-CNN's backbone is the image itself (`ImagePixels`).

Where this R-CNN differs from the paper, and why:
- By default (`second_stage: softmax`), one softmax over K + 1 classes, trained with the
  network, instead of the paper's per-class linear SVMs on fc7 features trained afterwards
  with hard negative mining (§2.3). Appendix B measured softmax at 50.9% mAP against the
  SVMs' 54.2% on VOC 2007, which it traces to the loose definition of fine-tuning
  positives; Fast R-CNN §5.4 then found softmax as good as SVMs (+0.1 to +0.8 mAP) once
  the network is trained for it. `second_stage: svm` gives the paper's second stage,
  fitted after the CNN (`rcnn_svm.py`).
- Likewise, class-specific box regression is a second output of the network, trained
  jointly with Fast R-CNN's loss (eq. 1) on the foreground regions, instead of ridge
  regression on pool5 features trained separately on proposals of IoU > 0.6 (appendix C;
  with `second_stage: svm`). The box parameterisation is the paper's
  (`structures/boxes.BoxCoder`).
- Fine-tuning mini-batches take 64 regions from each of the batch's images, 25% of them
  foreground, instead of 32 positive and 96 background windows drawn over all images.
- The warp samples the normalised image bilinearly (2 x 2 samples per output pixel);
  context beyond the image border is the image mean (zero after normalisation), as in the
  paper. The CNN is any single-map backbone (ResNet C4 or a VGG), not AlexNet.
- Per-class NMS uses one IoU threshold (0.3) for every class rather than a learned one.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seglab.models.detection.selective_search import SelectiveSearchDetector
from seglab.ops.roi_align import roi_align
from seglab.ops.roi_levels import boxes_to_rois


class RCNN(SelectiveSearchDetector):
    """Two-stage detector whose RoI features are a CNN run on each warped region (see
    `TwoStageDetector`; wired by `builders.build_rcnn`)."""


class ImagePixels(nn.Module):
    """R-CNN's "backbone": no shared computation, the regions are cut from the pixels.

    (B, C, H, W) normalised batch -> OrderedDict image: the same tensor.
    """

    def __init__(self, in_channels: int):
        super().__init__()
        self.out_channels = in_channels

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict(image=images)


class WarpedRegionCNN(nn.Module):
    """Warp each region with context to a square and run the CNN on it (R-CNN §2.1).

    Args:
        cnn: (N, C, S, S) -> ordered dict whose last map is used (e.g. ResNet C4, VGG conv5),
            with `out_channels`.
        warp_size: S, the side of the warped region (227 for AlexNet in the paper).
        context_padding: p, pixels of context around the region at the warped size.
        output_size: the CNN map is max pooled to this (pool5: 14 x 14 -> 7 x 7 for VGG16).
        crops_per_batch: regions per CNN call (bounds memory; the results do not change).
    """

    def __init__(
        self,
        cnn: nn.Module,
        *,
        warp_size: int,
        context_padding: int,
        output_size: int,
        crops_per_batch: int = 64,
    ):
        super().__init__()
        self.cnn = cnn
        self.warp_size = warp_size
        self.context_padding = context_padding
        self.output_size = output_size
        self.crops_per_batch = crops_per_batch

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> Tensor:
        """Per image (K_i, 4) xyxy regions -> (sum K_i, C, output_size, output_size).

        Args:
            features: `image`: (B, C, H_pad, W_pad), the normalised, padded batch.
            proposals: per image regions in its (resized) pixels.
            image_sizes: unused (the warp reads the padded batch, whose padding is the mean).
        """
        image = features["image"]
        rois = boxes_to_rois([self.with_context(boxes) for boxes in proposals])  # (K, 5)
        if torch.compiler.is_exporting():
            return self._exported_region_features(image, rois)
        pooled = [self._region_features(image, chunk) for chunk in rois.split(self.crops_per_batch)]
        if not pooled:
            return image.new_zeros((0, self.cnn.out_channels, self.output_size, self.output_size))
        return torch.cat(pooled)

    def with_context(self, boxes: Tensor) -> Tensor:
        """Dilate (N, 4) xyxy boxes so that, warped to S x S, p pixels of context surround
        them: each side grows by p / (S - 2p) of the box's width (or height)."""
        grow = self.context_padding / (self.warp_size - 2 * self.context_padding)
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        margin = torch.stack([-widths, -heights, widths, heights], dim=1) * grow  # (N, 4)
        return boxes + margin

    def warp(self, image: Tensor, rois: Tensor) -> Tensor:
        """(B, C, H, W) batch, (K, 5) rois -> (K, C, S, S) warped regions (bilinear, 2 x 2
        samples per output pixel; outside the image: zero, the mean after normalisation)."""
        size = (self.warp_size, self.warp_size)
        return roi_align(image, rois, size, spatial_scale=1.0, sampling_ratio=2, aligned=True)

    def _exported_region_features(self, image: Tensor, rois: Tensor) -> Tensor:
        """`forward`'s result under ONNX export, where the region count K is data-dependent:
        every region through the CNN in one batch (no loop over chunks of an unknown count;
        memory grows with K x warp_size^2), with one placeholder region appended and its
        features dropped, so that the CNN's batch is never empty (its layers branch on that,
        which the exporter cannot decide for an unknown K)."""
        placeholder = rois.new_zeros((1, 5))  # batch 0, a box of no area
        return self._region_features(image, torch.cat([rois, placeholder]))[:-1]

    def _region_features(self, image: Tensor, rois: Tensor) -> Tensor:
        maps = list(self.cnn(self.warp(image, rois)).values())[-1]  # (k, C, S/16, S/16)
        return F.adaptive_max_pool2d(maps, self.output_size)  # pool5
