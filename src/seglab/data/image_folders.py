"""Image-folder layout (classification): `ROOT/<split>/<class>/*`.

Class names are the sorted names of the class folders found in any split under ROOT, so
`train` and `val` agree on labels even when a split lacks a class. Labels are 0..K-1 (the
classifier has no background).
"""

from __future__ import annotations

from pathlib import Path

import torch

from seglab.data.cache import DecodedDataset
from seglab.data.images import list_images, load_image, scan_channels
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
        in_channels: 1 when every image is grayscale, else 3.
    """

    task = "classification"

    def __init__(self, root: str | Path, split: str, *, transforms=None):
        self.root, self.transforms = Path(root), transforms
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise UserError(
                f"{split_dir}: folder not found; the folders layout needs <split>/<class>/<image>"
            )
        self.class_names = _class_names(self.root, split)
        self.samples = [
            (path, label)
            for label, name in enumerate(self.class_names)
            if (split_dir / name).is_dir()
            for path in list_images(split_dir / name)
        ]
        if not self.samples:
            raise UserError(f"{split_dir}: no images found in class folders (empty dataset)")
        self.in_channels = scan_channels(path for path, _ in self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int):
        path, label = self.samples[index]
        image = load_image(path, self.in_channels)
        return image, {"labels": torch.tensor(label, dtype=torch.int64), "image_id": index}
