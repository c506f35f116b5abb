"""Lineage benchmark parts: the training budget given to each recipe, the options it
refuses, and the report (table with the ratio last, chart)."""

import dataclasses
from pathlib import Path

import PIL.Image
import pytest
import torch

from seglab.bench import lineage
from seglab.bench.lineage import LineageOptions
from seglab.bench.report import bar_chart, markdown_table
from seglab.bench.stages import STAGES, time_stages
from seglab.data.proposals import cache_path
from seglab.data.shapes import generate_shapes
from seglab.engine.config import config_from_dict, load_config
from seglab.engine.logging import METRICS_NAME, MetricsLog
from seglab.errors import UserError
from seglab.models.zoo import build_model, data_proposals

# What the detector recipes' `auto` options become on the shapes (seglab.data.box_fingerprint)
SHAPES_PLAN = {"anchor_sizes": [16, 32, 64, 128, 256], "aspect_ratios": [0.5, 1.0, 2.0],
               "detections_per_img": 100, "box_batch_size_per_image": 128,
               "rpn_post_nms_top_n_train": 300, "rpn_post_nms_top_n_test": 300}  # fmt: skip


@pytest.fixture
def recipe():
    return load_config("faster_rcnn_r18_fpn_shapes", ["data.root=/data"])


def test_a_time_budget_ends_the_run_and_its_schedule(recipe, monkeypatch):
    monkeypatch.setattr(lineage, "_probe_seconds", lambda config, probe_dir: (0.5, 6.0))
    config = lineage._budgeted(recipe, LineageOptions(minutes=3.0), Path("probe"))
    # 180 s at 0.5 s per step: 360 steps expected; the plan ends the run, the cap is far above
    assert config.train.max_steps == 1440 and config.train.schedule == "cosine_budget"
    assert config.train.eval_every == 72  # 5 evaluations along the 360 steps
    # the 6 evaluations (the final one included) are added: every model trains 3 minutes
    assert config.train.max_minutes == pytest.approx(3.0 + 6 * 6.0 / 60)
    assert config.train.warmup_steps == recipe.train.warmup_steps == 50
    assert config.train.device == "cpu"
    assert config.train.checkpoint_every == 1440
    changed = {"max_steps", "max_minutes", "eval_every", "checkpoint_every", "device"}
    assert {
        key for key, value in dataclasses.asdict(config.train).items()
        if value != getattr(recipe.train, key)
    } == changed  # fmt: skip
    assert dataclasses.replace(config, train=recipe.train) == recipe  # nothing else changed


def test_a_step_budget_is_the_same_for_every_model_and_keeps_a_decay(recipe):
    assert recipe.train.schedule == "cosine_budget"
    config = lineage._budgeted(recipe, LineageOptions(steps=40), Path("unused"))
    assert config.train.max_steps == 40 and config.train.max_minutes is None
    assert config.train.schedule == "cosine"  # over the steps, not the clock
    assert config.train.warmup_steps == 10  # a quarter of the run at most
    assert config.train.eval_every == 8  # 5 evaluations


def test_the_curve_is_box_ap_against_training_time_without_the_evaluations(tmp_path):
    log = MetricsLog(tmp_path / METRICS_NAME)
    for step, elapsed_s, eval_s, ap in [(10, 20.0, 5.0, 0.1), (20, 45.0, 7.0, 0.3)]:
        log.append({"step": step, "split": "train", "loss": 1.0, "elapsed_s": elapsed_s})
        log.append({"step": step, "split": "val", "elapsed_s": elapsed_s, "eval_s": eval_s,
                    "bbox": {"AP": ap}})  # fmt: skip
    assert lineage._curve(tmp_path) == [
        {"step": 10, "train_s": 20.0, "box_AP": 0.1},
        {"step": 20, "train_s": 40.0, "box_AP": 0.3},  # 45 s less the first evaluation's 5
    ]


@pytest.mark.parametrize("name", list(lineage.RECIPES))
def test_every_lineage_model_is_timed_in_every_stage(name):
    """The parts named for the model's stages exist in its recipe's model and run."""
    recipe = load_config(lineage.RECIPES[name], ["data.root=/data"])
    args = {**recipe.model.args, "min_size": 64, "max_size": 64}
    args |= {key: SHAPES_PLAN[key] for key in args if args[key] == "auto"}
    model = build_model(name, num_classes=4, **args).eval()
    stages = time_stages(model, [torch.rand(3, 64, 80)], lineage.STAGE_PARTS[name])
    assert all(stages[stage] > 0 for stage in STAGES), stages


def test_step_time_is_the_trainers_on_the_train_split_sharing_the_proposal_cache(tmp_path):
    data = generate_shapes(tmp_path / "data", train=4, val=2, size=64)
    model = {"name": "fast_rcnn", "backbone": "resnet18", "norm": "bn", "min_size": 64,
             "max_size": 64, "representation_size": 32}  # fmt: skip
    config = config_from_dict(
        {"seed": 0, "model": model, "data": {"root": str(data)}, "train": {"batch_size": 2}}
    )
    seconds = lineage._seconds_per_step(config, tmp_path / "probe")
    assert 0 < seconds < 60
    lines = MetricsLog(tmp_path / "probe" / "run" / METRICS_NAME).read()
    assert [r["step"] for r in lines] == list(range(1, lineage.CALIBRATION_STEPS + 2))
    assert all(r.get("split") != "val" for r in lines)  # no evaluation: no val split there
    steps = [r["elapsed_s"] for r in lines]
    assert seconds == pytest.approx((steps[-1] - steps[0]) / lineage.CALIBRATION_STEPS)
    # The probe's training proposals went into the data's own cache, for the real run.
    settings = data_proposals("fast_rcnn", config.model.args)
    assert cache_path(data, "train", settings).is_file()
    assert sorted(p.name for p in data.iterdir()) == sorted(
        ["proposals", "train", "train.json", "val", "val.json"]
    )


@pytest.mark.parametrize(
    "options, message",
    [
        ({"models": ("yolo",)}, "--models yolo: unknown"),
        ({"models": ()}, "unknown or none"),
        ({"minutes": 0}, "--minutes 0"),
        ({"time_images": 60}, "--time-images 60: at most the 50 test images"),
    ],
)
def test_bad_options_are_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        LineageOptions(**options)


def curve(*aps: float, seconds: float = 60.0) -> list[dict[str, float]]:
    """Evaluations at equal intervals of training time, the last at `seconds`."""
    count = len(aps)
    return [{"step": 10 * (index + 1), "train_s": seconds * (index + 1) / count, "box_AP": ap}
            for index, ap in enumerate(aps)]  # fmt: skip


REPORT = {
    "models": {
        "faster_rcnn": {"proposal_s": 0.01, "features_s": 0.05, "heads_s": 0.02,
                        "post_s": 0.001, "total_s": 0.081, "box_AP": 0.375, "train_steps": 500,
                        "curve": curve(0.1, 0.3, 0.375)},
        "mask_rcnn": {"proposal_s": 0.01, "features_s": 0.06, "heads_s": 0.08,
                      "post_s": 0.012, "total_s": 0.162, "box_AP": -1.0, "train_steps": 450,
                      "curve": curve(-1.0, -1.0)},
    }
}  # fmt: skip


def test_table_has_a_row_per_model_and_the_ratio_last():
    lines = markdown_table(REPORT).splitlines()
    assert lines[0].startswith("| model | proposals s | CNN features s | heads s |")
    assert lines[0].endswith("| speed vs Faster R-CNN |")
    assert lines[2] == (
        "| Faster R-CNN | 0.0100 | 0.0500 | 0.0200 | 0.0010 | 0.0810 | 0.375 | 500 | 1.0x |"
    )
    assert lines[3].endswith("| 0.1620 | n/a | 450 | 0.5x |")  # half as fast; AP undefined


def test_chart_is_a_png(tmp_path):
    path = bar_chart(REPORT, tmp_path / "lineage.png")
    with PIL.Image.open(path) as image:
        assert image.format == "PNG" and image.width > image.height > 100
