"""TensorBoard event files (`train.tensorboard: true`): every loss, the learning rate,
images/s, the validation metrics and overlays, and a resume that drops what an
interrupted session wrote after its checkpoint."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seglab.data.shapes import generate_shapes
from seglab.engine.config import config_from_dict
from seglab.engine.trainer import train


@pytest.fixture(scope="module")
def semantic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return generate_shapes(root / "semantic", task="semantic", train=8, val=3, size=32, seed=0)


def events(run_dir) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    return accumulator.Reload()


def make_config(root, max_steps: int):
    return config_from_dict({
        "seed": 0,
        "model": {"name": "unet", "base_channels": 4, "depth": 2, "loss": "ce+dice"},
        "data": {"root": str(root), "layout": "masks", "image_size": 32},
        "train": {"batch_size": 2, "max_steps": max_steps, "eval_every": 4, "log_every": 2,
                  "checkpoint_every": 2, "workers": 0, "device": "cpu", "optimizer": "adamw",
                  "lr": 0.01, "tensorboard": True},
    })  # fmt: skip


def test_tensorboard_holds_losses_lr_throughput_metrics_and_overlays(semantic_root, tmp_path):
    train(make_config(semantic_root, 4), tmp_path / "run", progress=False)
    tags = events(tmp_path / "run").Tags()
    expected = {"train/loss", "train/loss_ce", "train/loss_dice", "train/lr",
                "train/images_per_s", "val/loss", "val/mIoU", "val/dice"}  # fmt: skip
    assert expected <= set(tags["scalars"])
    assert [e.step for e in events(tmp_path / "run").Scalars("train/loss")] == [2, 4]
    assert sorted(tags["images"]) == ["val/overlay/0", "val/overlay/1", "val/overlay/2"]


def test_resume_drops_events_written_after_the_checkpoint(semantic_root, tmp_path):
    run_dir = tmp_path / "run"
    train(make_config(semantic_root, 4), run_dir, progress=False)
    at_step_4 = (run_dir / "checkpoint.pt").read_bytes()
    train(make_config(semantic_root, 6), run_dir, progress=False)
    # as if the session that went on to step 6 had been killed before checkpointing it
    (run_dir / "checkpoint.pt").write_bytes(at_step_4)
    train(make_config(semantic_root, 6), run_dir, progress=False)
    steps = [e.step for e in events(run_dir).Scalars("train/loss")]
    assert steps == [2, 4, 6]  # step 6 once: the first session's events after 4 are gone
