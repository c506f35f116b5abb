"""Image-folder layout (classification): `ROOT/<split>/<class>/*`.

Class names are the sorted names of the class folders found in any split under ROOT, so
`train` and `val` agree on labels even when a split lacks a class. Labels are 0..K-1 (the
classifier has no background).

Opened for training, the dataset lists its folders (as torchvision's `ImageFolder` does)
and reads the headers of a fixed sample of `SAMPLE` images, for the channels; an image that
does not decode is one error line naming it when a step meets it. Built for `seglab data
check` (`every_file=True`), every header is read, over the usable cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from seglab.data.cache import DecodedDataset
from seglab.data.findings import Findings
from seglab.data.images import channels_for_modes, header_or_problem, load_image
from seglab.data.listing import SAMPLE, FolderFiles, file_names, sample_indices
from seglab.data.parallel import map_files
from seglab.errors import UserError

_SPLITS = ("train", "val", "test")


def _class_names(root: Path, split: str) -> list[str]:
    """Sorted names of the class folders of every split (train, val, test and `split`)."""
    names = set()
    for split_dir in {root / name for name in (*_SPLITS, split)}:
        if split_dir.is_dir():
            names |= {d.name for d in split_dir.iterdir() if d.is_dir() and d.name[0] != "."}
    return sorted(names)


class ImageFolderDataset(DecodedDataset):
    """Images labelled by the folder they sit in (task `classification`).

    Attributes:
        class_names: sorted class folder names; label k is `class_names[k]`.
        class_counts: images of each class in this split.
        in_channels: the channels images are loaded with (`channels`, else 1 when every
            image read is grayscale, else 3): read from the headers of a sample of
            `SAMPLE` images (seeded: the same for the same files).
        image_paths: the image of each item (a sequence of Paths, made when asked).
        findings: the problems found while building (`seglab.data.findings`): headers
            that do not read, among the images read.
    """

    task = "classification"
    transforms_target = False  # a label: no transform changes it

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        transforms=None,
        channels: int | None = None,
        findings: Findings | None = None,
        every_file: bool = False,
    ):
        self.root, self.transforms = Path(root), transforms
        self.findings = Findings() if findings is None else findings
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise UserError(
                f"{split_dir}: folder not found; the folders layout needs <split>/<class>/<image>"
            )
        self.class_names = _class_names(self.root, split)
        self.image_paths, self._labels = self._list(split_dir)
        if not len(self._labels):
            raise UserError(f"{split_dir}: no images found in class folders (empty dataset)")
        modes = self._read_headers(every_file)
        counts = np.bincount(self._labels, minlength=len(self.class_names))
        self.class_counts = counts.tolist()
        self.in_channels = channels or channels_for_modes(modes)
        if findings is None:
            self.findings.conclude(str(split_dir))

    def _list(self, split_dir: Path) -> tuple[FolderFiles, np.ndarray]:
        """The images of the class folders, as `class/name` relative to `split_dir`, and
        (N,) int64 their labels: one listing per folder, no file opened."""
        names, labels = [], []
        for label, name in enumerate(self.class_names):
            if (split_dir / name).is_dir():
                in_class = file_names(split_dir / name)
                names.append(np.char.add(os.fsencode(name) + b"/", in_class))
                labels.append(np.full(len(in_class), label, dtype=np.int64))
        if not names:
            return FolderFiles(split_dir, np.zeros(0, dtype="S1")), np.zeros(0, np.int64)
        return FolderFiles(split_dir, np.concatenate(names)), np.concatenate(labels)

    def _read_headers(self, every_file: bool) -> list[str]:
        """The modes of the headers read (every one, over the usable cores, or a sample's);
        an image whose header does not read is a finding and is left out."""
        indices = np.arange(len(self)) if every_file else sample_indices(len(self), SAMPLE)
        paths = [self.image_paths.path_text(index) for index in indices]
        headers = map_files(header_or_problem, paths, desc="images")
        unreadable = []
        for index, path, header in zip(indices, paths, headers, strict=True):
            if isinstance(header, str):
                self.findings.add("unreadable image", path, header)
                unreadable.append(index)
        if unreadable:
            kept = np.ones(len(self), dtype=bool)
            kept[unreadable] = False
            self.image_paths, self._labels = self.image_paths.kept(kept), self._labels[kept]
        return [header[0] for header in headers if not isinstance(header, str)]

    @property
    def samples(self) -> list[tuple[Path, int]]:
        """`(image path, label)` of each image, as torchvision's `ImageFolder` has them."""
        return [(self.image_path(index), int(self._labels[index])) for index in range(len(self))]

    def image_path(self, index: int) -> Path:
        return self.image_paths[index]

    def __len__(self) -> int:
        return len(self._labels)

    def load(self, index: int):
        path = self.image_paths.path_text(index)  # a str: no Path made per item
        image = load_image(path, self.in_channels, self.intensity)
        label = torch.tensor(int(self._labels[index]), dtype=torch.int64)  # () a scalar
        return image, {"labels": label, "image_id": index}
