"""Binary masks: COCO polygons / RLE <-> arrays, and pasting RoI masks into the image.

COCO stores a segmentation either as polygons (a list of flat `[x0, y0, x1, y1, ...]`
lists, in pixel coordinates), as uncompressed RLE (`counts` a list of ints) or as compressed
RLE (`counts` a string). pycocotools does the encoding; this module is the one place that
calls it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as coco_mask

# Semantic masks: a pixel labelled IGNORE_INDEX counts in no loss and no metric ("void").
IGNORE_INDEX = 255


def segmentation_to_mask(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """Rasterise a COCO segmentation (polygons, uncompressed or compressed RLE).

    Returns:
        (height, width) uint8 array of 0/1.
    """
    if isinstance(segmentation, list):
        polygons = [polygon for polygon in segmentation if len(polygon) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=np.uint8)
        rle = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = coco_mask.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    return coco_mask.decode(rle).astype(np.uint8)


def mask_to_rle(mask: np.ndarray | torch.Tensor) -> dict:
    """Encode one (H, W) binary mask as compressed COCO RLE with a JSON-ready `counts` str."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_area(rle: dict) -> int:
    """Number of foreground pixels of a compressed RLE (as produced by `mask_to_rle`)."""
    return int(coco_mask.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight xyxy boxes (pixel edges, no +1) of (N, H, W) binary masks; empty masks give 0s."""
    boxes = torch.zeros((masks.shape[0], 4), dtype=torch.float32)
    for index, mask in enumerate(masks):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if len(xs):
            boxes[index] = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
    return boxes


def _expand_boxes(boxes: torch.Tensor, scale: float) -> torch.Tensor:
    """Scale xyxy boxes about their centres by `scale`."""
    centres = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    half_sizes = (boxes[:, 2:] - boxes[:, :2]) * 0.5 * scale
    return torch.cat([centres - half_sizes, centres + half_sizes], dim=1)


def _paste_one(mask: torch.Tensor, box: list[int], image_mask: torch.Tensor) -> None:
    """Resize an (M, M) mask to its integer box (inclusive corners) and write it into the
    (H, W) zeros `image_mask`, in place: only the box's pixels are touched."""
    height, width = image_mask.shape
    x0, y0, x1, y1 = box
    box_w, box_h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
    resized = F.interpolate(mask[None, None], size=(box_h, box_w), mode="bilinear")[0, 0]
    left, right = max(x0, 0), min(x1 + 1, width)
    top, bottom = max(y0, 0), min(y1 + 1, height)
    if right > left and bottom > top:
        image_mask[top:bottom, left:right] = resized[top - y0 : bottom - y0, left - x0 : right - x0]


def paste_masks_in_image(
    masks: torch.Tensor,
    boxes: torch.Tensor,
    image_size_hw: tuple[int, int],
    threshold: float | None = None,
    *,
    padding: int = 1,
) -> torch.Tensor:
    """Paste per-RoI masks into full-image masks (Mask R-CNN inference, He et al. 2017 §3).

    Follows torchvision's `paste_masks_in_image` exactly: each M x M mask gets a border of
    `padding` zeros and its box grows by the same ratio, `(M + 2p) / M`, so the mask's edge
    can fade out; the grown box is truncated to integers and treated as inclusive on both
    ends (`+1`, the old Detectron convention); the padded mask is resized bilinearly
    (`align_corners=False`) to that box and copied into the image, clipped at its border.

    Args:
        masks: (N, M, M) or (N, 1, M, M) float mask probabilities for the RoIs.
        boxes: (N, 4) xyxy boxes in image pixels.
        image_size_hw: (H, W) of the image to paste into.
        threshold: when given, return `probability > threshold` as uint8.
        padding: zero border added around each mask before resizing.

    Returns:
        (N, H, W) (or (N, 1, H, W) for 4-d input) float masks, or uint8 with `threshold`.
    """
    has_channel = masks.dim() == 4
    masks_nmm = masks[:, 0] if has_channel else masks  # (N, 1, M, M) -> (N, M, M)
    size = masks_nmm.shape[-1]
    padded = F.pad(masks_nmm, (padding,) * 4)  # (N, M + 2p, M + 2p)
    expanded = _expand_boxes(boxes, (size + 2 * padding) / size).to(torch.int64)
    height, width = image_size_hw
    if torch.compiler.is_exporting():
        # ONNX export: one graph for any number of masks and any image size (no per-mask
        # Python loop); equal to the loop's result to float rounding (tests/structures)
        result = paste_masks_separable(padded, expanded, height, width)
    else:  # one (N, H, W) block of zeros, each mask written inside its box
        result = masks_nmm.new_zeros((masks_nmm.shape[0], height, width))
        for index, (mask, box) in enumerate(zip(padded, expanded.tolist(), strict=True)):
            _paste_one(mask, box, result[index])  # (a view autograd can write through)
    if threshold is not None:
        result = (result > threshold).to(torch.uint8)
    return result[:, None] if has_channel else result


def paste_masks_separable(masks: torch.Tensor, boxes: torch.Tensor, height, width) -> torch.Tensor:
    """`_paste_one` for every mask at once, as two matrix products.

    Bilinear resizing is separable: pasted = rows @ mask @ columns^T, where `rows` (N, H, M)
    holds, for each image row, the interpolation weights of the mask rows (zero outside the
    box), and `columns` (N, W, M) likewise.

    Args:
        masks: (N, M, M) padded mask probabilities.
        boxes: (N, 4) int64 xyxy boxes with inclusive ends (the expanded boxes).
        height, width: the image's size.
    Returns:
        (N, H, W) float masks.
    """
    size = masks.shape[-1]
    rows = _paste_weights(boxes[:, 1], boxes[:, 3], height, size)  # (N, H, M)
    columns = _paste_weights(boxes[:, 0], boxes[:, 2], width, size)  # (N, W, M)
    return rows @ masks @ columns.transpose(1, 2)  # (N, H, M) @ (N, M, M) @ (N, M, W)


def _paste_weights(start: torch.Tensor, end: torch.Tensor, length, size: int) -> torch.Tensor:
    """Weights (N, length, size) that resize a mask's `size` cells to the box [start, end]
    (inclusive, (N,) int64) with F.interpolate's bilinear rule (align_corners=False: source
    (j + 0.5) * size / extent - 0.5, clamped at 0) and place them in `length` image cells."""
    extent = (end - start + 1).clamp(min=1)  # (N,)
    local = torch.arange(length, device=start.device)[None, :] - start[:, None]  # (N, L)
    inside = (local >= 0) & (local < extent[:, None])
    scale = size / extent.to(torch.float32)  # input / output size, as F.interpolate
    source = (scale[:, None] * (local.to(torch.float32) + 0.5) - 0.5).clamp(min=0)  # (N, L)
    low = source.floor().to(torch.int64).clamp(max=size - 1)
    high = (low + 1).clamp(max=size - 1)
    high_weight = (source - low)[..., None]  # (N, L, 1)
    cells = torch.arange(size, device=start.device)  # (M,)
    low_weights = (cells == low[..., None]) * (1 - high_weight)
    return (low_weights + (cells == high[..., None]) * high_weight) * inside[..., None]
