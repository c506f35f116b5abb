"""benchmarks/vs_torchvision_train.py's own parts: torchvision's model built from our data
without downloads, its reference schedule, one budgeted training step, and the scoring both
models go through (a model that returns the ground truth scores AP 1)."""

from pathlib import Path

import pytest
import torch
from tests.scripts import load_script
from torch import nn

from seglab.data import DataConfig, build_dataset
from seglab.data.shapes import generate_shapes

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "vs_torchvision_train.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = generate_shapes(tmp_path_factory.mktemp("data") / "shapes", train=2, val=3, size=64)
    data = DataConfig(root=str(root), layout="coco", hflip=0.5, channels=3)
    return (
        build_dataset(data, "train", task="instance", train=True),
        build_dataset(data, "val", task="instance", train=False),
    )


def test_reference_schedule_warms_up_over_the_first_epoch_then_steps(bench):
    factor = bench.reference_lr_factor
    assert factor(0, 150) == pytest.approx(0.001)
    assert factor(149, 150) == 1.0  # warm-up: min(1000, 150 - 1) steps
    assert factor(74, 150) == pytest.approx(0.001 + 0.999 * 74 / 149)
    assert factor(5000, 5000) == 1.0 and factor(999, 5000) < 1.0  # at most 1000 steps
    assert factor(16 * 150 - 1, 150) == 1.0
    assert factor(16 * 150, 150) == pytest.approx(0.1)
    assert factor(22 * 150, 150) == pytest.approx(0.01)


def test_torchvision_model_is_built_without_downloads(bench, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    model = bench.torchvision_model(4)
    backbone = model.backbone.body
    # as maskrcnn_resnet50_fpn(weights=None, weights_backbone=None): BatchNorm, all trainable
    assert isinstance(backbone.bn1, nn.BatchNorm2d)
    assert all(parameter.requires_grad for parameter in model.parameters())
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4
    assert model.transform.min_size == (800,) and model.transform.max_size == 1333


def test_one_budgeted_step_on_our_data(bench, shapes):
    train_set, _ = shapes
    torch.manual_seed(0)
    model = bench.torchvision_model(4, min_size=64, max_size=64)  # small: a fast test
    before = [parameter.detach().clone() for parameter in model.parameters()]
    done = bench.train_torchvision(model, train_set, minutes=1e-9, seed=0)
    assert done["steps"] == 1 and done["images"] == 2  # the step under way finishes
    moved = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    assert sum(moved) > len(moved) // 2


def test_plain_target_gives_torchvision_its_types(bench, shapes):
    _, target = shapes[0][0]
    plain = bench.plain_target(target)
    assert set(plain) == {"boxes", "labels", "masks"}
    assert type(plain["boxes"]) is torch.Tensor and plain["boxes"].dtype == torch.float32
    assert plain["masks"].dtype == torch.uint8 and plain["masks"].shape[1:] == (64, 64)
    assert plain["labels"].dtype == torch.int64


class GroundTruth(nn.Module):
    """Returns each val image's own objects, as a detector's eval-mode output."""

    def __init__(self, val_set):
        super().__init__()
        self.items = [val_set[index] for index in range(len(val_set))]

    def forward(self, images):
        return [self._objects_of(image) for image in images]

    def _objects_of(self, image):
        target = next(target for known, target in self.items if torch.equal(known, image))
        return {
            "boxes": target["boxes"].as_subclass(torch.Tensor),
            "labels": target["labels"],
            "scores": torch.ones(len(target["labels"])),
            "masks": target["masks"].as_subclass(torch.Tensor).float()[:, None],  # (N, 1, H, W)
        }


def test_scoring_gives_the_ground_truth_ap_one_and_an_empty_model_zero(bench, shapes):
    _, val_set = shapes
    perfect = bench.evaluate_detector(GroundTruth(val_set), val_set)
    assert perfect["segm"]["AP"] == pytest.approx(1.0)
    assert perfect["bbox"]["AP"] == pytest.approx(1.0)

    class Nothing(nn.Module):
        def forward(self, images):
            empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                     "scores": torch.zeros(0), "masks": torch.zeros(0, 1, 64, 64)}  # fmt: skip
            return [empty for _ in images]

    assert bench.evaluate_detector(Nothing(), val_set)["segm"]["AP"] == 0.0


def test_seglab_trainer_counts_its_budget_on_the_given_clock(bench, shapes, tmp_path):
    """`--clock cpu` must reach the trainer: with a clock that jumps 61 s per reading, a
    one-minute budget ends the run after its first step (on the wall clock: max_steps 3)."""
    root = shapes[0].json_path.parent
    overrides = [f"data.root={root}", "data.channels=3", "model.min_size=64", "model.max_size=64",
                 "train.max_minutes=1", "train.max_steps=3", "train.batch_size=2",
                 "train.warmup_steps=1", "train.device=cpu"]  # fmt: skip
    config = bench.load_config(bench.RECIPE, overrides)
    readings = iter(range(0, 61 * 1000, 61))
    with bench.trainer_clock(lambda: float(next(readings))):
        metrics = bench.trainer.train(config, tmp_path / "run", progress=False)
    assert metrics["step"] == 1
    assert bench.trainer.time is __import__("time")  # restored
