"""COCO data: a split's annotation file plus the folder its images' `file_name`s are
relative to (`ROOT/<split>.json` and `ROOT/<split>/` by default, `seglab.data.splits`).

Category ids are remapped to labels 1..K in the order of their ids (`category_ids[k - 1]` is
the COCO id of label k). Images without annotations are kept (negatives). Building the
dataset reads the JSON and every image's header; what is kept of each annotation (boxes
clipped, degenerate ones dropped, with a note) is `seglab.data.coco_annotations`. Crowd annotations
(`iscrowd: 1`) are left out of the training targets, as in Detectron, but stay in `coco_gt`,
where COCO evaluation treats them as regions to ignore; in a rasterised semantic target
they become the ignore index 255, and objects of one class that touch are parted by a
background line (`_part_touching`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from seglab.data.cache import DecodedDataset
from seglab.data.coco_annotations import clean_annotations
from seglab.data.findings import Findings
from seglab.data.images import channels_for_modes, load_image, read_header
from seglab.errors import UserError, read_json
from seglab.structures.boxes import xywh_to_xyxy
from seglab.structures.masks import IGNORE_INDEX, segmentation_to_mask


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: COCO annotation file not found")
    coco = read_json(path, "COCO annotation file")
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise UserError(f"{path}: not a COCO file (no 'images' list)")
    for key in ("annotations", "categories"):
        if not isinstance(coco.get(key, []), list):
            raise UserError(f"{path}: '{key}' must be a list")
    for key, entries in (("images", ("id", "file_name")), ("categories", ("id",))):
        for entry in coco.get(key, []):
            if not isinstance(entry, dict) or any(field not in entry for field in entries):
                raise UserError(f"{path}: an entry of '{key}' lacks {' or '.join(entries)}")
    return coco


def _size_problem(path: Path, info: dict, size_hw: tuple[int, int]) -> str | None:
    """The message when the image's size is not the one its JSON entry gives."""
    expected = (info.get("height", size_hw[0]), info.get("width", size_hw[1]))
    if expected == tuple(size_hw):
        return None
    return (
        f"{path}: image is {size_hw[1]}x{size_hw[0]} (after EXIF orientation) but the JSON "
        f"says {expected[1]}x{expected[0]}; fix the JSON or the image"
    )


class CocoDataset(DecodedDataset):
    """COCO detection / instance segmentation data (or semantic, rasterised).

    Attributes:
        json_path, image_dir: the annotation file, the folder of its images.
        split: the split's name (`train`, `val`, ...).
        task: `detection`, `instance` or `semantic`.
        class_names: names of labels 1..K (background excluded).
        category_ids: COCO category id of each label 1..K.
        coco_gt: the annotation dict as read (original category ids), for COCO evaluation.
        images: the JSON's image entries whose file was found and readable.
        class_counts: objects (not crowd) of each label 1..K kept for training.
        in_channels: the channels images are loaded with (`channels`, else 1 when every
            image is grayscale, else 3).
        findings: the problems found while building (`seglab.data.coco_annotations`).
    """

    def __init__(
        self,
        json_path: str | Path,
        image_dir: str | Path,
        split: str,
        *,
        task: str,
        transforms=None,
        channels: int | None = None,
        findings: Findings | None = None,
    ):
        self.split, self.task, self.transforms = split, task, transforms
        self.json_path, self.image_dir = Path(json_path), Path(image_dir)
        self.findings = Findings() if findings is None else findings
        self.coco_gt = _load_json(self.json_path)
        if not self.image_dir.is_dir():
            raise UserError(f"{self.image_dir}: image folder of {self.json_path} not found")
        categories = sorted(self.coco_gt.get("categories", []), key=lambda c: c["id"])
        self.category_ids = [c["id"] for c in categories]
        self.class_names = [str(c.get("name", c["id"])) for c in categories]
        self._label_of = {cid: k for k, cid in enumerate(self.category_ids, 1)}
        if not self.coco_gt["images"]:
            raise UserError(f"{self.json_path}: the dataset has no images")
        modes, sizes = self._scan_images()
        self._annotations = clean_annotations(
            self.json_path,
            self.coco_gt.get("annotations", []),
            sizes,
            {info["id"] for info in self.coco_gt["images"]},
            self._label_of,
            task=task,
            findings=self.findings,
        )
        self.class_counts = self._count_classes()
        self.in_channels = channels or channels_for_modes(modes)
        if findings is None:
            self.findings.conclude(str(self.json_path))

    def _scan_images(self) -> tuple[list[str], dict]:
        """Check every image's header (exists, decodable, size as in the JSON); keep the
        images that pass in `self.images` and return their modes and sizes by id."""
        self.images, modes, sizes = [], [], {}
        for info in self.coco_gt["images"]:
            path = self.image_dir / info["file_name"]
            if not path.is_file():
                self.findings.add(
                    "missing image file",
                    str(path),
                    f"{self.json_path}: image {info['id']} refers to missing file {path}",
                )
                continue
            try:
                mode, size = read_header(path)
            except UserError as error:
                self.findings.add("unreadable image", str(path), str(error))
                continue
            if problem := _size_problem(path, info, size):
                self.findings.add("image size differs from the JSON", str(path), problem)
                continue
            self.images.append(info)
            modes.append(mode)
            sizes[info["id"]] = size
        return modes, sizes

    def _count_classes(self) -> list[int]:
        """Objects (not crowd) of each label 1..K kept for training."""
        counts = [0] * len(self.class_names)
        for kept in self._annotations.values():
            for annotation in kept:
                if not annotation.get("iscrowd", 0):
                    counts[self._label_of[annotation["category_id"]] - 1] += 1
        return counts

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.images[index]["file_name"]

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int):
        info, path = self.images[index], self.image_path(index)
        image = load_image(path, self.in_channels, self.intensity)
        height, width = image.shape[-2:]
        if problem := _size_problem(path, info, (height, width)):  # changed since it was built
            raise UserError(problem)
        annotations = self._annotations[info["id"]]
        if self.task == "semantic":
            target = self._semantic_target(annotations, height, width)
        else:
            target = self._instance_target(annotations, height, width)
        target["image_id"] = info["id"]
        return image, target

    def _instance_target(self, annotations: list[dict], height: int, width: int) -> dict:
        kept = [a for a in annotations if not a.get("iscrowd", 0)]
        xywh = torch.tensor([a["bbox"] for a in kept], dtype=torch.float32).reshape(-1, 4)
        boxes = xywh_to_xyxy(xywh)  # (N, 4): COCO's [x, y, w, h] -> [x0, y0, x1, y1]
        masks = np.zeros((len(kept), height, width), dtype=np.uint8)
        for index, annotation in enumerate(kept):
            masks[index] = self._mask(annotation, height, width)
        return {
            "boxes": tv_tensors.BoundingBoxes(
                boxes, format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=(height, width)
            ),
            "labels": torch.tensor(
                [self._label_of[a["category_id"]] for a in kept], dtype=torch.int64
            ),
            "masks": tv_tensors.Mask(torch.from_numpy(masks)),
        }

    def _semantic_target(self, annotations: list[dict], height: int, width: int) -> dict:
        class_map = np.zeros((height, width), dtype=np.int64)
        instance_ids = np.zeros((height, width), dtype=np.int32)
        crowd = np.zeros((height, width), dtype=bool)
        instance = 0
        for annotation in annotations:
            mask = self._mask(annotation, height, width).astype(bool)
            if annotation.get("iscrowd", 0):
                crowd |= mask
                continue
            instance += 1
            class_map[mask] = self._label_of[annotation["category_id"]]
            instance_ids[mask] = instance
        _part_touching(class_map, instance_ids)
        class_map[crowd & (class_map == 0)] = IGNORE_INDEX
        return {
            "semantic_mask": tv_tensors.Mask(torch.from_numpy(class_map)),
            "instance_ids": tv_tensors.Mask(torch.from_numpy(instance_ids)),
        }

    def _mask(self, annotation: dict, height: int, width: int) -> np.ndarray:
        """The annotation's mask; a detection-only annotation (no segmentation) fills its box."""
        segmentation = annotation.get("segmentation")
        if segmentation:
            try:
                return segmentation_to_mask(segmentation, height, width)
            except (TypeError, ValueError, KeyError, AttributeError) as error:
                raise UserError(
                    f"{self.json_path} annotation {annotation.get('id')} has a malformed "
                    f"segmentation ({error!r}); fix or remove it"
                ) from None
        x, y, w, h = annotation["bbox"]
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = 1
        return mask


def _part_touching(class_map: np.ndarray, instance_ids: np.ndarray) -> None:
    """Make background (in place) every pixel of an object that touches (8-neighbourhood)
    another object of its class: touching objects are parted by a background line 2 px wide,
    as cells are by membranes in the U-Net paper's data; without it their union is one region
    that no post-processing (`predict --instances`) can split again."""
    height, width = instance_ids.shape
    padded = np.pad(instance_ids, 1)
    padded_class = np.pad(class_map, 1)
    touching = np.zeros((height, width), dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            other = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
            other_class = padded_class[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
            touching |= (other > 0) & (other != instance_ids) & (other_class == class_map)
    touching &= instance_ids > 0
    class_map[touching] = 0
    instance_ids[touching] = 0
