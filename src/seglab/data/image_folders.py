"""Image-folder layout (classification): `ROOT/<split>/<class>/*`.

Class names are the sorted names of the class folders found in any split under ROOT, so
`train` and `val` agree on labels even when a split lacks a class. Labels are 0..K-1 (the
classifier has no background).
"""

from __future__ import annotations

from pathlib import Path

import torch

from seglab.data.cache import DecodedDataset
from seglab.data.findings import Findings
from seglab.data.images import channels_for_modes, list_images, load_image, read_header
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
        self.class_counts = [
            sum(label == k for _, label in self.samples) for k in range(len(self.class_names))
        ]
        self.in_channels = channels or channels_for_modes(modes)
        if findings is None:
            self.findings.conclude(str(split_dir))

    def _scan(self, found: list[tuple[Path, int]]) -> list[str]:
        """Keep in `samples` the images whose header reads; return their modes."""
        self.samples, modes = [], []
        for path, label in found:
            try:
                modes.append(read_header(path)[0])
            except UserError as error:
                self.findings.add("unreadable image", str(path), str(error))
                continue
            self.samples.append((path, label))
        return modes

    def image_path(self, index: int) -> Path:
        return self.samples[index][0]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int):
        path, label = self.samples[index]
        image = load_image(path, self.in_channels, self.intensity)
        return image, {"labels": torch.tensor(label, dtype=torch.int64), "image_id": index}
