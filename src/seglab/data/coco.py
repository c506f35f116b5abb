"""COCO layout: `ROOT/<split>.json` plus images in `ROOT/<split>/`.

Category ids are remapped to labels 1..K in the order of their ids (`category_ids[k - 1]` is
the COCO id of label k). Images without annotations are kept (negatives). Crowd annotations
(`iscrowd: 1`) are left out of the training targets, as in Detectron, but stay in `coco_gt`,
where COCO evaluation treats them as regions to ignore; in a rasterised semantic target
they become the ignore index 255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from seglab.data.cache import DecodedDataset
from seglab.data.images import channels_for_modes, load_image, read_header
from seglab.errors import UserError, read_json
from seglab.structures.masks import IGNORE_INDEX, segmentation_to_mask


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: COCO annotation file not found; expected ROOT/<split>.json")
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


def _check_annotation(path: Path, annotation: dict, known_images, known_categories) -> None:
    try:
        x, y, w, h = (float(v) for v in annotation["bbox"])
        image_id, category_id = annotation["image_id"], annotation["category_id"]
    except (KeyError, TypeError, ValueError):
        raise UserError(
            f"{path}: annotation {annotation.get('id')} lacks a valid bbox/image_id/category_id"
        ) from None
    if w <= 0 or h <= 0:
        raise UserError(
            f"{path}: annotation {annotation.get('id')} has a degenerate box [x, y, w, h] = "
            f"{[x, y, w, h]} (x1 < x0 or y1 < y0 or empty); fix or remove it"
        )
    if image_id not in known_images:
        raise UserError(
            f"{path}: annotation {annotation.get('id')} refers to unknown image {image_id}"
        )
    if category_id not in known_categories:
        raise UserError(
            f"{path}: annotation {annotation.get('id')} has unknown category_id {category_id}"
        )


class CocoDataset(DecodedDataset):
    """COCO detection / instance segmentation data (or semantic, rasterised).

    Attributes:
        task: `detection`, `instance` or `semantic`.
        class_names: names of labels 1..K (background excluded).
        category_ids: COCO category id of each label 1..K.
        coco_gt: the annotation dict as read (original category ids), for COCO evaluation.
        in_channels: 1 when every image is grayscale, else 3.
    """

    def __init__(self, root: str | Path, split: str, *, task: str, transforms=None):
        self.root, self.split, self.task, self.transforms = Path(root), split, task, transforms
        json_path = self.root / f"{split}.json"
        self.image_dir = self.root / split
        self.coco_gt = _load_json(json_path)
        categories = sorted(self.coco_gt.get("categories", []), key=lambda c: c["id"])
        self.category_ids = [c["id"] for c in categories]
        self.class_names = [str(c.get("name", c["id"])) for c in categories]
        self._label_of = {cid: k for k, cid in enumerate(self.category_ids, 1)}
        self.images = self.coco_gt["images"]
        if not self.images:
            raise UserError(f"{json_path}: the dataset has no images")
        self._annotations = self._group_annotations(json_path)
        self.in_channels = self._scan_images()

    def _group_annotations(self, json_path: Path) -> dict:
        by_image = {info["id"]: [] for info in self.images}
        for annotation in self.coco_gt.get("annotations", []):
            _check_annotation(json_path, annotation, by_image, self._label_of)
            by_image[annotation["image_id"]].append(annotation)
        return by_image

    def _scan_images(self) -> int:
        """Check every image's header (exists, decodable, size as in the JSON); channels."""
        modes = []
        for info in self.images:
            path = self._image_path(info)
            mode, size = read_header(path)
            self._check_size(path, info, size)
            modes.append(mode)
        return channels_for_modes(modes)

    @staticmethod
    def _check_size(path: Path, info: dict, size_hw: tuple[int, int]) -> None:
        expected = (info.get("height", size_hw[0]), info.get("width", size_hw[1]))
        if expected != tuple(size_hw):
            raise UserError(
                f"{path}: image is {size_hw[1]}x{size_hw[0]} but the JSON says "
                f"{expected[1]}x{expected[0]}; fix the JSON or the image"
            )

    def _image_path(self, info: dict) -> Path:
        path = self.image_dir / info["file_name"]
        if not path.is_file():
            raise UserError(
                f"{self.root / (self.split + '.json')}: image {info['id']} refers to missing "
                f"file {path}"
            )
        return path

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int):
        info = self.images[index]
        path = self._image_path(info)
        image = load_image(path, self.in_channels)
        height, width = image.shape[-2:]
        self._check_size(path, info, (height, width))  # the file may have changed since
        annotations = self._annotations[info["id"]]
        if self.task == "semantic":
            target = self._semantic_target(annotations, height, width)
        else:
            target = self._instance_target(annotations, height, width)
        target["image_id"] = info["id"]
        return image, target

    def _instance_target(self, annotations: list[dict], height: int, width: int) -> dict:
        kept = [a for a in annotations if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in kept], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
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
                    f"{self.root / (self.split + '.json')}: annotation {annotation.get('id')} "
                    f"has a malformed segmentation ({error!r})"
                ) from None
        x, y, w, h = annotation["bbox"]
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = 1
        return mask
