"""`train.device` / `--device`: auto picks CUDA when there is one; mistakes are one line."""

from __future__ import annotations

import pytest
import torch

from seglab.engine.device import resolve_device
from seglab.errors import UserError


def test_auto_is_cuda_when_available_else_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_cpu_is_taken_as_given():
    assert resolve_device("cpu") == torch.device("cpu")


def test_an_unknown_device_names_the_option():
    with pytest.raises(UserError, match="^--device 'gpu': unknown; use auto, cpu or cuda$"):
        resolve_device("gpu", option="--device")


def test_cuda_without_cuda_says_what_to_use(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        UserError, match=r"^train.device=cuda: no CUDA device here .*use auto or cpu"
    ):
        resolve_device("cuda")
