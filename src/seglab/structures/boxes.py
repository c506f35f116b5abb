"""Axis-aligned boxes: formats, areas, IoU, clipping and the R-CNN box coder.

Boxes are `xyxy` float tensors in absolute pixels, without the historical `+1`: a box
`[0, 0, 10, 10]` has width 10 and area 100 (docs/conventions.md). Every function here
matches `torchvision.ops` / torchvision's detection `BoxCoder` numerically, so converted
torchvision checkpoints reproduce their detections.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """(..., 4) `[x0, y0, x1, y1]` -> (..., 4) `[x0, y0, width, height]`."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack((x0, y0, x1 - x0, y1 - y0), dim=-1)


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) `[x0, y0, width, height]` -> (..., 4) `[x0, y0, x1, y1]`."""
    x0, y0, width, height = boxes.unbind(-1)
    return torch.stack((x0, y0, x0 + width, y0 + height), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area of each box.

    Args:
        boxes: (..., 4) xyxy.

    Returns:
        (...,) width * height; half-precision input is computed in float32 (no overflow).
    """
    boxes = _upcast(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection over union (Jaccard index).

    Args:
        boxes1: (N, 4) xyxy.
        boxes2: (M, 4) xyxy.

    Returns:
        (N, M) IoU of every pair; NaN where both boxes have zero area (as torchvision).
    """
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2)
    overlap_wh = _upcast(bottom_right - top_left).clamp(min=0)  # (N, M, 2)
    intersection = overlap_wh[..., 0] * overlap_wh[..., 1]  # (N, M)
    union = area1[:, None] + area2[None, :] - intersection
    return intersection / union


def clip_boxes(boxes: Tensor, image_size_hw: tuple[int, int]) -> Tensor:
    """Clip boxes (..., 4) xyxy to an image of `(height, width)`: x to [0, W], y to [0, H]."""
    height, width = image_size_hw
    x = boxes[..., 0::2].clamp(min=0, max=width)  # (..., 2) x0, x1
    y = boxes[..., 1::2].clamp(min=0, max=height)  # (..., 2) y0, y1
    # (..., 2, 2) [x0 y0; x1 y1] -> (..., 4) x0 y0 x1 y1
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (K,) int64 of the boxes (N, 4) whose width and height are both >= `min_size`."""
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return torch.where((widths >= min_size) & (heights >= min_size))[0]


class BoxCoder:
    """The box parameterisation of R-CNN (appendix C) used by Fast and Faster R-CNN.

    A box is encoded relative to a reference box (an anchor or a proposal) as
    `(wx * dx / w_a, wy * dy / h_a, ww * log(w / w_a), wh * log(h / h_a))` between centres
    and sizes (Faster R-CNN eq. 2). Decoding clamps the log-scale deltas at
    `scale_clamp = log(1000 / 16)` so that `exp` cannot blow up early in training.

    Args:
        weights: `(wx, wy, ww, wh)`; torchvision uses (1, 1, 1, 1) in the RPN and
            (10, 10, 5, 5) in the box head.
        scale_clamp: upper bound on the decoded `dw`, `dh` (after dividing by the weights).
    """

    def __init__(
        self,
        weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
        scale_clamp: float = math.log(1000.0 / 16),
    ) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, matched_gt_boxes: Tensor, proposals: Tensor) -> Tensor:
        """Regression targets of `matched_gt_boxes` (N, 4) relative to `proposals` (N, 4).

        Returns:
            (N, 4) deltas `(dx, dy, dw, dh)` in the dtype of `matched_gt_boxes`.
        """
        weights = torch.as_tensor(
            self.weights, dtype=matched_gt_boxes.dtype, device=matched_gt_boxes.device
        )
        proposal_w, proposal_h, proposal_cx, proposal_cy = _size_and_centre(proposals)
        gt_w, gt_h, gt_cx, gt_cy = _size_and_centre(matched_gt_boxes)
        dx = weights[0] * (gt_cx - proposal_cx) / proposal_w
        dy = weights[1] * (gt_cy - proposal_cy) / proposal_h
        dw = weights[2] * torch.log(gt_w / proposal_w)
        dh = weights[3] * torch.log(gt_h / proposal_h)
        return torch.stack((dx, dy, dw, dh), dim=1)

    def decode(self, deltas: Tensor, proposals: Tensor) -> Tensor:
        """Apply deltas to their reference boxes.

        Args:
            deltas: (N, 4 * K) or (N, K, 4) or (N, 4): K sets of `(dx, dy, dw, dh)` per
                reference box (class-specific regression in the box head has K classes).
            proposals: (N, 4) xyxy reference boxes.

        Returns:
            Boxes xyxy with the shape of `deltas`, in the dtype of `deltas`.
        """
        proposals = proposals.to(deltas.dtype)
        deltas_flat = deltas.flatten(1)  # (N, K, 4) or (N, 4 * K) -> (N, 4 * K)
        width, height, centre_x, centre_y = (v[:, None] for v in _size_and_centre(proposals))
        wx, wy, ww, wh = self.weights
        dx = deltas_flat[:, 0::4] / wx  # (N, K)
        dy = deltas_flat[:, 1::4] / wy
        dw = (deltas_flat[:, 2::4] / ww).clamp(max=self.scale_clamp)
        dh = (deltas_flat[:, 3::4] / wh).clamp(max=self.scale_clamp)

        pred_centre_x = dx * width + centre_x
        pred_centre_y = dy * height + centre_y
        half_w = 0.5 * (torch.exp(dw) * width)
        half_h = 0.5 * (torch.exp(dh) * height)
        boxes = torch.stack(
            (
                pred_centre_x - half_w,
                pred_centre_y - half_h,
                pred_centre_x + half_w,
                pred_centre_y + half_h,
            ),
            dim=2,
        )  # (N, K, 4)
        return boxes.reshape(deltas.shape)  # (N, K, 4) -> (N, 4 * K) or (N, K, 4) or (N, 4)


def _size_and_centre(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(N, 4) xyxy -> width, height, centre x, centre y, each (N,)."""
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    return width, height, boxes[:, 0] + 0.5 * width, boxes[:, 1] + 0.5 * height


def _upcast(tensor: Tensor) -> Tensor:
    """Half-precision floats -> float32 (products of coordinates overflow fp16)."""
    if tensor.is_floating_point():
        return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()
    return tensor if tensor.dtype in (torch.int32, torch.int64) else tensor.int()
