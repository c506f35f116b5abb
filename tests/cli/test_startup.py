"""The command answers before torch loads when it needs no tensors (issue 22, part 1).

Each case runs `seglab` in a fresh Python process in which `import torch` (and torchvision)
raises: help, version, the recipe list and every config mistake that can be found without
a tensor must still answer, with their usual output and exit code. A path that does need
torch (a valid config) is run the same way to show that the block bites.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seglab.cli.main import SUBCOMMANDS

# Runs `main(argv)` for each argv of argv[1] (JSON) in one process where torch cannot be
# imported; prints [exit code, stdout, stderr] per argv as JSON.
NO_TORCH = r"""
import contextlib, importlib.abc, io, json, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "torchvision"):
            raise ImportError(f"torch is blocked in this test: import {name}")
        return None

sys.meta_path.insert(0, NoTorch())
from seglab.cli.main import main

results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
        except ImportError as error:
            code = f"ImportError: {error}"
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


def run_without_torch(argvs: list[list[str]], cwd: Path) -> list[tuple[object, str, str]]:
    completed = subprocess.run(
        [sys.executable, "-c", NO_TORCH, json.dumps(argvs)],
        capture_output=True, text=True, cwd=cwd, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return [tuple(result) for result in json.loads(completed.stdout)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A folder with a config (`good.yaml`) whose data folder exists, and a file `afile`."""
    folder = tmp_path_factory.mktemp("startup")
    (folder / "data" / "train").mkdir(parents=True)
    (folder / "good.yaml").write_text(
        "seed: 0\nmodel: {name: cnn}\ndata: {root: data, layout: folders}\ntrain: {lr: 0.1}\n"
    )
    (folder / "typo.yaml").write_text(
        "seed: 0\nmodel: {name: cnn}\ndata: {root: data, layout: folders}\ntrain: {lrr: 0.1}\n"
    )
    (folder / "afile").write_text("")
    return folder


def test_help_version_and_the_recipe_list_need_no_torch(folder):
    argvs = [["--help"], ["--version"], ["train", "--list"]]
    argvs += [[command, "--help"] for command in sorted(SUBCOMMANDS)]
    argvs += [["data", "check", "--help"], ["bench", "lineage", "--help"]]
    for argv, (code, out, err) in zip(argvs, run_without_torch(argvs, folder), strict=True):
        assert code in (0, None), (argv, code, err)
        assert out and not err, (argv, err)
    listing = run_without_torch([["train", "--list"]], folder)[0][1]
    assert "mask_rcnn_r18_fpn_shapes" in listing and "unet_shapes" in listing


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "typo.yaml", "--out", "r"],
         "typo.yaml: unknown key 'train.lrr' (did you mean train.lr?)"),
        (["train", "good.yaml", "--out", "r", "--set", "train.lr=fast"],
         "--set train.lr=fast: train.lr must be float, got 'fast'"),
        (["train", "good.yaml", "--out", "r", "--set", "train.max_step=3"],
         "--set train.max_step=3: unknown key 'train.max_step' (did you mean train.max_steps?)"),
        (["train", "good.yaml", "--out", "r", "--set", "train.optimizer=adamx"],
         "--set train.optimizer=adamx: train.optimizer must be one of sgd, adamw (did you mean "
         "adamw?)"),
        (["train", "none.yaml", "--out", "r"], "none.yaml: config file not found"),
        (["train", "good.yaml", "--out", "r", "--set", "data.root=nowhere"],
         "--set data.root=nowhere: data.root: nowhere not found"),
        (["train", "good.yaml", "--out", "r", "--set", "train.init=none.safetensors"],
         "--set train.init=none.safetensors: train.init: none.safetensors not found"),
        (["train", "good.yaml", "--out", "afile"], "afile: --out is a file; give a folder"),
        (["train", "mask_rcnn_r18_fpn_shape", "--out", "r"],
         "mask_rcnn_r18_fpn_shape: no such config file or shipped recipe (did you mean "
         "mask_rcnn_r18_fpn_shapes?)"),
        (["train", "cnn_shapes", "--out", "r"], "cnn_shapes: data.root: data/shapes-classify "
         "not found"),
    ],
)  # fmt: skip
def test_config_mistakes_answer_before_torch_loads(folder, argv, expected):
    (code, out, err), = run_without_torch([argv], folder)  # fmt: skip
    assert code == 2, (code, err)
    assert err.startswith(f"seglab train: error: {expected}"), err
    assert len(err.splitlines()) == 1


def test_the_block_bites_where_torch_is_needed(folder):
    """A valid config gets past the checks and needs torch: the block is there."""
    (code, _, _), = run_without_torch([["train", "good.yaml", "--out", "r"]], folder)  # fmt: skip
    assert str(code).startswith("ImportError: torch is blocked")
    assert not (folder / "r").exists()


def test_import_seglab_imports_no_torch_until_the_api_is_used():
    code = (
        "import sys, seglab\n"
        "assert 'torch' not in sys.modules, 'import seglab loaded torch'\n"
        "assert callable(seglab.build_model) and 'torch' in sys.modules\n"
        "assert callable(seglab.predict_tiled) and 'predict_tiled' in dir(seglab)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=120, check=False)  # fmt: skip
    assert completed.returncode == 0, completed.stderr
