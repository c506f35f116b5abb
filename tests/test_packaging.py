"""What a non-editable install (`pip install .`, a wheel) holds: the recipes among them.

`seglab train cnn_shapes` finds its recipe in `recipes_dir()`, `configs/` next to the
installed package's modules. The repository's `src/seglab/configs` links to the top-level
`configs/`, and pyproject.toml ships `seglab/configs/*.yaml` as package data; this builds
the wheel offline from a copy of the sources and reads what it holds.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import seglab
from seglab.engine.config import load_config, recipes_dir

REPO = Path(__file__).resolve().parents[1]


def test_recipes_are_looked_up_inside_the_package():
    assert recipes_dir() == Path(seglab.__file__).parent / "configs"
    shipped = sorted(path.name for path in (REPO / "configs").glob("*.yaml"))
    assert shipped and sorted(path.name for path in recipes_dir().glob("*.yaml")) == shipped
    assert load_config("cnn_shapes").model.name == "cnn"


@pytest.mark.skipif(
    importlib.util.find_spec("setuptools") is None,
    reason="building the wheel offline needs setuptools in this environment (the test extra)",
)
def test_the_wheel_ships_every_recipe_and_the_version(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "configs"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))  # fmt: skip
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("seglab-*.whl")
    assert wheel.name.startswith(f"seglab-{seglab.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(f"seglab/configs/{path.name}" for path in (REPO / "configs").glob("*.yaml"))
    assert sorted(name for name in names if name.startswith("seglab/configs/")) == shipped
    assert "seglab/__main__.py" in names
