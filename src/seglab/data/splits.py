"""Where each split of a dataset lives, and which splits there are.

With `data.root` alone, split S is under ROOT: `S.json` and the images in `S/` (coco),
`S/images/` and `S/masks/` (masks), `S/<class>/` (folders). COCO files may be anywhere
instead, as detectron2's `register_coco_instances(name, {}, json_file, image_root)` and
torchvision's `CocoDetection(root, annFile)` take them: `data.train_json` with
`data.train_images`, `data.val_json` with `data.val_images`. A split given so replaces
ROOT's; without `data.root` the train files are required.

The val split is optional: a run without one trains, says so, and keeps no best model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seglab.data.config import DataConfig
from seglab.errors import UserError

# split -> the DataConfig keys of its COCO file and image folder
FILE_KEYS = {"train": ("train_json", "train_images"), "val": ("val_json", "val_images")}


@dataclass(frozen=True)
class CocoSplit:
    """A COCO split's annotation file and the folder its `file_name`s are relative to."""

    json_path: Path
    image_dir: Path


def given_files(cfg: DataConfig, split: str) -> CocoSplit | None:
    """The split's COCO files when the config names them (`data.<split>_json`), else None."""
    json_key, images_key = FILE_KEYS.get(split, (None, None))
    if json_key is None or getattr(cfg, json_key) is None:
        return None
    return CocoSplit(Path(getattr(cfg, json_key)), Path(getattr(cfg, images_key)))


def coco_split(cfg: DataConfig, split: str) -> CocoSplit:
    """The COCO files of `split`: the ones the config names, else `ROOT/<split>.json` and
    `ROOT/<split>/`."""
    given = given_files(cfg, split)
    if given is not None:
        return given
    if cfg.root is None:
        json_key, images_key = FILE_KEYS.get(split, (f"{split}_json", f"{split}_images"))
        raise UserError(f"no {split} split: set data.{json_key} and data.{images_key}, or "
                        "data.root")  # fmt: skip
    root = Path(cfg.root)
    return CocoSplit(root / f"{split}.json", root / split)


def split_place(cfg: DataConfig, split: str) -> Path:
    """What messages about `split` name: its COCO file, or its folder under ROOT."""
    if cfg.layout == "coco":
        return coco_split(cfg, split).json_path
    return Path(cfg.root) / split


def split_exists(cfg: DataConfig, split: str) -> bool:
    """Whether `split` is there to be read (its COCO file, or its folder under ROOT)."""
    if given_files(cfg, split) is not None:
        return True
    if cfg.root is None:
        return False
    if cfg.layout == "coco":
        return (Path(cfg.root) / f"{split}.json").is_file()
    return (Path(cfg.root) / split).is_dir()


def data_name(cfg: DataConfig) -> str:
    """The data, for messages: ROOT, else the train split's COCO file, else "data"."""
    if cfg.root is not None:
        return str(cfg.root)
    return cfg.train_json if cfg.train_json is not None else "data"


def check_locations(cfg: DataConfig) -> None:
    """The location keys make sense together (read before any file is): each COCO file
    comes with its image folder, only the coco layout takes them, and a train split is
    named somewhere."""
    for json_key, images_key in FILE_KEYS.values():
        given = [key for key in (json_key, images_key) if getattr(cfg, key) is not None]
        if given and cfg.layout != "coco":
            raise UserError(
                f"data.{given[0]}: COCO files are for the coco layout, not {cfg.layout!r}; "
                f"give data.root for the {cfg.layout} layout"
            )
        if len(given) == 1:
            missing = images_key if given[0] == json_key else json_key
            raise UserError(
                f"data.{given[0]} without data.{missing}: give both, the COCO file and the "
                "folder its images' file_name are relative to"
            )
    if cfg.root is None and cfg.train_json is None:
        raise UserError("data.root is required (or data.train_json with data.train_images)")
