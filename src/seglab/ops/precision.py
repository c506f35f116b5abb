"""Arithmetic precision: float32, or bfloat16 autocast where the hardware has it.

`precision: bf16` runs a model's convolutions and matrix products in bfloat16 under
`torch.autocast` (8 bits of mantissa instead of float32's 24; the same 8-bit exponent, so
nothing overflows that float32 does not). The parameters stay float32 (the optimizer
updates float32 master weights); autocast rounds a copy of each one per call.

Where bfloat16's 8 bits lose what the model computes, the model works in float32 (each
part's test in tests/ops/test_precision.py compares it with float32's at 500-800 px):

- coordinates: anchors, box encoding and decoding, RoIAlign's sampling points, mask
  pasting. A bfloat16 coordinate of 500 px is a multiple of 2 px (256-512: 2 px steps),
  so boxes and masks would move by pixels. The head outputs (objectness, box deltas,
  class logits, mask logits) are turned into float32 as they leave their layer
  (`full_precision`), so everything after them is float32.
- RoIAlign interpolates float32 copies of the feature levels (torchvision's kernel under
  autocast does the same), so its weights and sums are float32.
- the losses (PyTorch's autocast computes them in float32 too), softmax / sigmoid scores
  and NMS, which compares float32 scores.

Training keeps nothing else in float32: no part of Mask R-CNN was found to lose accuracy in
bfloat16 (its gradients are unbiased part by part; its runs at float32's steps end 0.04 mask
AP below on average, within the runs' own spread: two float32 runs of one seed end 0.06
apart; docs/benchmarks.md, "Which part loses AP in bf16?").

`cpu_bf16_units` says whether the CPU has bfloat16 instructions (AVX-512 BF16 on AMD Zen 4
and Intel Cooper Lake, AMX on Intel Sapphire Rapids, BF16 on Arm v8.6); without them
oneDNN emulates bfloat16 with float32 instructions, which runs but slower than float32.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor

from seglab.errors import UserError, did_you_mean

PRECISIONS = ("fp32", "bf16")
# the CPU flags of bfloat16 instructions (x86: /proc/cpuinfo "flags"; Arm: "Features")
BF16_CPU_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX-512 BF16", "bf16": "Arm BF16"}


def check_precision(precision: str, *, option: str = "--precision") -> str:
    """`precision` if it is one of PRECISIONS, else a UserError naming `option`."""
    if precision not in PRECISIONS:
        hint = did_you_mean(str(precision), PRECISIONS)
        raise UserError(f"{option} {precision!r}: use {' or '.join(PRECISIONS)}{hint}")
    return precision


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The context a forward pass runs in: bfloat16 autocast for `bf16`, nothing for `fp32`."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def full_precision(tensor: Tensor) -> Tensor:
    """A half-precision (bfloat16, float16) tensor as float32; others unchanged.

    Applied to what a head outputs (logits, box deltas), so that decoding, scores, NMS,
    pasting and losses downstream work in float32 whatever precision the layers ran in.
    """
    return tensor.to(full_precision_dtype(tensor.dtype))


def full_precision_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for a half-precision dtype (bfloat16, float16), else `dtype` itself."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def autocast_dtype(device_type: str = "cpu") -> torch.dtype | None:
    """The dtype autocast gives convolutions on `device_type` now, None when it is off
    (for code that calls kernels autocast does not see, such as oneDNN's fused conv)."""
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def cpu_bf16_units() -> str | None:
    """The name of this CPU's bfloat16 instructions, or None when it has none."""
    flags = _cpu_flags()
    return next((name for flag, name in BF16_CPU_FLAGS.items() if flag in flags), None)


@functools.cache
def onednn_bf16() -> bool:
    """Whether oneDNN runs bfloat16 convolutions on this CPU: AVX-512 (BW, VL, DQ) or
    AVX-NE-CONVERT, within ONEDNN_MAX_CPU_ISA. Without it ATen's own bfloat16 convolution
    still runs (`F.conv2d` under autocast), but oneDNN's fused operator refuses."""
    try:  # private, hence the guard
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _cpu_flags() -> set[str]:
    """The CPU's feature flags: /proc/cpuinfo's (Linux), and PyTorch's cpuinfo reading."""
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            flags.update(value.split())
    try:  # any OS; private, hence the guard
        capability = torch._C._cpu._get_cpu_capability()
        flags.update(flag for flag in BF16_CPU_FLAGS if capability.get(flag) is True)
    except (AttributeError, RuntimeError):
        pass
    return flags


def bf16_note(precision: str, device: torch.device | str) -> str | None:
    """One line when `precision` is bf16 on hardware without bfloat16 arithmetic, else None
    (bf16 still runs there, emulated: slower than fp32, with bfloat16's rounding)."""
    device = torch.device(device)
    if precision != "bf16":
        return None
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return None
        return "bf16: this GPU has no bfloat16 arithmetic; it runs emulated, slower than fp32"
    if device.type != "cpu" or cpu_bf16_units() is not None:
        return None
    return (
        "bf16: this CPU has no bfloat16 instructions (AVX-512 BF16, AMX or Arm BF16); "
        "bfloat16 runs emulated, slower than fp32"
    )


@contextlib.contextmanager
def announced_autocast(
    precision: str, device: torch.device | str, say: Callable[[str], None]
) -> Iterator[None]:
    """`autocast(precision, device)`, after `say`ing `bf16_note` when there is one (the
    commands print it on stderr)."""
    note = bf16_note(precision, device)
    if note is not None:
        say(note)
    with autocast(precision, device):
        yield
