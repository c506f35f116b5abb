"""One pass over a dataset: the validation loss and the task's metrics (`evaluate`).

- detection / instance: COCO box (and mask) AP through pycocotools (`coco.py`);
- semantic: mIoU, Dice, pixel accuracy from an exact pixel confusion matrix over every
  pixel of each image (`semantic.py`); a `valid`-padding U-Net, whose output is smaller
  than its input, is run by overlap-tile over each whole image, as `seglab predict` runs it;
- classification: accuracy, per-class recall, confusion matrix (`classification.py`).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from seglab.data import batch_to_device, collate
from seglab.data.coco_results import to_coco_results
from seglab.errors import UserError
from seglab.evaluation.classification import classification_metrics
from seglab.evaluation.coco import check_coco_gt, evaluate_coco
from seglab.evaluation.confusion import ConfusionMatrix
from seglab.evaluation.semantic import semantic_metrics
from seglab.inference.tiling import tiled_logits
from seglab.progress import progress as progress_display
from seglab.structures.masks import IGNORE_INDEX

__all__ = [
    "PRIMARY_METRICS",
    "TILE_SIZE",
    "evaluate",
    "metric_value",
    "primary_metric",
    "seconds_per_pass",
]

# A valid-padding U-Net's tiles: `seglab predict`'s default (`--tile-size`), so that the
# masks it writes are the ones scored here, pixel for pixel.
TILE_SIZE = 256

# task -> the metric that ranks models (higher is better); "a.b" is metrics["a"]["b"].
PRIMARY_METRICS = {
    "classification": "accuracy",
    "detection": "bbox.AP",
    "instance": "segm.AP",
    "semantic": "mIoU",
}


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    progress: bool = False,
    curves: dict | None = None,
    shard: tuple[int, int] = (0, 1),
) -> dict[str, Any]:
    """Validation loss and the metrics of `model.task` over `dataset`, in one pass.

    The model runs in eval mode under `torch.no_grad()` through `forward_with_losses`, so
    the same forward gives the outputs and the validation loss; its train/eval mode is
    restored afterwards. Detection outputs must be in the frame of the dataset's images
    (the data does not resize detection images at evaluation; the model maps its boxes back).
    Semantic outputs must cover the whole mask: a `valid`-padding U-Net is run tile by tile
    over each image (`seglab.inference.tiling.tiled_logits`, tiles of TILE_SIZE as
    `seglab predict` uses), so every pixel of an image of any size is scored.

    `curves`, when given, receives the precision-recall curves of each COCO iou type
    (detectors: `seglab.evaluation.coco.precision_recall_curves`). `shard = (rank, N)`:
    one of N processes of a `torch.distributed` group (DDP training), each passing over
    the items rank, rank + N, ...; their losses, results and confusion matrices are merged,
    so every process returns the metrics of the whole dataset.

    Returns:
        {"loss": the summed losses of each batch, averaged over batches weighted by their
        number of images, **task metrics} (see PRIMARY_METRICS and docs/conventions.md).
    """
    if len(dataset) == 0:
        raise UserError(f"{getattr(dataset, 'root', 'dataset')}: no images to evaluate")
    rank, processes = shard
    items = dataset if processes == 1 else Subset(dataset, range(rank, len(dataset), processes))
    loader = DataLoader(items, batch_size=batch_size, shuffle=False, collate_fn=collate)
    accumulator = _ACCUMULATORS[model.task](dataset)
    was_training = model.training
    model.to(device).eval()
    loss_sum, images_seen = 0.0, 0
    try:
        with torch.no_grad():
            for batch in progress_display(loader, desc="eval", unit="batch", enabled=progress):
                images, targets, outputs, losses = _forward_batch(model, batch, device)
                # Weighted by the batch's size: the mean over images of a loss that is a mean
                # over its images (a batch-wide Dice is not: docs/conventions.md, Evaluation).
                loss_sum += float(sum(loss.float() for loss in losses.values())) * len(images)
                images_seen += len(images)
                accumulator.update(images, targets, outputs)
    finally:
        model.train(was_training)
    if processes > 1:
        loss_sum, images_seen = _merge_processes(accumulator, loss_sum, images_seen)
    metrics = {"loss": loss_sum / images_seen, **accumulator.compute()}
    if curves is not None:
        curves.update(getattr(accumulator, "curves", {}))
    return metrics


def _forward_batch(model: nn.Module, batch, device) -> tuple[list, list, Any, dict]:
    """(images, targets, outputs, losses) of one collated batch, the model in eval mode."""
    images, targets = batch_to_device(batch, device)
    if getattr(model, "padding", None) == "valid":
        outputs, losses = _whole_image_outputs(model, images, targets)
    else:
        outputs, losses = model.forward_with_losses(images, targets)
    return images, targets, outputs, losses


def _whole_image_outputs(model: nn.Module, images: list, targets: list[dict]):
    """A valid-padding U-Net's outputs and losses over whole images.

    Its output is the centre of its input (U-Net paper §2): a forward pass of the image
    would score the centre only, and only at the sizes its poolings allow. Overlap-tile
    gives the logits of every pixel at any size; the losses are the model's own on those
    logits, image by image, averaged over the batch's images.
    """
    outputs, per_image = [], []
    for image, target in zip(images, targets, strict=True):
        logits = tiled_logits(model, image, TILE_SIZE)  # (C, H, W), float32 on the CPU
        outputs.append({"logits": logits})
        per_image.append(model.losses(logits[None], [target]))
    losses = {name: torch.stack([each[name] for each in per_image]).mean() for name in per_image[0]}
    return outputs, losses


def seconds_per_pass(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    shard: tuple[int, int] = (0, 1),
) -> float:
    """The seconds of one `evaluate` pass over this process's share of `dataset`, estimated
    from its first batch (read and run as `evaluate` does) times the number of batches.

    The metric's own computation (pycocotools) is left out: a few seconds for hundreds of
    images, against minutes of forward passes on a CPU. The model's mode is restored.
    """
    rank, processes = shard
    share = len(range(rank, len(dataset), processes))
    first = [dataset[index] for index in range(min(batch_size, len(dataset)))]
    was_training = model.training
    model.to(device).eval()
    started = time.perf_counter()
    try:
        with torch.no_grad():
            _forward_batch(model, collate(first), device)
    finally:
        model.train(was_training)
    seconds_per_image = (time.perf_counter() - started) / len(first)
    return seconds_per_image * share


def _merge_processes(accumulator, loss_sum: float, images_seen: int) -> tuple[float, int]:
    """Every process's share of the pass, merged into `accumulator`; the summed loss and
    image count of all processes."""
    shares: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(shares, (accumulator.share(), loss_sum, images_seen))
    accumulator.merge([share for share, _, _ in shares])
    return sum(loss for _, loss, _ in shares), sum(count for _, _, count in shares)


def primary_metric(metrics: dict[str, Any], task: str) -> tuple[str, float]:
    """The (name, value) that ranks models of `task`, e.g. ("segm.AP", 0.41)."""
    name = PRIMARY_METRICS[task]
    value = metric_value(metrics, name)
    if value is None:
        raise KeyError(f"the metrics of a {task} model have no number {name!r}")
    return name, value


def metric_value(metrics: dict[str, Any], dotted: str) -> float | None:
    """`metric_value(m, "segm.AP")` -> m["segm"]["AP"] as a float; None when absent."""
    value: Any = metrics
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, int | float) else None


class _CocoAccumulator:
    """Collects COCO results; box AP, plus mask AP for instance segmentation."""

    def __init__(self, dataset: Dataset, iou_types: tuple[str, ...]) -> None:
        # Check the ground truth before the pass over the data, not after it.
        source = str(getattr(dataset, "json_path", "ground truth"))
        check_coco_gt(dataset.coco_gt, source, need_masks="segm" in iou_types)
        self.coco_gt = dataset.coco_gt
        self.category_ids = dataset.category_ids
        self.iou_types = iou_types
        self.results: list[dict] = []
        self.curves: dict[str, Any] = {}  # iou type -> precision-recall curves

    def update(self, images: list, targets: list[dict], outputs: list[dict]) -> None:
        for image, output in zip(images, outputs, strict=True):
            masks = output.get("masks")
            if masks is None and "segm" in self.iou_types:
                raise ValueError("an instance segmentation model must output 'masks'")
            if masks is not None and masks.shape[-2:] != image.shape[-2:]:
                raise ValueError(
                    f"masks {tuple(masks.shape[-2:])} must be in the image frame "
                    f"{tuple(image.shape[-2:])}"
                )
        image_ids = [target["image_id"] for target in targets]
        self.results += to_coco_results(outputs, image_ids, self.category_ids)

    def share(self) -> list[dict]:
        return self.results

    def merge(self, shares: list[list[dict]]) -> None:
        self.results = [result for share in shares for result in share]

    def compute(self) -> dict[str, Any]:
        """{iou type: COCO AP}, and "per_class_AP": {iou type: {class: {"AP", "AP50"}}};
        keeps the precision-recall curves of each iou type in `self.curves`."""
        metrics: dict[str, Any] = {}
        per_class: dict[str, Any] = {}
        for iou in self.iou_types:
            details: dict[str, Any] = {}
            metrics[iou] = evaluate_coco(self.coco_gt, self.results, iou, details=details)
            per_class[iou] = details["per_class"]
            self.curves[iou] = details["curves"]
        return {**metrics, "per_class_AP": per_class}


def _confusion_share(self) -> ConfusionMatrix | None:
    return self.confusion


def _confusion_merge(self, shares: list[ConfusionMatrix | None]) -> None:
    """The sum of the processes' confusion matrices (a process without items has None)."""
    present = [share for share in shares if share is not None]
    self.confusion = present[0]
    for share in present[1:]:
        self.confusion.matrix += share.matrix


class _SemanticAccumulator:
    """Pixel confusion matrix of the argmax of the class probabilities against
    `semantic_mask` (255 ignored), over every pixel of the mask."""

    def __init__(self, dataset: Dataset) -> None:
        self.class_names = ["background", *dataset.class_names]
        self.confusion: ConfusionMatrix | None = None

    def update(self, images: list, targets: list[dict], outputs: list[dict]) -> None:
        for target, output in zip(targets, outputs, strict=True):
            logits, mask = output["logits"], target["semantic_mask"]  # (C, H, W), (H, W)
            if logits.shape[-2:] != mask.shape[-2:]:
                raise ValueError(f"semantic logits {tuple(logits.shape[-2:])} must cover the "
                                 f"whole mask {tuple(mask.shape[-2:])}")  # fmt: skip
            if self.confusion is None:
                self.confusion = ConfusionMatrix(logits.shape[0], ignore_index=IGNORE_INDEX)
            # The argmax of the probabilities, as `seglab predict` takes it: the softmax's
            # rounding can tie two classes that the logits order, and both must agree.
            self.confusion.update(logits.float().softmax(dim=0).argmax(dim=0), mask)

    def compute(self) -> dict[str, Any]:
        return semantic_metrics(self.confusion.matrix, self.class_names)

    share, merge = _confusion_share, _confusion_merge


class _ClassificationAccumulator:
    """Image confusion matrix of argmax(logits) against `labels`."""

    def __init__(self, dataset: Dataset) -> None:
        self.class_names = list(dataset.class_names)
        self.confusion: ConfusionMatrix | None = None

    def update(self, images: list, targets: list[dict], outputs: list[dict]) -> None:
        predicted = torch.stack([output["logits"].argmax() for output in outputs])
        labels = torch.stack([torch.as_tensor(target["labels"]).reshape(()) for target in targets])
        if self.confusion is None:
            self.confusion = ConfusionMatrix(outputs[0]["logits"].shape[-1], ignore_index=None)
        self.confusion.update(predicted, labels)

    def compute(self) -> dict[str, Any]:
        return classification_metrics(self.confusion.matrix, self.class_names)

    share, merge = _confusion_share, _confusion_merge


_ACCUMULATORS = {
    "classification": _ClassificationAccumulator,
    "detection": lambda dataset: _CocoAccumulator(dataset, ("bbox",)),
    "instance": lambda dataset: _CocoAccumulator(dataset, ("bbox", "segm")),
    "semantic": _SemanticAccumulator,
}
