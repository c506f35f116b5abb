"""How the values stored in mask files become class indices (masks layout).

One rule for the whole dataset (every split), from the values of all its masks:

1. `data.mask_values: [v0, v1, ..., vK]`: stored value `v_k` is class `k` (`v0` background);
   255, unless listed, is ignored; any other value is an error naming the masks.
2. Binary masks: when the masks hold exactly the values 0 and 255 and no classes file names
   more than one class, 255 is class 1 (with a note). This is the most common binary-mask
   format; read as class indices, 255 would be "ignored" and there would be nothing to learn.
3. Class indices: the value is the class (0 background, 255 ignored). With a classes file
   (K names) values above K are errors. Without one the classes are 1..K where every value
   1..K occurs somewhere: a value after a gap (1, 2, 7 with 3..6 never seen) is an error
   naming its masks, not a silent K = 7.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seglab.data.images import load_index_mask
from seglab.errors import UserError
from seglab.structures.masks import IGNORE_INDEX


@dataclass(frozen=True)
class MaskClasses:
    """The dataset's mapping from stored mask values to classes.

    Attributes:
        class_names: names of classes 1..K.
        lookup: stored value -> class index 0..K, or IGNORE_INDEX.
        rule: "mask_values", "binary" or "index" (see the module doc).
        unknown_reason: why a value missing from `lookup` is not a class, for messages.
    """

    class_names: list[str]
    lookup: dict[int, int]
    rule: str
    unknown_reason: str

    def unknown(self, values) -> list[int]:
        return [int(v) for v in values if int(v) not in self.lookup]

    def classes_in(self, values) -> set[int]:
        """Classes 1..K among the stored `values` (background and ignored left out)."""
        classes = {self.lookup.get(int(v), 0) for v in values}
        return classes - {0, IGNORE_INDEX}

    def to_classes(self, path: Path, stored: np.ndarray) -> np.ndarray:
        """(H, W) stored values -> (H, W) int64 class indices; UserError on unknown values."""
        table = np.full(max(max(self.lookup), int(stored.max(initial=0))) + 1, -1, np.int64)
        table[list(self.lookup)] = list(self.lookup.values())
        classes = table[stored]
        if (classes < 0).any():
            raise UserError(unknown_values_message(self, path, np.unique(stored[classes < 0])))
        return classes


def unknown_values_message(classes: MaskClasses, path: Path, values) -> str:
    shown = ", ".join(str(int(v)) for v in values)
    return f"{path}: mask values {shown} are not classes: {classes.unknown_reason}"


_KNOWN_MAX = 1 << 17  # masks whose values are remembered (about 100 bytes each)
_known: dict[tuple[str, int, int], tuple[int, ...]] = {}  # (path, mtime_ns, size) -> values


def _version(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


def stored_values(path: Path) -> tuple[int, ...]:
    """The distinct values of the mask at `path`, read once per version of the file."""
    version = _version(path)
    if version not in _known:
        remember_values(path, _distinct(load_index_mask(path)), version)
    return _known[version]


def _distinct(values: np.ndarray) -> tuple[int, ...]:
    """The distinct values, ascending, of a mask: counted (one pass) when they are small
    non-negative integers, as class indices are; `np.unique` (a sort) otherwise."""
    if values.size and 0 <= values.min() and values.max() < 1 << 16:
        return tuple(np.flatnonzero(np.bincount(values.ravel())).tolist())
    return tuple(int(v) for v in np.unique(values))


def remember_values(path: Path, values: tuple[int, ...], version=None) -> None:
    """Record the values of `path` read elsewhere (by a worker process of a pool)."""
    if len(_known) >= _KNOWN_MAX:
        del _known[next(iter(_known))]  # the oldest
    _known[version or _version(path)] = values


def resolve_mask_classes(
    root: Path, values: set[int], names: list[str] | None, names_file: Path | None, mask_values
) -> MaskClasses:
    """The rule of the module doc for a dataset whose masks hold `values` (all splits);
    `names` from `names_file` (None without one), `mask_values` from the config."""
    if mask_values is not None:
        return _from_mask_values(names_file, tuple(int(v) for v in mask_values), names)
    if values == {0, IGNORE_INDEX} and (names is None or len(names) == 1):
        return MaskClasses(
            names or ["1"], {0: 0, IGNORE_INDEX: 1}, "binary", "the masks are binary (0 and 255)"
        )
    if names is not None:
        lookup = {k: k for k in range(len(names) + 1)} | {IGNORE_INDEX: IGNORE_INDEX}
        reason = (
            f"{names_file} names {len(names)} classes (0 background, 1..{len(names)}, "
            "255 ignored); fix the mask or the classes file"
        )
        return MaskClasses(list(names), lookup, "index", reason)
    count = 0
    while count + 1 in values:
        count += 1
    lookup = {k: k for k in range(count + 1)} | {IGNORE_INDEX: IGNORE_INDEX}
    reason = (
        f"without a classes file the classes are the values 1..K that all occur, and "
        f"{count + 1} occurs in no mask, so K = {count} and these look stray; fix the "
        f"mask, or name every class in {root / 'classes.txt'}"
    )
    return MaskClasses([str(k) for k in range(1, count + 1)], lookup, "index", reason)


def _from_mask_values(names_file: Path | None, mask_values: tuple[int, ...], names) -> MaskClasses:
    if len(mask_values) < 2 or len(set(mask_values)) != len(mask_values) or min(mask_values) < 0:
        raise UserError(
            f"data.mask_values {list(mask_values)}: give the stored value of the "
            "background and of each class, distinct and >= 0, e.g. [0, 255]"
        )
    if names is not None and len(names) != len(mask_values) - 1:
        raise UserError(
            f"{names_file}: names {len(names)} classes but "
            f"data.mask_values {list(mask_values)} has {len(mask_values) - 1} "
            "(after the background); make them agree"
        )
    lookup = {IGNORE_INDEX: IGNORE_INDEX} | {value: k for k, value in enumerate(mask_values)}
    names = names or [str(k) for k in range(1, len(mask_values))]
    reason = f"data.mask_values is {list(mask_values)}; add them there or fix the mask"
    return MaskClasses(list(names), lookup, "mask_values", reason)
