"""checkpoint.pt: generators, states, and a clear error for a damaged file."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from seglab.engine.checkpoint import (
    RunState,
    checkpoint_step,
    load_checkpoint,
    read_checkpoint,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from seglab.errors import UserError


def draws():
    return random.random(), random.gauss(0, 1), np.random.randn(), torch.rand(2).tolist()


def test_rng_states_round_trip_through_a_file(tmp_path):
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    torch.save(rng_states(), tmp_path / "rng.pt")
    expected = draws()
    set_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draws() == expected


def parts():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
    return model, optimizer, scheduler


def test_checkpoint_restores_model_optimizer_scheduler_state_and_random_draws(tmp_path):
    model, optimizer, scheduler = parts()
    model(torch.rand(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    state = RunState(step=7, elapsed_s=1.5, best_value=0.9, last_metrics={"accuracy": 0.9})
    path = tmp_path / "checkpoint.pt"
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler, state=state,
                    data_order={"seed": 0, "epoch": 1, "position": 2})  # fmt: skip
    expected_draws = draws()  # what a run that went on without stopping draws next
    restored_model, restored_optimizer, restored_scheduler = parts()  # draws initial weights
    random.seed(123)  # the generators of a new process, before the checkpoint is loaded
    np.random.seed(123)
    torch.manual_seed(123)
    restored = load_checkpoint(
        path, model=restored_model, optimizer=restored_optimizer, scheduler=restored_scheduler
    )
    assert draws() == expected_draws
    assert restored == state
    assert checkpoint_step(tmp_path) == 7
    torch.testing.assert_close(restored_model.weight, model.weight, rtol=0, atol=0)
    momentum = restored_optimizer.state[restored_optimizer.param_groups[0]["params"][0]]
    expected = optimizer.state[model.weight]["momentum_buffer"]
    torch.testing.assert_close(momentum["momentum_buffer"], expected)
    assert restored_scheduler.last_epoch == 1
    assert read_checkpoint(path)["data_order"] == {"seed": 0, "epoch": 1, "position": 2}


def test_no_checkpoint_means_no_step(tmp_path):
    assert checkpoint_step(tmp_path) is None


def test_damaged_checkpoint_is_a_user_error(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="checkpoint.pt: not a readable seglab checkpoint"):
        checkpoint_step(tmp_path)


def test_checkpoint_of_another_model_is_a_user_error(tmp_path):
    model, optimizer, scheduler = parts()
    state = RunState(step=3)
    save_checkpoint(tmp_path / "checkpoint.pt", model=model, optimizer=optimizer,
                    scheduler=scheduler, state=state, data_order={"epoch": 0})  # fmt: skip
    wider = torch.nn.Linear(3, 5)
    optimizer = torch.optim.SGD(wider.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with pytest.raises(UserError) as error:
        load_checkpoint(tmp_path / "checkpoint.pt", model=wider, optimizer=optimizer,
                        scheduler=scheduler)  # fmt: skip
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'checkpoint.pt'}: does not match the model (")
    assert "weight (2, 3) vs (5, 3)" in message and "delete the checkpoint" in message
