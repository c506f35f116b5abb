"""Non-maximum suppression: keep the best box, drop the boxes that overlap it, repeat.

`nms` is torchvision's compiled kernel; `nms_reference` is the same greedy algorithm in
plain PyTorch, kept to show the idea and to test the kernel against.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor

from seglab.structures.boxes import box_area

# torchvision switches from the offset trick to one NMS per class above this many
# coordinates on the CPU (faster there); we switch at the same size so that converted
# torchvision models keep exactly the same detections.
_PER_CLASS_LOOP_MIN_NUMEL_CPU = 4000
_PER_CLASS_LOOP_MIN_NUMEL_GPU = 100_000


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS (torchvision kernel).

    Args:
        boxes: (N, 4) xyxy.
        scores: (N,).
        iou_threshold: a box is dropped when its IoU with a kept, higher-scoring box is
            strictly greater than this.

    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score.
    """
    return torchvision.ops.nms(boxes, scores, iou_threshold)


def nms_reference(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """The greedy NMS loop in plain PyTorch; same result as `nms`.

    Boxes are visited by decreasing score (stable for ties, like the kernel); each visited
    box that was not suppressed is kept and suppresses every later box whose IoU with it is
    greater than `iou_threshold`.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    areas = box_area(boxes)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    keep = []
    for position, index in enumerate(order.tolist()):
        if suppressed[index]:
            continue
        keep.append(index)
        later = order[position + 1 :]
        top_left = torch.max(boxes[index, :2], boxes[later, :2])  # (L, 2)
        bottom_right = torch.min(boxes[index, 2:], boxes[later, 2:])  # (L, 2)
        overlap_wh = (bottom_right - top_left).clamp(min=0)
        intersection = overlap_wh[:, 0] * overlap_wh[:, 1]
        iou = intersection / (areas[index] + areas[later] - intersection)
        suppressed[later[iou > iou_threshold]] = True
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category only (boxes of different `idxs` never suppress each other).

    Args:
        boxes: (N, 4) xyxy.
        scores: (N,).
        idxs: (N,) int category (or image, or level) of each box.
        iou_threshold: as in `nms`.

    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score.
    """
    if torch.compiler.is_exporting():
        # ONNX export: the box count is unknown, so no branch on it; one NonMaxSuppression
        return _batched_nms_offset(boxes, scores, idxs, iou_threshold)
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    loop_min = (
        _PER_CLASS_LOOP_MIN_NUMEL_CPU
        if boxes.device.type == "cpu"
        else _PER_CLASS_LOOP_MIN_NUMEL_GPU
    )
    if boxes.numel() > loop_min and not torch.jit.is_tracing():
        return _batched_nms_per_category(boxes, scores, idxs, iou_threshold)
    return _batched_nms_offset(boxes, scores, idxs, iou_threshold)


def _batched_nms_offset(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float
) -> Tensor:
    """One NMS call: shift each category by `idx * (max coordinate + 1)` so they cannot overlap."""
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))  # (N,)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def _batched_nms_per_category(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float
) -> Tensor:
    """One NMS call per category, then all kept boxes sorted by decreasing score."""
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for category in torch.unique(idxs):
        in_category = torch.where(idxs == category)[0]
        kept = nms(boxes[in_category], scores[in_category], iou_threshold)
        keep_mask[in_category[kept]] = True
    keep = torch.where(keep_mask)[0]
    return keep[scores[keep].sort(descending=True).indices]
