"""Mask-folder layout (semantic segmentation): `ROOT/<split>/images/*` and
`ROOT/<split>/masks/<same stem>.png`, one value per pixel.

Class names, for classes 1..K: `ROOT/classes.txt` (one name per line) or `ROOT/classes.json`
(a JSON list of names), background not listed; without either they are "1".."K". How stored
values become classes (class indices, 0/255 binary masks, `data.mask_values`) is
`seglab.data.mask_values`. Building the dataset reads every mask of every split under ROOT
once (values, and sizes against their images), so a bad mask stops a run before its first
step.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision import tv_tensors

from seglab.data.cache import DecodedDataset
from seglab.data.findings import Findings
from seglab.data.images import (
    channels_for_modes,
    list_images,
    load_image,
    load_index_mask,
    read_header,
)
from seglab.data.mask_values import (
    remember_values,
    resolve_mask_classes,
    stored_values,
    unknown_values_message,
)
from seglab.data.parallel import map_files
from seglab.errors import UserError, read_json

_SPLITS = ("train", "val", "test")


def _read_class_file(root: Path) -> tuple[list[str] | None, Path | None]:
    """(names of classes 1..K, the file they came from), or (None, None) without a file."""
    text_path, json_path = root / "classes.txt", root / "classes.json"
    if text_path.is_file():
        names = [line.strip() for line in text_path.read_text(encoding="utf-8").splitlines()]
        return [name for name in names if name], text_path
    if json_path.is_file():
        names = read_json(json_path, "class file")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise UserError(f"{json_path}: expected a JSON list of class names")
        return names, json_path
    return None, None


def _values_or_none(path: Path) -> tuple[int, ...] | None:
    try:
        return stored_values(path)
    except UserError:
        return None


def _values_of_other_splits(root: Path, split: str) -> set[int]:
    """Stored values of the readable masks of the other splits (their problems are theirs)."""
    paths = []
    for other in sorted({*_SPLITS, split} - {split}):
        mask_dir = root / other / "masks"
        paths += sorted(mask_dir.glob("*.png")) if mask_dir.is_dir() else []
    values: set[int] = set()
    found_values = map_files(_values_or_none, paths, desc="other splits' masks", unit="mask")
    for path, found in zip(paths, found_values, strict=True):
        if found is not None:
            remember_values(path, found)
            values.update(found)
    return values


def _check_pair(pair: tuple[Path, Path]) -> tuple:
    """`(True, image mode, stored mask values)` for a usable pair, else `(False, kind,
    place, message)`: the problem, for the dataset's findings."""
    image_path, mask_path = pair
    if not mask_path.is_file():
        return (
            False,
            "missing mask",
            str(mask_path),
            f"{mask_path}: mask not found for image {image_path}",
        )
    try:
        mode, image_size = read_header(image_path)
    except UserError as error:
        return False, "unreadable image", str(image_path), str(error)
    try:
        mask_size, mask_values = read_header(mask_path)[1], stored_values(mask_path)
    except UserError as error:
        return False, "unreadable mask", str(mask_path), str(error)
    if image_size != mask_size:
        return (
            False,
            "mask size differs from its image",
            str(mask_path),
            f"{mask_path}: mask is {mask_size[1]}x{mask_size[0]} but its "
            f"image {image_path.name} is {image_size[1]}x{image_size[0]} "
            "(after EXIF orientation); they must match",
        )
    return True, mode, mask_values


class MaskFolderDataset(DecodedDataset):
    """Images with one-value-per-pixel masks (task `semantic`).

    Attributes:
        class_names: names of classes 1..K (background excluded).
        class_counts: images of this split holding each class 1..K.
        mask_classes: the stored value -> class rule (`seglab.data.mask_values`).
        in_channels: the channels images are loaded with (`channels`, else 1 when every
            image is grayscale, else 3).
        findings: the problems found while building (see `seglab.data.findings`).
    """

    task = "semantic"

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        transforms=None,
        channels=None,
        mask_values=None,
        findings: Findings | None = None,
    ):
        self.root, self.transforms = Path(root), transforms
        self.findings = Findings() if findings is None else findings
        image_dir, mask_dir = self.root / split / "images", self.root / split / "masks"
        for folder in (image_dir, mask_dir):
            if not folder.is_dir():
                raise UserError(
                    f"{folder}: folder not found; the masks layout needs "
                    "<split>/images and <split>/masks"
                )
        images = list_images(image_dir)
        if not images:
            raise UserError(f"{image_dir}: no images found (empty dataset)")
        modes, own_values = self._pair(images, mask_dir)
        values = set().union(*own_values, _values_of_other_splits(self.root, split))
        names, names_file = _read_class_file(self.root)
        self.mask_classes = resolve_mask_classes(self.root, values, names, names_file, mask_values)
        self.class_names = self.mask_classes.class_names
        self.class_counts = self._count_classes(own_values)
        self.in_channels = channels or channels_for_modes(modes)
        if findings is None:
            self.findings.conclude(str(mask_dir))

    def _pair(self, images: list[Path], mask_dir: Path) -> tuple[list[str], list[tuple]]:
        """Keep the images whose mask exists, reads and has their size (checked over the
        usable cores); return the image modes and the stored values of each kept mask."""
        pairs = [(image_path, mask_dir / f"{image_path.stem}.png") for image_path in images]
        checked = map_files(_check_pair, pairs, desc=f"{mask_dir.parent.name} pairs", unit="pair")
        self.image_paths, self.mask_paths, modes, values = [], [], [], []
        for (image_path, mask_path), result in zip(pairs, checked, strict=True):
            if not result[0]:
                self.findings.add(*result[1:])
                continue
            remember_values(mask_path, result[2])
            self.image_paths.append(image_path)
            self.mask_paths.append(mask_path)
            modes.append(result[1])
            values.append(result[2])
        return modes, values

    def _count_classes(self, own_values: list[tuple]) -> list[int]:
        """Images holding each class. A mask with values that are no class is a finding,
        and its pair is left out."""
        counts = [0] * len(self.class_names)
        rule, kept = self.mask_classes, []
        for index, (mask_path, values) in enumerate(zip(self.mask_paths, own_values, strict=True)):
            if unknown := rule.unknown(values):
                self.findings.add(
                    "mask value that is no class",
                    str(mask_path),
                    unknown_values_message(rule, mask_path, unknown),
                )
                continue
            kept.append(index)
            for label in rule.classes_in(values):
                counts[label - 1] += 1
            if rule.rule == "binary":
                self.findings.add(
                    "binary masks (only 0 and 255)",
                    str(mask_path),
                    "",
                    action="read with 255 = class 1",
                )
        self.image_paths = [self.image_paths[i] for i in kept]
        self.mask_paths = [self.mask_paths[i] for i in kept]
        return counts

    def image_path(self, index: int) -> Path:
        return self.image_paths[index]

    def __len__(self) -> int:
        return len(self.image_paths)

    def load(self, index: int):
        image = load_image(self.image_paths[index], self.in_channels, self.intensity)
        mask_path = self.mask_paths[index]
        class_map = self.mask_classes.to_classes(mask_path, load_index_mask(mask_path))
        return image, {
            "semantic_mask": tv_tensors.Mask(torch.from_numpy(class_map)),
            "image_id": index,
        }
