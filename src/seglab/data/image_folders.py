"""Image-folder layout (classification): `ROOT/<split>/<class>/*`.

Class names are the sorted names of the class folders found in any split under ROOT, so
`train` and `val` agree on labels even when a split lacks a class. Labels are 0..K-1 (the
classifier has no background).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from seglab.data.cache import DecodedDataset
from seglab.data.findings import Findings
from seglab.data.images import channels_for_modes, header_or_problem, list_images, load_image
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
            image is grayscale, else 3).
        findings: the problems found while building (`seglab.data.findings`).
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
    ):
        self.root, self.transforms = Path(root), transforms
        self.findings = Findings() if findings is None else findings
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise UserError(
                f"{split_dir}: folder not found; the folders layout needs <split>/<class>/<image>"
            )
        self.class_names = _class_names(self.root, split)
        found = [
            (path, label)
            for label, name in enumerate(self.class_names)
            if (split_dir / name).is_dir()
            for path in list_images(split_dir / name)
        ]
        if not found:
            raise UserError(f"{split_dir}: no images found in class folders (empty dataset)")
        modes = self._scan(found)
        counts = np.bincount(self._labels, minlength=len(self.class_names))
        self.class_counts = counts.tolist()
        self.in_channels = channels or channels_for_modes(modes)
        if findings is None:
            self.findings.conclude(str(split_dir))

    def _scan(self, found: list[tuple[Path, int]]) -> list[str]:
        """Keep the images whose header reads (read over the usable cores); return their
        modes. The kept paths are one array of strings, not 100k `Path` objects."""
        headers = map_files(header_or_problem, [path for path, _ in found], desc="images")
        kept, modes = [], []
        for (path, label), header in zip(found, headers, strict=True):
            if isinstance(header, str):
                self.findings.add("unreadable image", str(path), header)
                continue
            kept.append((os.fsencode(path), label))
            modes.append(header[0])
        self._paths = np.array([path for path, _ in kept], dtype=bytes)
        self._labels = np.array([label for _, label in kept], dtype=np.int64)
        return modes

    @property
    def samples(self) -> list[tuple[Path, int]]:
        """`(image path, label)` of each image, as torchvision's `ImageFolder` has them."""
        return [(self.image_path(index), int(self._labels[index])) for index in range(len(self))]

    def image_path(self, index: int) -> Path:
        return Path(os.fsdecode(self._paths[index]))

    def __len__(self) -> int:
        return len(self._labels)

    def load(self, index: int):
        image = load_image(self.image_path(index), self.in_channels, self.intensity)
        label = torch.tensor(self._labels[index], dtype=torch.int64)  # () a scalar
        return image, {"labels": label, "image_id": index}
