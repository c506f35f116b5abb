"""Many files, cheaply: their names from one listing, a view of them as paths, and a seeded
sample of them.

Opening a folder dataset for training reads no file: torchvision's `ImageFolder` lists its
folders and nothing more, and so does a mask-folder Dataset of a segmentation tutorial.
What seglab needs from the files themselves before the first step (the channels, the
classes of `num_classes: auto`) it reads from a fixed sample of them (`sample_indices`);
every file is read by `seglab data check`. The names are kept as one NumPy array of bytes,
not as a `Path` object per file: 100k Paths take seconds to make and tens of MiB, and the
pages of Python objects that DataLoader workers read are copied into each worker (reading
an object writes its reference count).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seglab.data.images import IMAGE_SUFFIXES

SAMPLE_SEED = 0  # one sample for every run on the same files: a resume reads the same one
SAMPLE = 64  # files of a split read when it is opened for training: channels, classes, sizes
_IMAGE_SUFFIXES = frozenset(os.fsencode(suffix) for suffix in IMAGE_SUFFIXES)


def file_names(folder: Path, suffixes: frozenset[bytes] = _IMAGE_SUFFIXES) -> np.ndarray:
    """(N,) bytes: names of the files directly inside `folder` whose suffix (any case) is
    one of `suffixes` (default: images), sorted as `sorted()` sorts their str names.

    One `os.scandir`: an entry's type comes with the listing, so no file is stat'ed (but
    links, which `is_file` follows).
    """
    with os.scandir(os.fsencode(folder)) as entries:
        names = [
            entry.name
            for entry in entries
            if entry.name[entry.name.rfind(b".") :].lower() in suffixes and entry.is_file()
        ]
    names.sort()  # UTF-8 bytes sort in the order of their characters
    return np.array(names, dtype=bytes) if names else np.zeros(0, dtype="S1")


class FolderFiles(Sequence):
    """The files `folder / name` of an array of names, as a read-only sequence of Paths
    made when asked for (`dataset.mask_paths[i]`, `list(dataset.image_paths)`)."""

    def __init__(self, folder: Path, names: np.ndarray) -> None:
        self.folder, self.names = os.fsencode(folder), names

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return Path(self.path_text(index))

    def kept(self, keep: np.ndarray) -> FolderFiles:
        """The files where the (N,) bool `keep` is True."""
        return FolderFiles(self.folder, self.names[keep])

    def path_text(self, index: int) -> str:
        """The path of file `index` as a str (what `open` and Pillow take; no Path made)."""
        return os.fsdecode(os.path.join(self.folder, self.names[index]))


def sample_indices(count: int, size: int, seed: int = SAMPLE_SEED) -> np.ndarray:
    """(min(count, size),) int64: ascending indices of a sample without repeats of `size`
    among `count` items, the same for the same `count` and `seed`; all of them when
    `count <= size`. Random rather than evenly spaced, so that a period in the file
    names (every 4th image from one camera) cannot line up with the sample."""
    if count <= size:
        return np.arange(count)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, size=size, replace=False))
