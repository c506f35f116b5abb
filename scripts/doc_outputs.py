"""Regenerate the command outputs that README.md and docs/ show, or check that they are current.

A shown output is a fenced block right after a marker comment:

    <!-- output -->            the block is a transcript: each `$ seglab ...` line is run
                               (in this process, through `seglab.cli.main.main`) and the
                               lines after it, up to the next `$ ` line, are what it prints,
                               stdout and stderr as one stream; tests/test_doc_outputs.py
                               compares them with what the commands print now.
    <!-- output: run NAME -->  shown as produced by the named run (times, training, random
                               values, other machines): never run here, never compared.
    <!-- code -->              a Python sample (```python) that runs here (`failing_samples`
                               says which names it finds defined).
    <!-- code: run NAME -->    a Python sample that needs what is not here (another package).

Every transcript (a fenced block whose first line starts with `$ `) and every Python sample
carries a marker, so a new one cannot slip in unclassified. What a transcript compares
leaves out what changes from run to run by nature: durations (`4.2 s`, `00:01 elapsed`) and
rates (`161 image/s`); the rest must be equal, line for line.

Commands run in a scratch folder (relative paths such as `runs/x` land there); the path
`/tmp/readme` in a command stands for a folder of that scratch space, and the data the
examples check (`/tmp/readme/broken`, a copy with 3 annotations edited, ...) is built by
`FIXTURES` below as the text around each example describes it. `/work/main` stands for this
checkout. argparse wraps help at 80 columns here (COLUMNS=80).

    python scripts/doc_outputs.py           # rewrite the stale outputs in place
    python scripts/doc_outputs.py --check   # list them; exit 1 if any (what the test asks)
    python scripts/doc_outputs.py --figures # and draw docs/images/explain/ again
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHOWN_REPO = "/work/main"  # how the docs name this checkout
SHOWN_SCRATCH = "/tmp/readme"  # how the docs name the examples' data folder
MARKER = re.compile(r"^<!-- (?P<what>output|code)(?::\s*(?P<kind>\S+)(?P<name>.*?))?\s*-->\s*$")
FENCE = "```"
# Durations and rates: what two runs of the same command print differently by nature.
VOLATILE = [
    (re.compile(r"\b\d+(\.\d+)? s\b"), "<s> s"),
    (re.compile(r"\b\d\d:\d\d elapsed"), "<mm:ss> elapsed"),
    (re.compile(r"\b\d+(\.\d+)? (\w+)/s\b"), r"<n> \2/s"),
]


def doc_files(repo: Path = REPO) -> list[Path]:
    """README.md, then every page under docs/, in a fixed order."""
    return [repo / "README.md", *sorted((repo / "docs").rglob("*.md"))]


@dataclass
class Block:
    """One fenced block of a markdown file: its lines [start, end) inside the fences."""

    path: Path
    marker: str | None  # None (no marker), "output", "run", "code" or "code-run"
    run_name: str
    language: str  # the fence's info string: "python", ""
    start: int  # index of the first line inside the fence
    end: int  # index of the closing fence
    lines: list[str]

    @property
    def where(self) -> str:
        shown = self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path
        return f"{shown}:{self.start}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of one markdown file, each with the marker just above it."""
    lines = path.read_text().splitlines()
    found, index = [], 0
    while index < len(lines):
        if not lines[index].startswith(FENCE):
            index += 1
            continue
        marker, name = _marker_above(lines, index)
        end = next((j for j in range(index + 1, len(lines)) if lines[j].startswith(FENCE)), None)
        if end is None:
            raise ValueError(f"{path}:{index + 1}: fence never closed")
        language = lines[index][len(FENCE) :].strip()
        found.append(Block(path, marker, name, language, index + 1, end, lines[index + 1 : end]))
        index = end + 1
    return found


def _marker_above(lines: list[str], fence: int) -> tuple[str | None, str]:
    above = fence - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    match = MARKER.match(lines[above]) if above >= 0 else None
    if match is None:
        return None, ""
    name = (match["name"] or "").strip()
    if match["kind"] is not None and (match["kind"] != "run" or not name):
        raise ValueError(
            f"{lines[above]!r}: the marker is <!-- output --> or <!-- output: run NAME -->"
            " (<!-- code --> or <!-- code: run NAME --> for a Python sample)"
        )
    if match["what"] == "code":
        return ("code-run" if match["kind"] else "code"), name
    return ("run" if match["kind"] else "output"), name


def is_transcript(block: Block) -> bool:
    return bool(block.lines) and block.lines[0].startswith("$ ")


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """(command line, shown output lines) for each `$ ` line of a transcript."""
    pairs: list[tuple[str, list[str]]] = []
    for line in block.lines:
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        else:
            pairs[-1][1].append(line)
    return pairs


def masked(text: str) -> str:
    for pattern, replacement in VOLATILE:
        text = pattern.sub(replacement, text)
    return text


# --------------------------------------------------------------------------- running


class Scratch:
    """The folder commands run in, and the example data built on demand inside it."""

    def __init__(self, root: Path):
        self.root = root
        self.built: set[str] = set()

    def to_real(self, text: str) -> str:
        return text.replace(SHOWN_SCRATCH, str(self.root / "readme"))  # readme-mixed too

    def to_shown(self, text: str) -> str:
        return text.replace(str(self.root / "readme"), SHOWN_SCRATCH).replace(str(REPO), SHOWN_REPO)

    def real_path(self, shown: str) -> Path:
        return Path(self.to_real(shown)) if shown.startswith("/") else self.root / shown

    def prepare(self, argv: list[str]) -> None:
        """Build every example dataset a command names, unless the command writes it."""
        writes = argv[2] if argv[:2] in (["data", "shapes"], ["data", "cells"]) else None
        self.build(RECIPE_DATA)
        for arg in argv:
            for shown in FIXTURES:
                if shown != writes and re.search(rf"(^|=){re.escape(shown)}(/|$)", arg):
                    self.build(shown)
        if writes:
            self.built.add(writes)

    def build(self, shown: str) -> None:
        if shown in self.built:
            return
        fixture = FIXTURES[shown]
        for need in fixture.needs:
            self.build(need)
        target = self.real_path(shown)
        if not target.exists():
            fixture.make(self, target)
        self.built.add(shown)


def run_command(command: str, scratch: Scratch) -> str:
    """What `command` prints (stdout and stderr as one stream), as the docs show it."""
    argv = shlex.split(command, comments=True)
    if not argv or argv[0] != "seglab":
        raise ValueError(f"{command!r}: a transcript runs `seglab ...` commands only")
    scratch.prepare(argv[1:])
    return scratch.to_shown(run_seglab([scratch.to_real(arg) for arg in argv[1:]], scratch.root))


def run_seglab(argv: list[str], cwd: Path) -> str:
    """`seglab ARGV` in this process, in `cwd`: what it prints, stdout and stderr as one."""
    from seglab.cli.main import main

    stream = io.StringIO()
    with _environment(cwd), contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        try:
            main(argv)
        except SystemExit:  # --help, --version and argparse's own errors exit
            pass
    return stream.getvalue().rstrip("\n")


@contextlib.contextmanager
def _environment(cwd: Path) -> Iterator[None]:
    saved_cwd, saved_columns = os.getcwd(), os.environ.get("COLUMNS")
    os.chdir(cwd)
    os.environ["COLUMNS"] = "80"
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        if saved_columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved_columns


@dataclass
class Stale:
    block: Block
    command: str
    shown: list[str]
    printed: list[str]

    def diff(self) -> str:
        import difflib

        return "\n".join(
            difflib.unified_diff(self.shown, self.printed, "shown", "printed now", lineterm="")
        )


def check_block(block: Block, scratch: Scratch) -> list[Stale]:
    """The commands of one `<!-- output -->` transcript whose shown output is not current."""
    stale = []
    for command, shown in commands(block):
        printed = run_command(command, scratch).split("\n")
        if masked("\n".join(shown)) != masked("\n".join(printed)):
            stale.append(Stale(block, command, shown, printed))
    return stale


def unmarked(files: list[Path]) -> list[Block]:
    """Transcripts and Python samples with no marker: each is either run here or named."""
    return [
        b
        for path in files
        for b in blocks(path)
        if (is_transcript(b) or b.language == "python") and b.marker is None
    ]


def compared(files: list[Path]) -> list[Block]:
    return [b for path in files for b in blocks(path) if b.marker == "output"]


def samples(files: list[Path]) -> list[Block]:
    return [b for path in files for b in blocks(path) if b.marker == "code"]


def unknown_api_names(block: Block) -> list[str]:
    """The `seglab.NAME`s a Python sample uses that seglab does not export (no torch needed)."""
    import ast

    import seglab

    tree = ast.parse("\n".join(block.lines), block.where)
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        if node.value.id == "seglab"
    }
    return sorted(used - set(seglab.__all__))


def failing_samples(files: list[Path], scratch_root: Path) -> list[tuple[Block, str]]:
    """The `<!-- code -->` Python samples that raise here, each with its error.

    A sample runs in the scratch folder with `image` (a float (3, 96, 128) image in [0, 1]),
    `images` ([image]) and `targets` (one box, label 1 and its mask) defined, and model
    files at `runs/demo/` and `runs/cnn/` (a small CNN classifier saved by `save_model`)."""
    import seglab

    for run in ("runs/demo", "runs/cnn"):
        (scratch_root / run).mkdir(parents=True, exist_ok=True)
        model = seglab.build_model("cnn", num_classes=3)
        seglab.save_model(model, scratch_root / run / "model.safetensors", class_names=CLASSES)
    failures = []
    for block in samples(files):
        try:
            with _environment(scratch_root):
                exec(compile("\n".join(block.lines), block.where, "exec"), _sample_names())
        except Exception as error:  # what the reader would see: the sample does not run
            failures.append((block, f"{type(error).__name__}: {error}"))
    return failures


CLASSES = ["circle", "square", "triangle"]


def _sample_names() -> dict:
    import torch

    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 96, 128, generator=generator)
    masks = torch.zeros(1, 96, 128, dtype=torch.uint8)
    masks[0, 20:60, 30:90] = 1
    target = {"boxes": torch.tensor([[30.0, 20.0, 90.0, 60.0]]), "labels": torch.tensor([1]),
              "masks": masks}  # fmt: skip
    return {"image": image, "images": [image], "targets": [target]}


def rewrite(stale: list[Stale]) -> None:
    """Put the printed outputs in place of the stale ones (bottom-up, so indices hold)."""
    by_file: dict[Path, list[Stale]] = {}
    for item in stale:
        by_file.setdefault(item.block.path, []).append(item)
    for path, items in by_file.items():
        lines = path.read_text().splitlines()
        for block in sorted({id(i.block): i.block for i in items}.values(), key=lambda b: -b.start):
            new_by_command = {i.command: i.printed for i in items if i.block is block}
            body = []
            for command, shown in commands(block):
                body += [f"$ {command}", *new_by_command.get(command, shown)]
            lines[block.start : block.end] = body
        path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- example data


@dataclass
class Fixture:
    make: Callable[[Scratch, Path], None]
    needs: tuple[str, ...] = ()


def _shapes(task: str, train: int, val: int) -> Callable[[Scratch, Path], None]:
    def make(scratch: Scratch, target: Path) -> None:
        argv = ["data", "shapes", str(target), "--task", task, "--train", str(train)]
        run_seglab([*argv, "--val", str(val), "-q"], scratch.root)

    return make


def _copy_of(source: str, edit: Callable[[Path], None]) -> Callable[[Scratch, Path], None]:
    def make(scratch: Scratch, target: Path) -> None:
        shutil.copytree(scratch.real_path(source), target)
        edit(target)

    return make


def _break_annotations(root: Path) -> None:
    """3 annotations edited and a val image overwritten (data.md, `seglab data check`)."""
    train_json = root / "train.json"
    coco = json.loads(train_json.read_text())
    annotations = coco["annotations"]
    x, y, _, _ = annotations[0]["bbox"]
    annotations[0]["bbox"] = [x, y, 0.0, 0.0]  # zero-area box
    x, y, w, h = annotations[1]["bbox"]
    annotations[1]["bbox"] = [x, y, w + 1000.0, h]  # partly outside its image
    x, y, w, h = annotations[5]["bbox"]
    annotations[5]["segmentation"] = [[x, y, x + w, y + h]]  # a polygon of 2 points
    train_json.write_text(json.dumps(coco))
    (root / "val" / "000007.png").write_bytes(b"not an image")


def _edit_masks(root: Path, edit: Callable[[np.ndarray, Path], np.ndarray]) -> None:
    for mask_file in sorted(root.glob("*/masks/*.png")):
        values = np.asarray(Image.open(mask_file))
        Image.fromarray(edit(values.copy(), mask_file).astype(np.uint8)).save(mask_file)
    for classes in root.glob("classes.*"):
        classes.unlink()


def _binary_masks(root: Path) -> None:
    """Semantic masks saved as 0/255, no classes file."""
    _edit_masks(root, lambda values, _: np.where(values > 0, 255, 0))


def _stray_value(root: Path) -> None:
    """One mask pixel set to 7, no classes file."""

    def edit(values: np.ndarray, mask_file: Path) -> np.ndarray:
        if mask_file.parent.parent.name == "train" and mask_file.stem == "000004":
            values[0, 0] = 7
        return values

    _edit_masks(root, edit)


def _mixed_images(root: Path) -> None:
    """One 16-bit grey, one 8-bit grey and one cut-short image among the RGB ones."""
    first, second, third = sorted((root / "train").glob("*.png"))[:3]
    grey = np.asarray(Image.open(first).convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey).save(first)
    Image.open(second).convert("L").save(second)
    third.write_bytes(third.read_bytes()[:16])  # not even its header


FIXTURES: dict[str, Fixture] = {
    f"{SHOWN_SCRATCH}/instance": Fixture(_shapes("instance", 40, 10)),
    f"{SHOWN_SCRATCH}/semantic": Fixture(_shapes("semantic", 40, 10)),
    f"{SHOWN_SCRATCH}/classify": Fixture(_shapes("classify", 40, 10)),
    f"{SHOWN_SCRATCH}/broken": Fixture(
        _copy_of(f"{SHOWN_SCRATCH}/instance", _break_annotations),
        needs=(f"{SHOWN_SCRATCH}/instance",),
    ),
    f"{SHOWN_SCRATCH}/binary": Fixture(
        _copy_of(f"{SHOWN_SCRATCH}/semantic", _binary_masks), needs=(f"{SHOWN_SCRATCH}/semantic",)
    ),
    f"{SHOWN_SCRATCH}/stray": Fixture(
        _copy_of(f"{SHOWN_SCRATCH}/semantic", _stray_value), needs=(f"{SHOWN_SCRATCH}/semantic",)
    ),
    f"{SHOWN_SCRATCH}-mixed": Fixture(
        _copy_of(f"{SHOWN_SCRATCH}/instance", _mixed_images), needs=(f"{SHOWN_SCRATCH}/instance",)
    ),
    # where a command needs only that the data exists (errors before reading): cnn_shapes'
    # data.root, and the detectors'
    "data/shapes-classify": Fixture(_shapes("classify", 6, 3)),
    "data/shapes": Fixture(_shapes("instance", 4, 2)),
}
RECIPE_DATA = "data/shapes-classify"


# --------------------------------------------------------------------------- command


def stale_outputs(files: list[Path], scratch_root: Path) -> list[Stale]:
    scratch = Scratch(scratch_root)
    (scratch_root / "readme").mkdir(parents=True, exist_ok=True)
    return [s for block in compared(files) for s in check_block(block, scratch)]


def draw_figures(folder: Path = REPO / "docs" / "images" / "explain") -> None:
    """The model pages' figures: `seglab explain` without --model, its pictures copied."""
    with tempfile.TemporaryDirectory(prefix="doc-figures-") as page:
        print(run_seglab(["explain", "--out", page], REPO))
        for picture in sorted((Path(page) / "images").iterdir()):
            shutil.copy(picture, folder / picture.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="list stale outputs, change nothing")
    parser.add_argument(
        "--figures", action="store_true",
        help="also draw the model pages' figures again (seglab explain: minutes on a CPU)",
    )  # fmt: skip
    parser.add_argument("files", nargs="*", type=Path, help="markdown files (default: all)")
    args = parser.parse_args(argv)
    files = [f.resolve() for f in args.files] or doc_files()
    for block in unmarked(files):
        print(
            f"{block.where}: a transcript or Python sample without a marker (<!-- output -->, ...)"
        )
    with tempfile.TemporaryDirectory(prefix="doc-outputs-") as scratch_root:
        stale = stale_outputs(files, Path(scratch_root))
        failures = failing_samples(files, Path(scratch_root) / "samples")
    for item in stale:
        print(f"{item.block.where}: `{item.command}` prints otherwise now:\n{item.diff()}")
    for block, error in failures:
        print(f"{block.where}: the Python sample does not run: {error}")
    if not args.check:
        rewrite(stale)
        print(f"rewrote {len(stale)} output(s)")
        if args.figures:
            draw_figures()
    return 1 if (args.check and stale) or unmarked(files) or failures else 0


if __name__ == "__main__":
    sys.exit(main())
