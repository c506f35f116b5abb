"""Mask-folder layout (semantic segmentation): `ROOT/<split>/images/*` and
`ROOT/<split>/masks/<same stem>.png`, one value per pixel.

Class names, for classes 1..K: `ROOT/classes.txt` (one name per line) or `ROOT/classes.json`
(a JSON list of names), background not listed; without either they are "1".."K". How stored
values become classes (class indices, 0/255 binary masks, `data.mask_values`) is
`seglab.data.mask_values`.

Opened for training, the dataset lists its two folders and pairs each image with the mask
of its stem (as the mask-folder Dataset of a segmentation tutorial does; an image without
its mask is found there), then reads a fixed sample of `SAMPLE` pairs of each split (seeded:
the same for the same files, on a resume too): their image headers give the channels,
their masks' values the classes, and a problem among them (a file that does not read, a
mask of another size than its image, a value that is no class) stops the run before its
first step. When the samples hold no class pixel at all (masks mostly empty, as of rare
defects), every mask is read instead. Every other pair is read when a step first loads it,
and a problem there is one error line naming the file. Built for `seglab data check`
(`every_file=True`), every pair is read up front, over the usable cores, and every problem
gathered; the classes still come from the sample, as training takes them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from seglab.data.cache import DecodedDataset
from seglab.data.findings import Findings
from seglab.data.images import channels_for_modes, load_image, load_index_mask, read_header
from seglab.data.listing import SAMPLE, FolderFiles, file_names, sample_indices
from seglab.data.mask_values import (
    MaskClasses,
    remember_values,
    resolve_mask_classes,
    stored_values,
    unknown_values_message,
)
from seglab.data.parallel import map_files
from seglab.errors import UserError, read_json
from seglab.structures.masks import IGNORE_INDEX

_SPLITS = ("train", "val", "test")
_PNG = frozenset({b".png"})


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


def _pairs(image_dir: Path, mask_dir: Path) -> tuple[FolderFiles, FolderFiles, list[str]]:
    """The images of a split with a mask of their stem, their masks (one listing of each
    folder, no file opened), and the names of the images without one."""
    images = file_names(image_dir)
    masks = set(file_names(mask_dir, _PNG).tolist())
    mask_of = [name[: name.rfind(b".")] + b".png" for name in images.tolist()]  # a suffix: a dot
    paired = np.array([name in masks for name in mask_of], dtype=bool)
    unpaired = [os.fsdecode(name) for name in images[~paired].tolist()]
    mask_names = np.array(mask_of, dtype=bytes)[paired] if len(images) else images
    return FolderFiles(image_dir, images[paired]), FolderFiles(mask_dir, mask_names), unpaired


def _values_or_none(path: Path) -> tuple[int, ...] | None:
    try:
        return stored_values(path)
    except UserError:
        return None


def _size_problem(image_path, mask_path, image_size, mask_size) -> str:
    """The line for a mask whose (height, width) differs from its image's."""
    return (
        f"{mask_path}: mask is {mask_size[1]}x{mask_size[0]} but its image "
        f"{os.path.basename(image_path)} is {image_size[1]}x{image_size[0]} "
        "(after EXIF orientation); they must match"
    )


def _check_pair(pair: tuple[Path, Path]) -> tuple:
    """`(True, image mode, stored mask values)` for a usable pair, else `(False, kind,
    place, message)`: the problem, for the dataset's findings."""
    image_path, mask_path = pair
    try:
        mode, image_size = read_header(image_path)
    except UserError as error:
        return False, "unreadable image", str(image_path), str(error)
    try:
        mask_size, mask_values = read_header(mask_path)[1], stored_values(mask_path)
    except UserError as error:
        return False, "unreadable mask", str(mask_path), str(error)
    if image_size != mask_size:
        problem = _size_problem(image_path, mask_path, image_size, mask_size)
        return False, "mask size differs from its image", str(mask_path), problem
    return True, mode, mask_values


def _split_values(
    root: Path, split: str, own_masks: FolderFiles, size: int | None
) -> tuple[set[int], str]:
    """The stored values of the readable masks of each split's sample of `size` (None:
    every mask; `split`'s masks are `own_masks`; a problem of another split's is its own),
    and how many masks of how many were read, for messages ("" when every mask was)."""
    values, read, total = set(), 0, 0
    for name in sorted({*_SPLITS, split}):
        if name == split:
            masks = own_masks
        elif (root / name / "images").is_dir() and (root / name / "masks").is_dir():
            masks = _pairs(root / name / "images", root / name / "masks")[1]
        else:
            continue
        chosen = np.arange(len(masks)) if size is None else sample_indices(len(masks), size)
        paths = [masks[index] for index in chosen]
        found = map_files(_values_or_none, paths, desc=f"{name} masks", unit="mask")
        for path, mask_values in zip(paths, found, strict=True):
            if mask_values is not None:
                remember_values(path, mask_values)
                values.update(mask_values)
        read, total = read + len(paths), total + len(masks)
    return values, "" if read == total else f"{read} masks sampled of {total}"


def _dataset_classes(root: Path, split: str, own_masks: FolderFiles, mask_values) -> MaskClasses:
    """The dataset's rule (`seglab.data.mask_values`) from the values of each split's
    sample of masks, the same whichever split is built; from every mask when the samples
    hold no class at all (masks mostly empty, as of rare defects or lesions: a sample of
    background alone would find no class, or miss that the masks are binary)."""
    names, names_file = _read_class_file(root)
    values, sampled = _split_values(root, split, own_masks, SAMPLE)
    classes = resolve_mask_classes(root, values, names, names_file, mask_values)
    from_values = mask_values is None and (names is None or len(names) == 1)
    if sampled and from_values and not classes.classes_in(values):
        values, sampled = _split_values(root, split, own_masks, None)
        classes = resolve_mask_classes(root, values, names, names_file, mask_values)
    return _with_sample_reason(classes, names, sampled)


def _with_sample_reason(classes: MaskClasses, names: list[str] | None, sampled: str) -> MaskClasses:
    """The rule, with its reason saying that the classes came from a sample of the masks
    when they did (neither a classes file nor `data.mask_values` gave them): a value that
    only masks outside the sample hold is first seen when a step loads one of them."""
    from_values = classes.rule == "binary" or (classes.rule == "index" and names is None)
    if not sampled or not from_values:
        return classes
    reason = (
        f"{classes.unknown_reason}; the classes were read from {sampled} (a seeded sample), "
        "and `seglab data check` reads every mask"
    )
    return dataclasses.replace(classes, unknown_reason=reason)


def _values_kept_up_to(classes: MaskClasses) -> int | None:
    """The largest c such that `classes` keeps every stored value 0..c as it is (masks of
    class indices), or None when the rule maps values (binary masks, `data.mask_values`)."""
    if any(key != value for key, value in classes.lookup.items()):
        return None
    top = 0
    while top + 1 in classes.lookup:
        top += 1
    return top


def _all_kept(stored: np.ndarray, top: int) -> bool:
    """Whether every value of (H, W) `stored` is one of 0..top or 255 (ignored): a min and a
    max, where the rule's look-up is a gather over every pixel (a tenth of a U-Net item's
    loading at 256 px)."""
    low, high = stored.min(initial=0), stored.max(initial=0)
    if low < 0:
        return False
    if high <= top:
        return True
    return high == IGNORE_INDEX and not ((stored > top) & (stored != IGNORE_INDEX)).any()


class MaskFolderDataset(DecodedDataset):
    """Images with one-value-per-pixel masks (task `semantic`).

    Attributes:
        class_names: names of classes 1..K (background excluded).
        class_counts: images holding each class 1..K, among the pairs of this split read
            (the sample; every pair with `every_file`).
        mask_classes: the stored value -> class rule (`seglab.data.mask_values`).
        in_channels: the channels images are loaded with (`channels`, else 1 when every
            image of the sample is grayscale, else 3).
        image_paths, mask_paths: the files of each item (sequences of Paths, made when asked).
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
        every_file: bool = False,
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
        self.image_paths, self.mask_paths, unpaired = _pairs(image_dir, mask_dir)
        if not len(self.image_paths) and not unpaired:
            raise UserError(f"{image_dir}: no images found (empty dataset)")
        for name in unpaired:
            mask_path = mask_dir / f"{os.path.splitext(name)[0]}.png"
            message = f"{mask_path}: mask not found for image {image_dir / name}"
            self.findings.add("missing mask", str(mask_path), message)
        modes, own_values = self._read(split, mask_values, every_file)
        self.class_counts = self._count_classes(own_values)
        self._leave_out_refused(own_values)
        self.in_channels = channels or channels_for_modes(modes)
        if findings is None:
            self.findings.conclude(str(mask_dir))

    def _read(self, split: str, mask_values, every_file: bool) -> tuple[list[str], dict]:
        """Read this split's sample of pairs (every pair with `every_file`) and set the
        dataset's classes; return what `_check` returns for the pairs read."""
        read = np.arange(len(self)) if every_file else sample_indices(len(self), SAMPLE)
        modes, own_values = self._check(read, split)
        self.mask_classes = _dataset_classes(self.root, split, self.mask_paths, mask_values)
        self.class_names = self.mask_classes.class_names
        self._kept_up_to = _values_kept_up_to(self.mask_classes)
        if len(read) < len(self) and not self._holds_a_class(own_values):
            # no class pixel in this split's sample (masks mostly empty): read on, rather
            # than stop with "nothing to learn" on the sample's word
            more_modes, more_values = self._check(np.setdiff1d(np.arange(len(self)), read), split)
            modes, own_values = modes + more_modes, own_values | more_values
        return modes, own_values

    def _check(self, indices: np.ndarray, split: str) -> tuple[list[str], dict[int, tuple]]:
        """Read the pairs `indices` (over the usable cores when many): headers, sizes and
        mask values. Return the image modes and, by index, the stored values of each pair
        read: None for a pair with a problem (a finding)."""
        pairs = [(self.image_paths[index], self.mask_paths[index]) for index in indices]
        results = map_files(_check_pair, pairs, desc=f"{split} pairs", unit="pair")
        modes, values = [], {}
        for index, (_, mask_path), result in zip(indices.tolist(), pairs, results, strict=True):
            values[index] = result[2] if result[0] else None
            if not result[0]:
                self.findings.add(*result[1:])
                continue
            remember_values(mask_path, result[2])  # read by a worker of the pool
            modes.append(result[1])
        return modes, values

    def _holds_a_class(self, own_values: dict[int, tuple | None]) -> bool:
        """Whether a usable pair read holds a pixel of a class 1..K."""
        classes_in = self.mask_classes.classes_in
        return any(classes_in(values) for values in own_values.values() if values is not None)

    def _count_classes(self, own_values: dict[int, tuple | None]) -> list[int]:
        """Images holding each class, among the pairs read. A mask with values that are no
        class is a finding (its values become None: the pair is left out)."""
        counts = [0] * len(self.class_names)
        rule = self.mask_classes
        for index, values in own_values.items():
            if values is None:
                continue
            if unknown := rule.unknown(values):
                mask_path = self.mask_paths[index]
                message = unknown_values_message(rule, mask_path, unknown)
                self.findings.add("mask value that is no class", str(mask_path), message)
                own_values[index] = None
                continue
            for label in rule.classes_in(values):
                counts[label - 1] += 1
        return counts

    def _leave_out_refused(self, own_values: dict[int, tuple | None]) -> None:
        """Leave out the pairs read with a problem; note the binary rule for the others."""
        refused = [index for index, values in own_values.items() if values is None]
        if refused:
            kept = np.ones(len(self), dtype=bool)
            kept[refused] = False
            self.image_paths = self.image_paths.kept(kept)
            self.mask_paths = self.mask_paths.kept(kept)
        if self.mask_classes.rule == "binary":  # the rule reads every mask, read yet or not
            for index in range(len(self)):
                place = self.mask_paths.path_text(index)
                self.findings.add(
                    "binary masks (only 0 and 255)", place, "", action="read with 255 = class 1"
                )

    def image_path(self, index: int) -> Path:
        return self.image_paths[index]

    def __len__(self) -> int:
        return len(self.image_paths)

    def load(self, index: int):
        image_path = self.image_paths.path_text(index)  # str: no Path made per item
        image = load_image(image_path, self.in_channels, self.intensity)
        target = self.load_target(index)
        image_size, mask_size = tuple(image.shape[-2:]), tuple(target["semantic_mask"].shape)
        if image_size != mask_size:
            mask_path = self.mask_paths.path_text(index)
            raise UserError(_size_problem(image_path, mask_path, image_size, mask_size))
        return image, target

    def load_target(self, index: int) -> dict:
        """The target of item `index` alone (its mask; no image decoded): for the
        fingerprint of `data.image_size: auto`."""
        mask_path = self.mask_paths.path_text(index)
        stored = load_index_mask(mask_path)
        if self._kept_up_to is not None and _all_kept(stored, self._kept_up_to):
            class_map = stored  # class indices already: what the look-up would give
        else:
            class_map = self.mask_classes.to_classes(mask_path, stored)
        return {"semantic_mask": tv_tensors.Mask(torch.from_numpy(class_map)), "image_id": index}
