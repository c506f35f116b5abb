"""Mask-folder layout (semantic segmentation): `ROOT/<split>/images/*` and
`ROOT/<split>/masks/<same stem>.png`, one class index per pixel (0 background, 255 ignored).

Class names, for indices 1..K: `ROOT/classes.txt` (one name per line) or `ROOT/classes.json`
(a JSON list of names), background not listed. Without either file the masks of every
split under ROOT are read once and the classes are named "1".."K", K the largest index seen
(255 excluded); ship a classes file to skip that scan.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from seglab.data.cache import DecodedDataset
from seglab.data.images import list_images, load_image, load_index_mask, read_header, scan_channels
from seglab.errors import UserError, read_json
from seglab.structures.masks import IGNORE_INDEX

_SPLITS = ("train", "val", "test")


def _read_class_file(root: Path) -> list[str] | None:
    text_path, json_path = root / "classes.txt", root / "classes.json"
    if text_path.is_file():
        names = [line.strip() for line in text_path.read_text(encoding="utf-8").splitlines()]
        return [name for name in names if name]
    if json_path.is_file():
        names = read_json(json_path, "class file")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise UserError(f"{json_path}: expected a JSON list of class names")
        return names
    return None


def _names_from_masks(root: Path) -> list[str]:
    largest = 0
    for split in _SPLITS:
        mask_dir = root / split / "masks"
        for path in sorted(mask_dir.glob("*.png")) if mask_dir.is_dir() else []:
            values = np.unique(load_index_mask(path))
            values = values[values != IGNORE_INDEX]
            largest = max(largest, int(values.max()) if len(values) else 0)
    return [str(k) for k in range(1, largest + 1)]


class MaskFolderDataset(DecodedDataset):
    """Images with class-index masks (task `semantic`).

    Attributes:
        class_names: names of classes 1..K (background excluded).
        in_channels: 1 when every image is grayscale, else 3.
    """

    task = "semantic"

    def __init__(self, root: str | Path, split: str, *, transforms=None):
        self.root, self.transforms = Path(root), transforms
        image_dir, mask_dir = self.root / split / "images", self.root / split / "masks"
        for folder in (image_dir, mask_dir):
            if not folder.is_dir():
                raise UserError(
                    f"{folder}: folder not found; the masks layout needs "
                    "<split>/images and <split>/masks"
                )
        self.image_paths = list_images(image_dir)
        if not self.image_paths:
            raise UserError(f"{image_dir}: no images found (empty dataset)")
        self.mask_paths = [mask_dir / f"{path.stem}.png" for path in self.image_paths]
        self._check_pairs()
        self.in_channels = scan_channels(self.image_paths)
        self.class_names = _read_class_file(self.root) or _names_from_masks(self.root)

    def _check_pairs(self) -> None:
        for image_path, mask_path in zip(self.image_paths, self.mask_paths, strict=True):
            if not mask_path.is_file():
                raise UserError(f"{mask_path}: mask not found for image {image_path}")
            image_size, mask_size = read_header(image_path)[1], read_header(mask_path)[1]
            if image_size != mask_size:
                raise UserError(
                    f"{mask_path}: mask is {mask_size[1]}x{mask_size[0]} but its image "
                    f"{image_path.name} is {image_size[1]}x{image_size[0]}; they must match"
                )

    def __len__(self) -> int:
        return len(self.image_paths)

    def load(self, index: int):
        image = load_image(self.image_paths[index], self.in_channels)
        class_map = load_index_mask(self.mask_paths[index])
        num_classes = len(self.class_names)
        invalid = (class_map > num_classes) & (class_map != IGNORE_INDEX)
        if invalid.any():
            raise UserError(
                f"{self.mask_paths[index]}: class index {int(class_map[invalid].max())} "
                f"exceeds the {num_classes} classes (0 background, 255 ignored)"
            )
        return image, {
            "semantic_mask": tv_tensors.Mask(torch.from_numpy(class_map)),
            "image_id": index,
        }
