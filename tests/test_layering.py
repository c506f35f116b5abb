"""The layers of docs/architecture.md hold: a module imports from its own layer or below,
models never from data, and no modules import each other (directly or through others).

`LAYERS` is the allowed order, bottom first, written here once; docs/architecture.md draws
it. Every module's imports are read with `ast` (module level and inside functions, without
importing anything), and so is a string that is exactly a seglab module's name, which is
how an `importlib.import_module("seglab....")` hook would hide an import.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Bottom first. A module may import any module of its own layer or of a layer below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("seglab.errors", "seglab.files", "seglab.progress"),  # leaf utilities
    ("seglab.structures",),  # boxes, masks
    ("seglab.ops",),  # RoI pooling, NMS, anchors, matcher, sampler, selective search
    ("seglab.data",),  # datasets, transforms, caches, the COCO formats
    ("seglab.models",),  # modules and their builders: keyword arguments and tensors
    ("seglab.inference",),  # predictor, overlap-tile, U-Net instances, overlays
    ("seglab.evaluation",),  # one pass over a split: loss and metrics
    ("seglab.engine",),  # config, trainer, checkpoints
    ("seglab.bench",),  # the lineage benchmark: trains and times through the engine
    # the public API, the command, and the page `seglab explain` draws with the whole library
    ("seglab", "seglab.cli", "seglab.explain", "seglab.__main__"),
)
# (importer, imported): pairs the order above allows that the architecture refuses.
SEPARATE: tuple[tuple[str, str], ...] = (
    ("seglab.models", "seglab.data"),  # models know nothing about files or configs
)
MODULE_NAME = re.compile(r"seglab(\.\w+)+")


def layer_of(module: str) -> int | None:
    """The index in LAYERS of `module`'s layer (the longest entry naming it or a parent)."""
    best: tuple[int, int] | None = None  # (length of the entry, layer)
    for index, entries in enumerate(LAYERS):
        for entry in entries:
            # "seglab" alone is the package's __init__, not a parent of every module.
            matches = module == entry or (entry != "seglab" and module.startswith(entry + "."))
            if matches and (best is None or len(entry) > best[0]):
                best = (len(entry), index)
    return None if best is None else best[1]


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str, root: Path = SRC) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) for every seglab module that the file at `path` imports."""
    module, is_package = module_name(path, root), path.stem == "__init__"
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            for alias in node.names:  # `from seglab import data` imports the module seglab.data
                name = f"{base}.{alias.name}"
                found.append((node.lineno, name if is_module(name, root) else base))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if MODULE_NAME.fullmatch(node.value) and is_module(node.value, root):
                found.append((node.lineno, node.value))
    return sorted({(line, name) for line, name in found if name.split(".")[0] == "seglab"})


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def upward_imports(path: Path, root: Path = SRC) -> list[str]:
    """Each import of the file at `path` (under `root`) that runs to a higher layer."""
    module = module_name(path, root)
    own = layer_of(module)
    where = path.relative_to(root)
    if own is None:
        return [f"{where}: {module} is in no layer; place it in LAYERS"]
    problems = []
    for line, target in imported_modules(path, root):
        layer = layer_of(target)
        if layer is None or layer > own:
            shown = "no layer" if layer is None else f"layer {layer} {LAYERS[layer][0]}"
            problems.append(f"{where}:{line}: {module} (layer {own}) imports {target} ({shown})")
    return problems


def separated_imports(path: Path, root: Path = SRC) -> list[str]:
    """Each import of the file at `path` that a pair of SEPARATE refuses."""
    module, where = module_name(path, root), path.relative_to(root)
    return [
        f"{where}:{line}: {module} imports {target} ({importer} never import {imported})"
        for line, target in imported_modules(path, root)
        for importer, imported in SEPARATE
        if _within(module, importer) and _within(target, imported)
    ]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def import_cycles(root: Path = SRC) -> list[frozenset[str]]:
    """The sets of modules under `root` that import each other, directly or through
    others (the strongly connected components of the import graph with two or more)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((root / "seglab").rglob("*.py")):
        module = module_name(path, root)
        graph[module] = {target for _, target in imported_modules(path, root)} - {module}
    return [cycle for cycle in _components(graph) if len(cycle) > 1]


def _components(graph: dict[str, set[str]]) -> Iterator[frozenset[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    for start in graph:
        if start in index:
            continue
        index[start] = lowest[start] = len(index)
        stack.append(start)
        work = [(start, iter(sorted(graph[start])))]
        while work:
            module, targets = work[-1]
            target = next((t for t in targets if t in graph), None)
            if target is not None and target not in index:
                index[target] = lowest[target] = len(index)
                stack.append(target)
                work.append((target, iter(sorted(graph[target]))))
            elif target is not None:
                if target in stack:
                    lowest[module] = min(lowest[module], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    lowest[parent] = min(lowest[parent], lowest[module])
                if lowest[module] == index[module]:
                    cut = stack.index(module)
                    yield frozenset(stack[cut:])
                    del stack[cut:]


def source_files() -> list[Path]:
    return sorted((SRC / "seglab").rglob("*.py"))


def test_no_module_imports_from_a_higher_layer():
    problems = [problem for path in source_files() for problem in upward_imports(path)]
    assert problems == [], "\n".join(problems)


def test_models_never_import_data():
    problems = [problem for path in source_files() for problem in separated_imports(path)]
    assert problems == [], "\n".join(problems)


def test_no_modules_import_each_other():
    cycles = import_cycles()
    assert [sorted(cycle) for cycle in cycles] == []


def test_every_layer_entry_is_a_module_of_the_package():
    assert all(is_module(entry) for entries in LAYERS for entry in entries)
    assert len(source_files()) > 50  # the walk found the package


@pytest.mark.parametrize(
    "code",
    [
        "from seglab.engine.trainer import train\n",
        "def f():\n    import seglab.evaluation.coco\n",
        "from seglab import evaluation\n",
        "import importlib\nimportlib.import_module('seglab.engine.config')\n",
    ],
)
def test_an_upward_import_in_any_spelling_is_found(tmp_path, code):
    """The reader sees module-level, function-level, `from package import module` and
    importlib-string imports (here in a stand-in file of the data layer)."""
    for package in ("engine", "evaluation", "data"):
        for name in ("__init__", "config", "trainer", "coco"):
            (tmp_path / "seglab" / package).mkdir(parents=True, exist_ok=True)
            (tmp_path / "seglab" / package / f"{name}.py").touch()
    (tmp_path / "seglab" / "__init__.py").touch()
    planted = tmp_path / "seglab" / "data" / "planted.py"
    planted.write_text(code)
    assert len(upward_imports(planted, tmp_path)) == 1
    planted.write_text(code.replace("seglab.engine", "seglab.data").replace("evaluation", "data"))
    assert upward_imports(planted, tmp_path) == []  # the same spelling, downward or level


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    """A stand-in package under tmp_path: `files` maps a dotted module name to its code."""
    (tmp_path / "seglab").mkdir()
    (tmp_path / "seglab" / "__init__.py").touch()
    for name, code in files.items():
        path = tmp_path.joinpath(*name.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(code)
    return tmp_path


def test_a_model_importing_data_is_found(tmp_path):
    root = _package(tmp_path, {
        "seglab.data.proposals": "",
        "seglab.ops.search": "",
        "seglab.models.detection.builders": "def f():\n    from seglab.data import proposals\n",
        "seglab.models.detection.heads": "from seglab.ops.search import x\n",
    })  # fmt: skip
    builders = root / "seglab" / "models" / "detection" / "builders.py"
    assert len(separated_imports(builders, root)) == 1
    assert separated_imports(builders.with_name("heads.py"), root) == []


def test_a_cycle_through_a_third_module_and_inside_a_function_is_found(tmp_path):
    root = _package(tmp_path, {
        "seglab.models.zoo": "from seglab.models import specs\n",
        "seglab.models.specs": "def parts():\n    import seglab.models.detection.builders\n",
        "seglab.models.detection.builders": "from seglab.models.zoo import spec\n",
        "seglab.models.card": "from seglab.models import zoo\n",  # on no cycle
    })  # fmt: skip
    expected = {"seglab.models.zoo", "seglab.models.specs", "seglab.models.detection.builders"}
    assert import_cycles(root) == [frozenset(expected)]
    (root / "seglab" / "models" / "detection" / "builders.py").write_text("")
    assert import_cycles(root) == []
