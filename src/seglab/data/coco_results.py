"""Model outputs in the COCO results format, the file format of COCO detections.

A detector outputs boxes xyxy in the image's pixels, labels 1..K and mask probabilities;
a COCO results file holds, per detection, `bbox` [x, y, width, height], the dataset's own
`category_id` and a compressed RLE `segmentation`. `seglab predict` writes these files,
`seglab.evaluation` scores them with pycocotools, and the U-Net instances are given in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from seglab.structures.boxes import xyxy_to_xywh
from seglab.structures.masks import mask_to_rle


def to_coco_results(
    outputs: Sequence[dict[str, torch.Tensor]],
    image_ids: Sequence[int],
    category_ids: Sequence[int],
    *,
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Model outputs -> COCO results, one dict per detection.

    Args:
        outputs: per image, `boxes` (N, 4) xyxy in the image's pixels, `labels` (N,) int64 in
            1..K, `scores` (N,), optionally `masks` (N, 1, H, W) probabilities in [0, 1].
        image_ids: the COCO image id of each output.
        category_ids: label k in 1..K -> COCO category id `category_ids[k - 1]`.
        mask_threshold: a pixel is in the mask when its probability is above this
            (torchvision's reference evaluation: `masks > 0.5`).

    Returns:
        dicts with `image_id`, `category_id`, `score`, `bbox` [x, y, w, h] and, when the
        outputs have masks, `segmentation` (compressed RLE whose `counts` is a str).
    """
    if len(outputs) != len(image_ids):
        raise ValueError(f"{len(outputs)} outputs but {len(image_ids)} image ids")
    results = []
    for output, image_id in zip(outputs, image_ids, strict=True):
        results.extend(_image_results(output, int(image_id), category_ids, mask_threshold))
    return results


def _image_results(
    output: dict[str, torch.Tensor], image_id: int, category_ids: Sequence[int], threshold: float
) -> list[dict[str, Any]]:
    xywh = xyxy_to_xywh(output["boxes"].detach().float().cpu()).tolist()
    labels = output["labels"].detach().cpu().tolist()
    scores = output["scores"].detach().float().cpu().tolist()
    if any(label < 1 or label > len(category_ids) for label in labels):
        raise ValueError(f"labels must be in 1..{len(category_ids)}, got {sorted(set(labels))}")
    results = [
        {"image_id": image_id, "category_id": int(category_ids[label - 1]), "bbox": box, "score": s}
        for box, label, s in zip(xywh, labels, scores, strict=True)
    ]
    if "masks" in output:
        binary = output["masks"].detach().cpu()[:, 0] > threshold  # (N, 1, H, W) -> (N, H, W)
        for result, mask in zip(results, binary, strict=True):
            result["segmentation"] = mask_to_rle(mask)
    return results
