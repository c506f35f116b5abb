"""A detector's `auto` options are planned once per run from the training boxes, said in one
line, recorded in RUN/config.yaml and in the model, kept when given, and not planned again
by a resume; and the run's last line says what ended it (engine/budget.end_reason)."""

from __future__ import annotations

import dataclasses
import json
import types

import pytest
import yaml
from torch.optim.optimizer import register_optimizer_step_pre_hook

import seglab
from seglab import evaluation
from seglab.data.shapes import generate_shapes
from seglab.engine import trainer
from seglab.engine.budget import end_reason
from seglab.engine.config import TrainConfig, load_config
from seglab.engine.resolve import resolve_config
from seglab.errors import UserError
from seglab.models.detection.options import AUTO_OPTIONS

PLAN_LINE = "model options auto: "


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan") / "shapes"
    return generate_shapes(root, task="instance", train=4, val=2, size=64, seed=0)


def small_recipe(root, *overrides):
    """The Faster R-CNN shapes recipe (its options `auto`), small and one step long."""
    return load_config("faster_rcnn_r18_fpn_shapes", [
        f"data.root={root}", "model.fpn_channels=8", "model.representation_size=16",
        "train.batch_size=2", "train.max_steps=1", "train.max_minutes=null",
        "train.schedule=cosine", "train.warmup_steps=0", "train.device=cpu", *overrides,
    ])  # fmt: skip


@dataclasses.dataclass
class CocoSplit:
    """What resolve_config reads of a COCO train dataset."""

    coco_gt: dict
    images: list
    intensity: tuple | None = None
    scale_plan: None = None
    class_names: tuple = ("shape",)

    def __len__(self) -> int:
        return len(self.images)


def crowded_split(objects: int) -> CocoSplit:
    """4 images of 256 px, each with `objects` boxes of 16 px."""
    images = [{"id": k, "height": 256, "width": 256} for k in range(1, 5)]
    boxes = [{"image_id": info["id"], "bbox": [0, 0, 16, 16]}
             for info in images for _ in range(objects)]  # fmt: skip
    return CocoSplit({"annotations": boxes}, images)


def test_the_recipes_leave_every_plannable_option_auto():
    for recipe in ("faster_rcnn_r18_fpn_shapes", "mask_rcnn_r18_fpn_shapes"):
        args = load_config(recipe).model.args
        assert {name: args[name] for name in AUTO_OPTIONS} == dict.fromkeys(AUTO_OPTIONS, "auto")


def test_resolve_writes_the_plan_says_it_once_and_keeps_the_given_options():
    config = load_config("mask_rcnn_r18_fpn_shapes", ["model.min_size=160"])
    lines = []
    resolved = resolve_config(config, crowded_split(150), lines.append)
    assert len(lines) == 1 and lines[0].startswith(PLAN_LINE)
    args = resolved.model.args
    assert args["min_size"] == 160  # given: kept, and the plan follows it
    assert args["max_size"] == 160 and args["anchor_sizes"] == [8, 16, 32, 64, 128]  # 10 px
    assert args["detections_per_img"] == 230  # 150 objects in an image
    assert not any(value == "auto" for value in args.values())
    unchanged = {k: v for k, v in args.items() if k not in AUTO_OPTIONS}
    assert unchanged == {k: v for k, v in config.model.args.items() if k not in AUTO_OPTIONS}
    # nothing auto: nothing planned, nothing said
    assert resolve_config(resolved, crowded_split(3), lines.append) == resolved and len(lines) == 1


def test_a_model_is_built_from_numbers_and_a_misspelt_auto_is_named():
    args = load_config("faster_rcnn_r18_fpn_shapes").model.args
    with pytest.raises(UserError, match="min_size, max_size, anchor_sizes.*planned from the"):
        seglab.build_model("faster_rcnn", num_classes=4, **args)
    with pytest.raises(
        UserError, match="--set model.min_size=aut: model: min_size 'aut': give a number"
    ):
        load_config("faster_rcnn_r18_fpn_shapes", ["model.min_size=aut"])


def test_the_plan_is_said_once_recorded_and_a_resume_keeps_it(coco_root, tmp_path):
    run_dir, lines = tmp_path / "run", []
    trainer.train(small_recipe(coco_root), run_dir, progress=False, report=lines.append)
    said = [line for line in lines if line.startswith(PLAN_LINE)]
    assert len(said) == 1
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]
    planned = {name: recorded[name] for name in AUTO_OPTIONS}
    assert planned["min_size"] == 128  # 64 px images, small shapes: 2 x, the upsampling cap
    assert f"min_size={planned['min_size']}," in said[0]
    card = seglab.load_model(run_dir / "model.safetensors").card
    assert {name: card.arch_args[name] for name in AUTO_OPTIONS} == planned
    # the data changes (every box a quarter of its size): a new plan would differ
    train_json = coco_root / "train.json"
    coco = json.loads(train_json.read_text())
    for annotation in coco["annotations"]:
        annotation["bbox"][2:] = [value / 4 for value in annotation["bbox"][2:]]
    moved = train_json.with_suffix(".json.bak")
    train_json.rename(moved)
    try:
        train_json.write_text(json.dumps(coco))
        resumed_lines = []
        metrics = trainer.train(small_recipe(coco_root, "train.max_steps=2"), run_dir,
                                progress=False, report=resumed_lines.append)  # fmt: skip
    finally:
        moved.replace(train_json)
    assert metrics["step"] == 2
    assert not [line for line in resumed_lines if line.startswith(PLAN_LINE)]
    again = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]
    assert {name: again[name] for name in AUTO_OPTIONS} == planned


# The end of a run: the budget (its minutes, or the steps planned for them) or max_steps.
def test_the_end_reason_names_the_bound_that_ended_the_run():
    budget = TrainConfig(schedule="cosine_budget", max_steps=20000, max_minutes=5)
    assert end_reason(budget, step=2438, elapsed_s=290.0, planned=2438) == (
        "ended: budget used (the 2438 steps planned for 5 min, done in 4.8)"
    )
    assert end_reason(budget, step=2000, elapsed_s=300.0, planned=2438) == (
        "ended: budget used (5 min, step 2000)"
    )
    capped = dataclasses.replace(budget, max_steps=2700)
    assert end_reason(capped, step=2700, elapsed_s=170.0, planned=2700) == (
        "ended: train.max_steps=2700 reached after 2.8 of 5 min; raise it to use the budget"
    )
    steps = TrainConfig(schedule="cosine", max_steps=300)
    assert end_reason(steps, step=300, elapsed_s=50.0, planned=None) == (
        "ended: train.max_steps=300 reached"
    )


@pytest.fixture
def fake_clock(monkeypatch):
    """5 s per optimizer step on the trainer's clock; an evaluation estimated at 0 s."""
    steps = {"taken": 0}

    def before_step(optimizer, args, kwargs):
        steps["taken"] += 1

    hook = register_optimizer_step_pre_hook(before_step)
    monkeypatch.setattr(
        trainer, "time", types.SimpleNamespace(monotonic=lambda: 5.0 * steps["taken"])
    )
    monkeypatch.setattr(evaluation, "seconds_per_pass", lambda *args, **kwargs: 0.0)
    yield
    hook.remove()


@pytest.mark.parametrize("max_steps, ended", [
    (1000, "ended: budget used (the 22 steps planned for 2 min, done in 1.8)"),
    (15, "ended: train.max_steps=15 reached after 1.2 of 2 min; raise it to use the budget"),
])  # fmt: skip
def test_a_budgeted_run_says_what_ended_it(tmp_path, fake_clock, max_steps, ended):
    root = generate_shapes(tmp_path / "c", task="classify", train=8, val=2, size=32, seed=0)
    config = load_config("cnn_shapes", [
        f"data.root={root}", "model.widths=[4]", "model.hidden=4", "data.image_size=32",
        "train.schedule=cosine_budget", "train.max_minutes=2", f"train.max_steps={max_steps}",
        "train.warmup_steps=10", "train.eval_every=1000", "train.device=cpu",
        "train.batch_size=4", "train.workers=0",
    ])  # fmt: skip
    assert trainer.train(config, tmp_path / "run", progress=False)["ended"] == ended
