"""Which device a command runs on."""

from __future__ import annotations

import torch

from seglab.errors import UserError


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """`auto` -> cuda when available, else cpu; an unknown or absent device is a UserError.

    `option` names the setting in the message (`train.device`, `--device`).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"{option} {name!r}: unknown; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"{option}={name}: no CUDA device here (CUDA is not available); use auto or cpu"
        )
    return device
