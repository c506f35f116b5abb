"""checkpoint.pt: generators, states, and a clear error for a damaged file."""

from __future__ import annotations

import io
import random
from functools import partial
from pathlib import Path

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


def test_a_save_that_fails_half_way_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """The checkpoint goes through the atomic writer: a save interrupted after writing half
    its bytes (here: torch.save raising midway) leaves the previous checkpoint whole and
    loadable, and no temporary file beside it."""
    model, optimizer, scheduler = parts()
    path = tmp_path / "checkpoint.pt"
    save = partial(save_checkpoint, path, model=model, optimizer=optimizer,
                   scheduler=scheduler, data_order={"epoch": 0})  # fmt: skip
    save(state=RunState(step=5))
    real_save = torch.save

    def half_then_crash(obj, file, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        Path(file).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise KeyboardInterrupt  # Ctrl-C, or the machine going away, mid-write

    monkeypatch.setattr(torch, "save", half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        save(state=RunState(step=10))
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    restored = load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler)
    assert restored.step == 5


def test_each_process_resumes_with_its_own_random_state(tmp_path):
    """DDP: every process's generators are saved; on resume with as many processes, rank 1
    continues rank 1's draws (not rank 0's)."""
    model, optimizer, scheduler = parts()
    per_rank, expected = [], []
    for seed in (10, 11):  # the two processes' generators at the checkpoint
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        per_rank.append(rng_states())
        expected.append(draws())
    set_rng_states(per_rank[0])  # the saving process is rank 0
    save_checkpoint(tmp_path / "checkpoint.pt", model=model, optimizer=optimizer,
                    scheduler=scheduler, state=RunState(step=3), data_order={"epoch": 0},
                    rng_per_rank=per_rank)  # fmt: skip
    assert expected[0] != expected[1]
    for rank in (1, 0):
        torch.manual_seed(123)
        load_checkpoint(tmp_path / "checkpoint.pt", model=model, optimizer=optimizer,
                        scheduler=scheduler, rank=rank, world_size=2)  # fmt: skip
        assert draws() == expected[rank], f"rank {rank}"
