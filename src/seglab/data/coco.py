"""COCO data: a split's annotation file plus the folder its images' `file_name`s are
relative to (`ROOT/<split>.json` and `ROOT/<split>/` by default, `seglab.data.splits`).

Category ids are remapped to labels 1..K in the order of their ids (`category_ids[k - 1]` is
the COCO id of label k). Images without annotations are kept (negatives). Opened for
training, the dataset reads the JSON and the headers of a seeded sample of `SAMPLE` images
(the channels; files that exist and decode, at their JSON size); every other image is
checked when a step loads it (one line naming the file), and `seglab data check`
(`every_file`) reads every header up front. What is kept of each annotation (boxes
clipped, degenerate ones dropped, with a note) is `seglab.data.coco_annotations`. Crowd annotations
(`iscrowd: 1`) are left out of the training targets, as in Detectron, but stay in `coco_gt`,
where COCO evaluation treats them as regions to ignore; in a rasterised semantic target
they become the ignore index 255, and objects of one class that touch are parted by a
background line (`_part_touching`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from seglab.data.cache import DecodedDataset
from seglab.data.coco_annotations import clean_annotations
from seglab.data.coco_arrays import ImageTable
from seglab.data.findings import Findings
from seglab.data.images import channels_for_modes, header_or_problem, load_image
from seglab.data.listing import SAMPLE, sample_indices
from seglab.data.parallel import map_files
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


def _header(image_dir: Path, file_name: str) -> tuple[str, tuple[int, int]] | str | None:
    """`read_header` of the image, its problem line, or None when the file is missing."""
    path = image_dir / file_name
    return header_or_problem(path) if path.is_file() else None


def _same_size(info: dict, size_hw: tuple[int, int]) -> bool:
    """Whether the image's size is the one its JSON entry gives (any, when none)."""
    return (info.get("height", size_hw[0]), info.get("width", size_hw[1])) == tuple(size_hw)


def _json_size(info: dict) -> tuple[int, int] | None:
    """(height, width) of an image as its JSON entry gives them, None without both."""
    height, width = info.get("height"), info.get("width")
    return (height, width) if type(height) is int and type(width) is int else None


def _size_problem(path: Path, info: dict, size_hw: tuple[int, int]) -> str | None:
    """The message when the image's size is not the one its JSON entry gives."""
    if _same_size(info, size_hw):
        return None
    expected = (info.get("height", size_hw[0]), info.get("width", size_hw[1]))
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
        coco_gt: the annotation dict as read (original category ids), for COCO evaluation;
            without `keep_coco_gt` it is read again from the file on first use.
        images: the JSON's image entries (`id`, `file_name`, `height`, `width`) whose file
            was found and readable (`seglab.data.coco_arrays.ImageTable`).
        class_counts: objects (not crowd) of each label 1..K kept for training.
        in_channels: the channels images are loaded with (`channels`, else 1 when every
            image is grayscale, else 3).
        findings: the problems found while building (`seglab.data.coco_annotations`).
        every_file: read every image's header (else the sample's, and those of images whose
            JSON entry has no size).
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
        keep_coco_gt: bool = True,
        every_file: bool = True,
    ):
        self.split, self.task, self.transforms = split, task, transforms
        self.json_path, self.image_dir = Path(json_path), Path(image_dir)
        self.findings = Findings() if findings is None else findings
        coco = _load_json(self.json_path)
        if not self.image_dir.is_dir():
            raise UserError(f"{self.image_dir}: image folder of {self.json_path} not found")
        categories = sorted(coco.get("categories", []), key=lambda c: c["id"])
        self.category_ids = [c["id"] for c in categories]
        self.class_names = [str(c.get("name", c["id"])) for c in categories]
        self._label_of = {cid: k for k, cid in enumerate(self.category_ids, 1)}
        if not coco["images"]:
            raise UserError(f"{self.json_path}: the dataset has no images")
        readable, modes, sizes = self._scan_images(coco["images"], every_file)
        self.images = ImageTable(readable)
        self._annotations = clean_annotations(
            self.json_path,
            coco.get("annotations", []),
            sizes,
            {info["id"] for info in coco["images"]},
            self._label_of,
            task=task,
            findings=self.findings,
        )
        slot_of = {image_id: slot for slot, image_id in enumerate(sizes)}
        self._slots = np.array([slot_of[info["id"]] for info in readable], dtype=np.int64)
        self.class_counts = self._count_classes()
        self.in_channels = channels or channels_for_modes(modes)
        # the parsed file is most of the memory at COCO's scale: kept only when asked
        self._coco_gt = coco if keep_coco_gt else None
        if findings is None:
            self.findings.conclude(str(self.json_path))

    @property
    def coco_gt(self) -> dict:
        if self._coco_gt is None:
            self._coco_gt = _load_json(self.json_path)
        return self._coco_gt

    def _scan_images(
        self, entries: list[dict], every_file: bool
    ) -> tuple[list[dict], list[str], dict]:
        """Check the headers of every image, or of the sample and of the images whose JSON
        entry has no size (exists, decodable, size as in the JSON), over the usable cores;
        return the entries that pass, the modes read, and every entry's size by id."""
        read = np.ones(len(entries), dtype=bool)
        if not every_file:
            read[:] = [_json_size(info) is None for info in entries]
            read[sample_indices(len(entries), SAMPLE)] = True
        headers = iter(map_files(
            functools.partial(_header, self.image_dir),
            [info["file_name"] for info, chosen in zip(entries, read, strict=True) if chosen],
            desc=f"{self.split} images",
        ))  # fmt: skip
        readable, modes, sizes = [], [], {}
        for info, chosen in zip(entries, read, strict=True):
            if not chosen:  # checked when loaded
                readable.append(info)
                sizes[info["id"]] = _json_size(info)
                continue
            header = next(headers)
            if isinstance(header, tuple) and _same_size(info, header[1]):
                readable.append(info)
                modes.append(header[0])
                sizes[info["id"]] = header[1]
            else:
                self._image_finding(info, header)
        return readable, modes, sizes

    def _image_finding(self, info: dict, header: tuple | str | None) -> None:
        """Add the problem of an image whose header is None (missing file), a problem
        line (unreadable) or a size other than the JSON's."""
        path = self.image_dir / info["file_name"]
        if header is None:
            self.findings.add(
                "missing image file",
                str(path),
                f"{self.json_path}: image {info['id']} refers to missing file {path}",
            )
        elif isinstance(header, str):
            self.findings.add("unreadable image", str(path), header)
        else:
            problem = _size_problem(path, info, header[1])
            self.findings.add("image size differs from the JSON", str(path), problem)

    def _count_classes(self) -> list[int]:
        """Objects (not crowd) of each label 1..K kept for training."""
        kept = self._annotations
        counts = np.bincount(kept.labels[~kept.crowd], minlength=len(self.class_names) + 1)
        return counts[1:].tolist()

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
        rows = self._annotations.rows_of(self._slots[index])  # (N,) this image's annotations
        if self.task == "semantic":
            target = self._semantic_target(rows, height, width)
        else:
            target = self._instance_target(rows, height, width)
        target["image_id"] = info["id"]
        return image, target

    def _instance_target(self, rows: np.ndarray, height: int, width: int) -> dict:
        kept_rows = rows[~self._annotations.crowd[rows]]
        xywh = torch.from_numpy(self._annotations.boxes[kept_rows]).to(torch.float32)
        boxes = xywh_to_xyxy(xywh)  # (N, 4): COCO's [x, y, w, h] -> [x0, y0, x1, y1]
        masks = np.zeros((len(kept_rows), height, width), dtype=np.uint8)
        for index, row in enumerate(kept_rows):
            masks[index] = self._mask(row, height, width)
        return {
            "boxes": tv_tensors.BoundingBoxes(
                boxes, format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=(height, width)
            ),
            "labels": torch.from_numpy(self._annotations.labels[kept_rows]),
            "masks": tv_tensors.Mask(torch.from_numpy(masks)),
        }

    def _semantic_target(self, rows: np.ndarray, height: int, width: int) -> dict:
        class_map = np.zeros((height, width), dtype=np.int64)
        instance_ids = np.zeros((height, width), dtype=np.int32)
        crowd = np.zeros((height, width), dtype=bool)
        instance = 0
        for row in rows:
            mask = self._mask(row, height, width).astype(bool)
            if self._annotations.crowd[row]:
                crowd |= mask
                continue
            instance += 1
            class_map[mask] = self._annotations.labels[row]
            instance_ids[mask] = instance
        _part_touching(class_map, instance_ids)
        class_map[crowd & (class_map == 0)] = IGNORE_INDEX
        return {
            "semantic_mask": tv_tensors.Mask(torch.from_numpy(class_map)),
            "instance_ids": tv_tensors.Mask(torch.from_numpy(instance_ids)),
        }

    def _mask(self, row: int, height: int, width: int) -> np.ndarray:
        """Annotation `row`'s mask, rasterised now (polygons are kept as coordinates); a
        detection-only annotation (no segmentation) fills its box."""
        segmentation = self._annotations.segmentation(row)
        if segmentation:
            try:
                return segmentation_to_mask(segmentation, height, width)
            except (TypeError, ValueError, KeyError, AttributeError) as error:
                raise UserError(
                    f"{self.json_path} annotation {self._annotations.annotation(row)['id']} "
                    f"has a malformed segmentation ({error!r}); fix or remove it"
                ) from None
        x, y, w, h = self._annotations.boxes[row].tolist()
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
