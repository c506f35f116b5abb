"""`seglab train` says what it knows (issue 22, part 3): paths read from the config file's
folder, a resume that forgot the run's `--set data.root`, the recipe list, `n/a` for an
undefined metric."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.cli.test_train_cli import TINY

from seglab.cli.main import main
from seglab.data.shapes import generate_shapes
from seglab.engine.recipes import describe_recipe, measured_result


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """`project/data/classify` (shapes) and `project/configs/c.yaml` naming it `../data/...`."""
    project = tmp_path_factory.mktemp("project")
    generate_shapes(project / "data" / "classify", task="classify", train=8, val=4, size=32,
                    seed=0)  # fmt: skip
    raw = yaml.safe_load(Path("configs/cnn_shapes.yaml").read_text())
    raw["data"]["root"] = "../data/classify"  # relative to the config file's folder
    (project / "configs").mkdir()
    (project / "configs" / "c.yaml").write_text(yaml.safe_dump(raw))
    return project


def error_of(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def test_relative_paths_resolve_against_the_config_files_folder(project, tmp_path, capsys,
                                                                monkeypatch):  # fmt: skip
    # From the project, `../data/classify` read from the current folder would be a sibling
    # of the project (absent); read from configs/, it is the project's data.
    monkeypatch.chdir(project)
    run = tmp_path / "run"
    assert main(["train", "configs/c.yaml", "--out", str(run), *TINY]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]["root"]
    assert Path(saved).is_absolute()  # the run names its data wherever it is resumed from
    assert Path(saved).resolve() == (project / "data" / "classify").resolve()
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)  # resume from another folder: the recorded path still holds
    assert main(["train", "--out", str(run), "-q", "--set", "train.max_steps=3"]) == 0
    assert "resuming" in capsys.readouterr().out


def test_a_missing_relative_path_says_where_it_was_read_from(project, tmp_path, capsys,
                                                             monkeypatch):  # fmt: skip
    config = project / "configs" / "missing.yaml"
    raw = yaml.safe_load((project / "configs" / "c.yaml").read_text())
    raw["data"]["root"] = "../data/nowhere"
    config.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(project / "configs")
    line = error_of(capsys, ["train", "missing.yaml", "--out", str(tmp_path / "r")])
    assert line.startswith(
        "seglab train: error: missing.yaml: data.root: ../data/nowhere not found"
    )
    assert f"(from the current folder, {project / 'configs'})" in line
    assert "relative paths in a config file are read from the file's folder" in line
    assert not (tmp_path / "r").exists()


def test_resume_without_the_runs_set_names_the_data_root_and_the_command(
    project, tmp_path, capsys, monkeypatch
):
    root = project / "data" / "classify"
    run = tmp_path / "run"
    args = ["train", "cnn_shapes", "--out", str(run), *TINY]
    assert main([*args, "--set", f"data.root={root}"]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)  # where the recipe's own data/shapes-classify is not
    line = error_of(capsys, args)  # the recipe again, without --set data.root
    assert line == (
        f"seglab train: error: {run}: this run was started with data.root={root} (now "
        f"data/shapes-classify); resume it with `seglab train --out {run}`, which reads "
        f"{run / 'config.yaml'}, or give --set data.root={root} again"
    )
    assert main(["train", "--out", str(run), "-q"]) == 0  # the command it shows works


def test_list_describes_each_shipped_recipe_from_its_file(capsys):
    assert main(["train", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    recipes = sorted(p.stem for p in Path("configs").glob("*.yaml"))
    rows = {line.split()[0]: line for line in lines[1:]}
    assert sorted(rows) == recipes and len(lines) == len(recipes) + 1
    assert (
        "mask_rcnn resnet18; coco data/shapes; 10 min (<= 5000 steps)"
        in rows["mask_rcnn_r18_fpn_shapes"]
    )
    unet = rows["unet_shapes"]
    assert "measured: val mIoU 0.866 after 2438 steps in 5 minutes" in unet
    assert "(docs/benchmarks.md)" in unet
    # a recipe whose file records no result says so, not a number from elsewhere
    assert rows["cnn_shapes"].endswith("no result recorded in the recipe")


def test_measured_result_reads_only_the_recipes_comment(tmp_path):
    text = "# A recipe\n# Measured (notes.md): AP 0.5 after 10 steps\n# on 2 cores; more.\n#\n"
    assert measured_result(text) == "AP 0.5 after 10 steps on 2 cores (notes.md)"
    assert measured_result("# A recipe\n# measures nothing\nseed: 0\n") is None
    recipe = tmp_path / "r.yaml"
    recipe.write_text("seed: 0\nmodel: {name: cnn}\ndata: {layout: folders}\ntrain: {}\n")
    assert describe_recipe(recipe) == (
        "cnn; folders (data.root unset); 5000 steps; no result recorded in the recipe"
    )


def test_train_prints_an_undefined_metric_as_n_a(project, tmp_path, capsys, monkeypatch):
    """COCO's -1 (no ground truth of that size) is `n/a` in the summary, as in seglab eval."""
    metrics = {"step": 2, "loss": 1.5, "bbox": {"AP": 0.25, "APl": -1.0}}
    monkeypatch.setattr("seglab.engine.trainer.train", lambda *args, **kwargs: dict(metrics))
    config = project / "configs" / "c.yaml"
    assert main(["train", str(config), "--out", str(tmp_path / "r"), *TINY]) == 0
    out = capsys.readouterr().out
    assert "loss=1.5000, bbox.AP=0.2500, bbox.APl=n/a" in out and "-1.0" not in out


def test_eval_table_and_train_summary_share_one_spelling():
    from seglab.cli.eval import format_metrics, metric_text

    assert metric_text(-1.0) == metric_text(None) == "n/a" and metric_text(0.5) == "0.5000"
    table = format_metrics({"accuracy": -1.0})
    assert table.split() == ["accuracy", "n/a"]


def test_recipes_are_the_package_recipes():
    """The list reads the recipes the package ships (configs/, linked into the package)."""
    from seglab.engine.config import recipes_dir

    assert sorted(p.name for p in recipes_dir().glob("*.yaml")) == sorted(
        p.name for p in Path("configs").glob("*.yaml")
    )


@pytest.mark.parametrize(
    "recipe, override, expected",
    [
        ("faster_rcnn_r18_fpn_shapes", "model.backbone=resnet81",
         "--set model.backbone=resnet81: model: backbone 'resnet81': unknown (did you mean "
         "resnet18?); use one of resnet18, "),
        ("mask_rcnn_r18_fpn_shapes", "model.fpn_norm=bnn",
         "--set model.fpn_norm=bnn: model: fpn_norm: norm 'bnn' is not one of none, bn, gn "
         "(did you mean bn?)"),
    ],
)  # fmt: skip
def test_a_misspelt_backbone_or_norm_is_refused_with_a_suggestion_before_the_data(
    recipe, override, expected, tmp_path, capsys
):
    empty = tmp_path / "empty"  # the data would be refused (no train.json) if it were read
    empty.mkdir()
    argv = ["train", recipe, "--out", str(tmp_path / "r"), "--set", f"data.root={empty}",
            "--set", override]  # fmt: skip
    assert error_of(capsys, argv).startswith(f"seglab train: error: {expected}")
    assert not (tmp_path / "r").exists()
