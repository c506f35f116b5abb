"""Object instances from a U-Net's class probabilities, as COCO instance results.

A semantic model gives a class per pixel, not objects. Objects are recovered as
- `components`: connected regions (8-connectivity) of each class; or
- `watershed`: the same regions split along the valleys of their distance transform
  (one marker per distance peak, `skimage.segmentation.watershed`), which separates touching
  objects of one class, the case the paper's border weight map trains the U-Net for.

The result has the detectors' output format (`boxes`, `labels`, `scores`, `masks`), so
`seglab.data.coco_results.to_coco_results` turns it into COCO results (RLE masks) and
`seglab eval --gt GT.json --pred PRED.json --iou-type segm` scores a U-Net and a Mask R-CNN on
the same instance AP.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.segmentation import watershed
from torch import Tensor, nn

from seglab.errors import UserError

METHODS = ("components", "watershed")
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def instances_from_probabilities(
    probabilities: Tensor,
    *,
    method: str = "components",
    threshold: float = 0.5,
    min_area: int = 16,
    min_distance: int = 5,
) -> dict[str, Tensor]:
    """Instances from class probabilities (C, H, W) (class 0 background).

    A pixel is foreground when 1 - p(background) > `threshold`; its class is the most
    probable of classes 1..C-1. With `components`, the background line by which the training
    targets part touching objects of a class is given back to them (`_close_partings`). Each
    instance's score is its class's mean probability over its pixels; instances smaller than
    `min_area` pixels are dropped.

    Args:
        method: "components" or "watershed" (markers at distance-transform peaks at least
            `min_distance` pixels apart).

    Returns:
        {"boxes": (N, 4) float32 xyxy, "labels": (N,) int64 in 1..C-1, "scores": (N,),
        "masks": (N, 1, H, W) float32 in {0, 1}}, sorted by decreasing score.
    """
    if method not in METHODS:
        raise UserError(f"instances: method {method!r} is not one of {', '.join(METHODS)}")
    probabilities = probabilities.detach().float().cpu()
    foreground = (1 - probabilities[0] > threshold).numpy()
    class_map = (probabilities[1:].argmax(dim=0) + 1).numpy()  # (H, W) in 1..C-1
    masks, labels, scores = [], [], []
    for label in range(1, probabilities.shape[0]):
        region = foreground & (class_map == label)
        instance_ids = _split(region, method, min_distance)
        if method == "components":  # watershed's split objects touch: no line to give back
            instance_ids = _close_partings(instance_ids, ~foreground)
        for instance in range(1, int(instance_ids.max()) + 1):
            mask = instance_ids == instance
            if mask.sum() < min_area:
                continue
            masks.append(mask)
            labels.append(label)
            scores.append(float(probabilities[label].numpy()[mask].mean()))
    return _as_output(masks, labels, scores, probabilities.shape[-2:])


def _split(region: np.ndarray, method: str, min_distance: int) -> np.ndarray:
    """Instance ids (H, W) int, 0 outside `region`."""
    components, count = ndimage.label(region, structure=_EIGHT_CONNECTED)
    if method == "components" or count == 0:
        return components
    distance = ndimage.distance_transform_edt(region)
    peaks = peak_local_max(
        distance, min_distance=min_distance, labels=components, exclude_border=False
    )
    markers = np.zeros(region.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    split = watershed(-distance, markers, mask=region)
    # a component without a peak (possible on plateaus) stays one instance
    unreached = region & (split == 0)
    if unreached.any():
        rest, _ = ndimage.label(unreached, structure=_EIGHT_CONNECTED)
        split[unreached] = rest[unreached] + split.max()
    return split


def _close_partings(instance_ids: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Give back the line that parts touching objects in the training targets
    (`seglab.data.coco`: each object loses its pixels that touch another, a 2 px gap): a
    `free` pixel next to one instance with another instance at most 2 px away joins the
    first, unless two instances are next to it (the corners where objects that do touch
    meet). Free borders elsewhere stay as they are."""
    if instance_ids.max() < 2:
        return instance_ids
    unused = int(instance_ids.max()) + 1  # above every id: the minimum ignores background
    ids_or_unused = np.where(instance_ids > 0, instance_ids, unused)
    beside = ndimage.maximum_filter(instance_ids, size=3)
    only_one_beside = ndimage.minimum_filter(ids_or_unused, size=3) == beside
    another_near = ndimage.minimum_filter(ids_or_unused, size=5) < ndimage.maximum_filter(
        instance_ids, size=5
    )
    between = free & (instance_ids == 0) & (beside > 0) & only_one_beside & another_near
    return np.where(between, beside, instance_ids)


def _as_output(masks, labels, scores, size_hw) -> dict[str, Tensor]:
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    stacked = np.stack([masks[i] for i in order]) if masks else np.zeros((0, *size_hw), bool)
    boxes = [_box(mask) for mask in stacked]
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([labels[i] for i in order], dtype=torch.int64),
        "scores": torch.tensor([scores[i] for i in order], dtype=torch.float32),
        "masks": torch.from_numpy(stacked).float()[:, None],  # (N, H, W) -> (N, 1, H, W)
    }


def _box(mask: np.ndarray) -> list[float]:
    """xyxy of a binary mask, no +1: the box of pixel columns 2..4 is [2, ., 5, .]."""
    rows, columns = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return [columns[0], rows[0], columns[-1] + 1, rows[-1] + 1]


def predict_instances(
    model: nn.Module,
    images: list[Tensor],
    *,
    tile_size: int | None = None,
    output_sizes: list[tuple[int, int]] | None = None,
    **options,
) -> list[dict[str, Tensor]]:
    """Run a semantic model on images and turn each prediction into instances.

    Args:
        model: a U-Net (or any semantic model giving `logits`).
        images: float (C, H, W) in [0, 1], any sizes.
        tile_size: None predicts each image whole (a `valid` model is always tiled, so its
            output covers the image); an int uses `seglab.predict_tiled` with that tile size.
        output_sizes: (H, W) per image to resize the probabilities to (default: the image's).
        **options: passed to `instances_from_probabilities`.
    """
    from seglab.inference.tiling import predict_tiled, resize_probabilities

    output_sizes = output_sizes or [image.shape[-2:] for image in images]
    device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.eval()
    outputs = []
    with torch.no_grad():
        for image, size_hw in zip(images, output_sizes, strict=True):
            if tile_size is None and getattr(model, "padding", "same") == "same":
                probabilities = model([image.to(device)])[0]["logits"].float().softmax(dim=0)
            else:
                probabilities = predict_tiled(model, image, tile_size=tile_size or 256)
            probabilities = resize_probabilities(probabilities, size_hw)
            outputs.append(instances_from_probabilities(probabilities, **options))
    model.train(was_training)
    return outputs


def coco_instance_results(model: nn.Module, dataset, **options) -> list[dict]:
    """COCO instance results (RLE masks) of a semantic model on every image of a COCO dataset.

    Predictions are resized to each image's size in `dataset.coco_gt`, so they score against
    that ground truth whatever resizing the dataset's transforms did. `options` as in
    `predict_instances`. Score with `seglab.evaluation.coco.evaluate_coco(dataset.coco_gt,
    results, "segm")` or save as JSON for `seglab eval --gt --pred`.
    """
    from seglab.data.coco_results import to_coco_results

    sizes = {info["id"]: (info["height"], info["width"]) for info in dataset.coco_gt["images"]}
    results: list[dict] = []
    for index in range(len(dataset)):
        image, target = dataset[index]
        image_id = target["image_id"]
        output = predict_instances(model, [image], output_sizes=[sizes[image_id]], **options)
        results += to_coco_results(output, [image_id], dataset.category_ids)
    return results
