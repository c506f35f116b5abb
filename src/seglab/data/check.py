"""`seglab data check`: read every image, mask and annotation of every split once, and say
what training would make of them.

Each split is built as training builds it (`build_dataset` with a `Findings`, so every
problem is gathered instead of the first one raised), then every item is decoded once, as a
training step would decode it. The report holds, per split, the images, the objects of each
class, the image sizes and bit depths, and the problems by kind; `stops` is true when
training would fail or silently learn nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from seglab.data import LAYOUT_TASKS, DataConfig, build_dataset, classes_problem, learning_problem
from seglab.data.findings import Findings
from seglab.data.images import describe_mode, read_header
from seglab.data.intensity import measure_intensity_range
from seglab.data.parallel import map_files
from seglab.data.splits import data_name, split_exists, split_place
from seglab.errors import UserError

SPLITS = ("train", "val", "test")
UNREADABLE = "unreadable"  # the mode row of the items whose pixels fail to decode
UNREAD_SPLIT = "split that cannot be read"
# the task each layout is checked for: COCO polygons as Mask R-CNN uses them
CHECKED_AS = {"coco": "instance", "masks": "semantic", "folders": "classification"}


@dataclass
class SplitReport:
    """One split: usable images, per-class counts, image sizes and modes, problems."""

    name: str
    findings: Findings = field(default_factory=Findings)
    images: int = 0  # the items the split lists, read or not: the sum of `modes`
    left_out: int = 0  # files refused before reading (missing, bad header, bad mask values)
    class_counts: list[int] = field(default_factory=list)  # over the `images` items
    sizes: Counter = field(default_factory=Counter)  # (height, width) -> images
    modes: Counter = field(default_factory=Counter)  # "RGB 8-bit" (or UNREADABLE) -> images


@dataclass
class DataReport:
    """Everything `check_data` found under `root`."""

    root: Path
    layout: str
    class_names: list[str] = field(default_factory=list)
    splits: list[SplitReport] = field(default_factory=list)
    general: Findings = field(default_factory=Findings)  # not tied to one split
    intensity_range: tuple[float, float] | None = None  # stored values read as 0..1
    notes: list[str] = field(default_factory=list)  # what is fine but worth knowing

    @property
    def stops(self) -> bool:
        """True when training on this data would fail or learn nothing."""
        every = [self.general, *(split.findings for split in self.splits)]
        return any(findings.stopping() for findings in every)


def detect_layout(root: Path) -> str:
    """coco (`<split>.json`), masks (`<split>/images/`) or folders (`<split>/<class>/`)."""
    for split in SPLITS:
        if (root / f"{split}.json").is_file():
            return "coco"
        if (root / split / "images").is_dir():
            return "masks"
        if (root / split).is_dir() and any(p.is_dir() for p in (root / split).iterdir()):
            return "folders"
    raise UserError(
        f"{root}: no train.json, train/images/ or train/<class>/ found (nor for val or "
        "test); give --layout coco, masks or folders"
    )


def check_data(
    root: str | Path, layout: str | None = None, *, mask_values: tuple[int, ...] | None = None
) -> DataReport:
    """Check every split of the data under `root` (layout detected when None; `mask_values`
    as `data.mask_values`)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: data root not found")
    layout = layout or detect_layout(root)
    if layout not in LAYOUT_TASKS:
        raise UserError(f"--layout {layout}: choose one of {', '.join(LAYOUT_TASKS)}")
    return check_config(DataConfig(root=str(root), layout=layout, mask_values=mask_values))


def check_config(cfg: DataConfig) -> DataReport:
    """Check every split of the data `cfg` names (`seglab.data.splits`): train and val,
    and ROOT's test split when there is one. A missing val split is a note (training runs
    without validation); a missing train split stops."""
    report = DataReport(Path(data_name(cfg)), cfg.layout)
    task = CHECKED_AS[cfg.layout]
    datasets = {}
    for split in SPLITS:
        if not split_exists(cfg, split):
            _note_missing(report, split)
            continue
        split_report = SplitReport(split)
        report.splits.append(split_report)
        try:
            datasets[split] = build_dataset(
                cfg, split, task=task, train=False, findings=split_report.findings
            )
        except UserError as error:
            split_report.findings.add(UNREAD_SPLIT, split, str(error))
        refused = [f for f in split_report.findings.stopping() if f.kind != UNREAD_SPLIT]
        split_report.left_out = sum(len(f.places) for f in refused)
    _set_intensity(datasets, report, cfg)
    _decode_every_item(datasets, report)
    _check_training(datasets, report, cfg)
    if note := mixed_images_note(report, datasets):
        report.notes.append(note)
    return report


def _set_intensity(datasets: dict, report: DataReport, cfg: DataConfig) -> None:
    """The range every split is read with: `data.intensity_range`, or the one training
    would measure from `data.intensity_percentiles` on the train split."""
    report.intensity_range = cfg.intensity_range
    if cfg.intensity_percentiles is None or cfg.intensity_range is not None:
        return
    if "train" not in datasets:
        return
    try:
        report.intensity_range = measure_intensity_range(
            datasets["train"], cfg.intensity_percentiles
        )
    except UserError as error:
        report.general.add("intensity percentiles not measured", "train", str(error))
        return
    for dataset in datasets.values():
        dataset.intensity = report.intensity_range


def _note_missing(report: DataReport, split: str) -> None:
    where = f"{report.root}: no {split} split"
    if split == "train":
        report.general.add("missing split", split, f"{where}; seglab train needs one")
    elif split == "val":
        report.notes.append(f"{where}: training runs without validation (no best model)")


def _decode_every_item(datasets: dict, report: DataReport) -> None:
    """Load every item once (as a training step would), over the usable cores, gathering
    sizes, modes, problems."""
    by_name = {split.name: split for split in report.splits}
    items = [(split, index) for split, dataset in datasets.items() for index in range(len(dataset))]
    _checked.update(datasets)  # what the forked workers of `map_files` read
    try:
        outcomes = map_files(_decode_item, items, desc="check", shown_from=0)
    finally:
        _checked.clear()
    for split, dataset in datasets.items():
        by_name[split].class_counts = list(dataset.class_counts)
    for (split, _), outcome in zip(items, outcomes, strict=True):
        split_report = by_name[split]
        split_report.images += 1
        if outcome[0] == UNREADABLE:
            split_report.findings.add(*outcome[1:])
            split_report.modes[UNREADABLE] += 1
        else:
            split_report.sizes[outcome[1]] += 1
            split_report.modes[describe_mode(outcome[0])] += 1
    if "train" in datasets:
        report.class_names = list(datasets["train"].class_names)
    elif datasets:
        report.class_names = list(next(iter(datasets.values())).class_names)


_checked: dict = {}  # split -> dataset, during `_decode_every_item`


def _decode_item(item: tuple[str, int]) -> tuple:
    """Decode item `index` of `split`: `(mode, (height, width))`, or `(UNREADABLE, kind,
    place, message)`. A file whose header read but whose pixels do not is the same fault,
    with the same name, as one whose header does not read."""
    split, index = item
    dataset = _checked[split]
    path = dataset.image_path(index)
    try:
        mode = read_header(path)[0]
        image, _ = dataset.load(index)
    except UserError as error:
        mask_paths = getattr(dataset, "mask_paths", None)
        mask = None if mask_paths is None else str(mask_paths[index])
        if mask is not None and mask in str(error):
            return UNREADABLE, "unreadable mask", mask, str(error)
        return UNREADABLE, "unreadable image", str(path), str(error)
    return mode, tuple(image.shape[-2:])


def mixed_images_note(report: DataReport, datasets: dict) -> str | None:
    """A line saying how images of several kinds (grey and colour, 8 and 16 bits) are read,
    or None when every image is of one kind (docs/conventions.md, "Image files")."""
    modes = sorted({mode for split in report.splits for mode in split.modes} - {UNREADABLE})
    if len(modes) < 2 or not datasets:
        return None
    channels = next(iter(datasets.values())).in_channels
    how = []
    greys = [mode for mode in modes if mode.startswith("gray")]
    if channels == 3 and greys:
        how.append("grey ones copied into 3 equal channels (data.channels: 1 reads the colour "
                   "ones as their luma instead)")  # fmt: skip
    depths = {mode.split()[-1] for mode in modes}
    if len(depths) > 1:
        if report.intensity_range is None:
            how.append("each scaled to 0..1 by its own type (8-bit / 255, 16-bit / 65535), so "
                       "a 16-bit image of small values reads dark beside 8-bit ones; "
                       "data.intensity_range maps one range for all")  # fmt: skip
        else:
            low, high = report.intensity_range
            how.append(f"every one mapped from stored {low:g}..{high:g} to 0..1")
    if not how:
        return None
    return f"mixed images ({', '.join(modes)}): read with {channels} channel" + (
        "s" if channels > 1 else "") + ", " + "; ".join(how)  # fmt: skip


def _check_training(datasets: dict, report: DataReport, cfg: DataConfig) -> None:
    """What only the whole split shows: something to learn, the same classes in each split."""
    train = datasets.get("train")
    if train is not None and (problem := learning_problem(train, split_place(cfg, "train"))):
        report.general.add("nothing to learn", "train", problem)
    for split, dataset in datasets.items():
        if train is not None and (problem := classes_problem(train, split, dataset, report.root)):
            report.general.add("classes differ between splits", split, problem)
