"""The trainer: run files, budget, exact resume, interruption, config guard on resume."""

from __future__ import annotations

import dataclasses
import json
import signal

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.nn.modules.module import register_module_forward_hook
from torch.optim.optimizer import register_optimizer_step_pre_hook

import seglab
from seglab.engine.checkpoint import checkpoint_step
from seglab.engine.config import config_from_dict
from seglab.engine.interrupt import Interrupted
from seglab.engine.trainer import train
from seglab.errors import UserError
from seglab.models.classification.cnn import CNNClassifier


def make_config(root, **train):
    train_section = {
        "batch_size": 4, "lr": 0.01, "optimizer": "adamw", "max_steps": 8, "eval_every": 4,
        "checkpoint_every": 3, "log_every": 2, "workers": 0, "device": "cpu", "warmup_steps": 1,
    }  # fmt: skip
    train_section.update(train)
    raw = {
        "seed": 3,
        "model": {"name": "cnn", "widths": [4, 8], "hidden": 8, "dropout": 0.3},
        "data": {"root": str(root), "layout": "folders", "image_size": 32, "hflip": 0.5},
        "train": train_section,
    }
    return config_from_dict(raw)


def weights(run_dir, name="model.safetensors"):
    return load_file(str(run_dir / name))


def test_run_writes_its_files(shapes_root, tmp_path):
    run_dir = tmp_path / "run"
    metrics = train(make_config(shapes_root), run_dir, progress=False)
    assert metrics["step"] == 8 and 0 <= metrics["accuracy"] <= 1 and metrics["loss"] > 0
    for name in ("config.yaml", "model.safetensors", "best.safetensors", "checkpoint.pt",
                 "metrics.jsonl", "plots/loss.png", "plots/metric.png"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [2, 4, 6, 8]
    assert [r["step"] for r in records if r["split"] == "val"] == [4, 8]
    evaluations = [r for r in records if r["split"] == "val"]  # when, and how long each took
    assert 0 < evaluations[0]["elapsed_s"] < evaluations[1]["elapsed_s"]
    assert all(r["eval_s"] > 0 for r in evaluations)
    assert {"loss", "loss_cls", "lr", "images_per_s"} <= set(records[0])
    model = seglab.load_model(run_dir / "model.safetensors")
    assert model.card.class_names == ("circle", "square", "triangle")
    assert model.card.config["model"]["num_classes"] == 3  # `auto` resolved from the data
    assert checkpoint_step(run_dir) == 8


def test_finished_run_is_not_trained_again(shapes_root, tmp_path):
    config = make_config(shapes_root, max_steps=2, eval_every=2)
    first = train(config, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    again = train(config, tmp_path / "run", progress=False)
    assert again == first
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_wall_clock_budget_stops_evaluates_and_saves(shapes_root, tmp_path):
    config = make_config(shapes_root, max_steps=1000, max_minutes=1e-6)
    metrics = train(config, tmp_path / "run", progress=False)
    assert metrics["step"] == 1  # the budget is spent after the first step
    assert "accuracy" in metrics
    assert checkpoint_step(tmp_path / "run") == 1


class Interrupt(KeyboardInterrupt):
    pass


def interrupt_training_at(monkeypatch, step, error: type[BaseException] = Interrupt):
    """Make the `step`-th training forward raise `error`, as a Ctrl-C during that step
    would (or a process dying: an error no handler catches)."""
    original = CNNClassifier.forward_with_losses
    calls = {"train": 0}

    def forward_with_losses(self, images, targets):
        if self.training:
            calls["train"] += 1
            if calls["train"] == step:
                raise error
        return original(self, images, targets)

    monkeypatch.setattr(CNNClassifier, "forward_with_losses", forward_with_losses)


def test_resume_after_interruption_gives_bit_identical_weights(shapes_root, tmp_path, monkeypatch):
    config = make_config(shapes_root)
    train(config, tmp_path / "straight", progress=False)

    with monkeypatch.context() as patch:
        interrupt_training_at(patch, step=6)  # checkpoints at 3 and 6: dies during step 6
        with pytest.raises(Interrupt):
            train(config, tmp_path / "resumed", progress=False)
    assert checkpoint_step(tmp_path / "resumed") == 3  # lost only steps 4 and 5
    train(config, tmp_path / "resumed", progress=False)

    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    steps = [(r["split"], r["step"]) for r in map(json.loads, lines)]
    assert len(steps) == len(set(steps))  # lines of the lost steps were dropped, not doubled


def signal_during_training_step(monkeypatch, step, signal_number, times=1):
    """Send `signal_number` to this process `times` during the `step`-th training forward,
    as a Ctrl-C in the terminal or a `kill` would. `raise_signal` delivers it to the main
    thread, which runs the Python handler before it returns; `os.kill` lets the kernel pick
    any thread (torch's included), and a handler run late made two signals one."""
    original = CNNClassifier.forward_with_losses
    calls = {"train": 0}

    def forward_with_losses(self, images, targets):
        if self.training:
            calls["train"] += 1
            if calls["train"] == step:
                for _ in range(times):  # a person's second Ctrl-C comes after the first's handler
                    handler = signal.getsignal(signal_number)
                    signal.raise_signal(signal_number)
                    assert signal.getsignal(signal_number) is not handler  # it ran: restored
        return original(self, images, targets)

    monkeypatch.setattr(CNNClassifier, "forward_with_losses", forward_with_losses)


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_the_step_then_stops_and_the_run_resumes_exactly(
    shapes_root, tmp_path, monkeypatch, signal_number
):
    config = make_config(shapes_root, checkpoint_every=100)  # no checkpoint before the end
    train(config, tmp_path / "straight", progress=False)
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    with monkeypatch.context() as patch:
        signal_during_training_step(patch, 5, signal_number)
        with pytest.raises(Interrupted) as stopped:
            train(config, tmp_path / "resumed", progress=False)
    assert (stopped.value.signal_number, stopped.value.step) == (signal_number, 5)
    assert checkpoint_step(tmp_path / "resumed") == 5  # the step the signal arrived in
    assert {number: signal.getsignal(number) for number in handlers} == handlers
    train(config, tmp_path / "resumed", progress=False)
    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


@pytest.fixture
def terminal_sigint():
    """SIGINT as in a terminal: Python's KeyboardInterrupt. A job a shell starts in the
    background (CI's, for one) inherits SIGINT ignored, and a second Ctrl-C would then be
    ignored too, as it would be for that job."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_second_signal_stops_at_once(shapes_root, tmp_path, monkeypatch, terminal_sigint):
    signal_during_training_step(monkeypatch, 2, signal.SIGINT, times=2)
    with pytest.raises(KeyboardInterrupt) as stopped:
        train(make_config(shapes_root, checkpoint_every=100), tmp_path / "run", progress=False)
    assert not isinstance(stopped.value, Interrupted)  # Python's own, in the middle of step 2
    assert checkpoint_step(tmp_path / "run") is None


def test_resume_with_a_longer_budget_continues(shapes_root, tmp_path):
    train(make_config(shapes_root, max_steps=4), tmp_path / "run", progress=False)
    metrics = train(make_config(shapes_root, max_steps=6), tmp_path / "run", progress=False)
    assert metrics["step"] == 6


def test_resume_with_another_config_is_refused(shapes_root, tmp_path):
    train(make_config(shapes_root, max_steps=2), tmp_path / "run", progress=False)
    with pytest.raises(UserError, match="started with train.lr=0.01, now 0.5"):
        train(make_config(shapes_root, max_steps=2, lr=0.5), tmp_path / "run", progress=False)


def test_out_pointing_to_a_file_is_refused(shapes_root, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="--out is a file"):
        train(make_config(shapes_root), tmp_path / "file", progress=False)


@pytest.fixture
def steps_seen():
    """What each optimizer step applies (the learning rate, the gradients' total norm) and
    the dtype of every convolution's output in a training forward, over one `train` call."""
    seen = {"lr": [], "grad_norm": [], "conv_dtypes": set(), "master_dtypes": set()}

    def before_step(optimizer, args, kwargs):
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        grads = [p.grad for p in parameters]
        norms = torch.stack([torch.linalg.vector_norm(g) for g in grads if g is not None])
        seen["grad_norm"].append(torch.linalg.vector_norm(norms).item())
        seen["lr"].append(optimizer.param_groups[0]["lr"])
        seen["master_dtypes"].update(t.dtype for t in (*parameters, *grads) if t is not None)

    def after_forward(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d) and module.training:
            seen["conv_dtypes"].add(output.dtype)

    hooks = [
        register_optimizer_step_pre_hook(before_step),
        register_module_forward_hook(after_forward),
    ]
    yield seen
    for hook in hooks:
        hook.remove()


def test_sgd_step_schedule_clipping_and_bf16(shapes_root, tmp_path, steps_seen):
    config = make_config(
        shapes_root, optimizer="sgd", lr=0.01, schedule="step", milestones=[2], gamma=0.1,
        warmup_steps=0, grad_clip=1e-3, precision="bf16", max_steps=4, eval_every=4,
    )  # fmt: skip
    metrics = train(config, tmp_path / "run", progress=False)
    assert metrics["step"] == 4 and torch.isfinite(torch.tensor(metrics["loss"]))
    # Step k uses the factor after k - 1 scheduler steps: 1 before milestone 2, gamma after
    # (a cosine schedule would give 1, 0.85, 0.5, 0.15; no schedule 1, 1, 1, 1).
    assert steps_seen["lr"] == pytest.approx([0.01, 0.01, 0.001, 0.001], rel=1e-6)
    # Every step's gradient is clipped to norm 1e-3 (without clipping: norms 0.9 to 3.4).
    assert steps_seen["grad_norm"] == pytest.approx([1e-3] * 4, rel=1e-4)
    assert steps_seen["conv_dtypes"] == {torch.bfloat16}  # the forwards ran under autocast
    # the optimizer updates float32 master weights with float32 gradients
    assert steps_seen["master_dtypes"] == {torch.float32}


def test_diverging_loss_is_reported(shapes_root, tmp_path, monkeypatch):
    def nan_loss(self, images, targets):
        return [], {"loss_cls": torch.tensor(float("nan"), requires_grad=True)}

    monkeypatch.setattr(CNNClassifier, "forward_with_losses", nan_loss)
    with pytest.raises(UserError, match="loss became nan at step 1; lower train.lr"):
        train(make_config(shapes_root), tmp_path / "run", progress=False)


def test_data_loading_workers_do_not_change_the_result(shapes_root, tmp_path):
    # augmentation is seeded per (seed, step, index), not per worker process
    config = make_config(shapes_root, max_steps=3, eval_every=3)
    train(config, tmp_path / "main_process", progress=False)
    train(make_config(shapes_root, max_steps=3, eval_every=3, workers=2), tmp_path / "workers",
          progress=False)  # fmt: skip
    in_main, in_workers = weights(tmp_path / "main_process"), weights(tmp_path / "workers")
    for name in in_main:
        assert torch.equal(in_main[name], in_workers[name]), name


@pytest.fixture(scope="module")
def grayscale_root(shapes_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("gray")
    for path in shapes_root.rglob("*.png"):
        target = root / path.relative_to(shapes_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("L").save(target)
    return root


def test_grayscale_data_with_one_input_channel(grayscale_root, tmp_path):
    config = make_config(grayscale_root, max_steps=2, eval_every=2)
    with pytest.raises(UserError, match="set model.in_channels=1"):
        train(config, tmp_path / "rgb_model", progress=False)
    gray_args = {**config.model.args, "in_channels": 1}
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, args=gray_args))
    assert train(config, tmp_path / "gray_model", progress=False)["step"] == 2
    assert seglab.load_model(tmp_path / "gray_model" / "model.safetensors").in_channels == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a CPU-only machine")
def test_cuda_device_without_cuda_is_a_user_error(shapes_root, tmp_path):
    with pytest.raises(UserError, match="train.device=cuda: no CUDA device here"):
        train(make_config(shapes_root, device="cuda"), tmp_path / "run", progress=False)
