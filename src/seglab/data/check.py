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
from seglab.errors import UserError
from seglab.progress import progress

SPLITS = ("train", "val", "test")
NEEDED_SPLITS = ("train", "val")  # what `seglab train` reads
# the task each layout is checked for: COCO polygons as Mask R-CNN uses them
CHECKED_AS = {"coco": "instance", "masks": "semantic", "folders": "classification"}


@dataclass
class SplitReport:
    """One split: usable images, per-class counts, image sizes and modes, problems."""

    name: str
    findings: Findings = field(default_factory=Findings)
    images: int = 0
    class_counts: list[int] = field(default_factory=list)
    sizes: Counter = field(default_factory=Counter)  # (height, width) -> images
    modes: Counter = field(default_factory=Counter)  # "RGB 8-bit" -> images


@dataclass
class DataReport:
    """Everything `check_data` found under `root`."""

    root: Path
    layout: str
    class_names: list[str] = field(default_factory=list)
    splits: list[SplitReport] = field(default_factory=list)
    general: Findings = field(default_factory=Findings)  # not tied to one split

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


def _split_exists(root: Path, layout: str, split: str) -> bool:
    if layout == "coco":
        return (root / f"{split}.json").is_file()
    return (root / split / ("images" if layout == "masks" else "")).is_dir()


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
    report = DataReport(root, layout)
    cfg = DataConfig(root=str(root), layout=layout, mask_values=mask_values)
    task = CHECKED_AS[layout]
    datasets = {}
    for split in SPLITS:
        if not _split_exists(root, layout, split):
            if split in NEEDED_SPLITS:
                report.general.add(
                    "missing split",
                    split,
                    f"{root}: no {split} split; seglab train reads train and val",
                )
            continue
        split_report = SplitReport(split)
        report.splits.append(split_report)
        try:
            datasets[split] = build_dataset(
                cfg, split, task=task, train=False, findings=split_report.findings
            )
        except UserError as error:
            split_report.findings.add("split that cannot be read", split, str(error))
    _decode_every_item(datasets, report)
    _check_training(datasets, report)
    return report


def _decode_every_item(datasets: dict, report: DataReport) -> None:
    """Load every item once (as a training step would), gathering sizes, modes, problems."""
    total = sum(len(dataset) for dataset in datasets.values())
    by_name = {split.name: split for split in report.splits}
    with progress(desc="check", total=total, unit="image") as bar:
        for split, dataset in datasets.items():
            split_report = by_name[split]
            split_report.class_counts = list(dataset.class_counts)
            for index in range(len(dataset)):
                _decode_item(dataset, index, split_report)
                bar.update(1)
    if "train" in datasets:
        report.class_names = list(datasets["train"].class_names)
    elif datasets:
        report.class_names = list(next(iter(datasets.values())).class_names)


def _decode_item(dataset, index: int, split_report: SplitReport) -> None:
    path = dataset.image_path(index)
    try:
        mode = read_header(path)[0]
        image, _ = dataset.load(index)
    except UserError as error:
        split_report.findings.add("file that fails to decode", str(path), str(error))
        return
    split_report.images += 1
    split_report.sizes[tuple(image.shape[-2:])] += 1
    split_report.modes[describe_mode(mode)] += 1


def _check_training(datasets: dict, report: DataReport) -> None:
    """What only the whole split shows: something to learn, the same classes in each split."""
    train = datasets.get("train")
    if train is not None and (problem := learning_problem(train, report.root / "train")):
        report.general.add("nothing to learn", "train", problem)
    for split, dataset in datasets.items():
        if train is not None and (problem := classes_problem(train, split, dataset, report.root)):
            report.general.add("classes differ between splits", split, problem)
