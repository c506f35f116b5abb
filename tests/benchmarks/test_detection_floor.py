"""benchmarks/detection_floor.py counts the operators that run the kernels: a renamed
operator would leave the floor at 0 (or count autograd's bookkeeping) without an error."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tests.scripts import load_script

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "detection_floor.py"


def test_the_kernels_of_a_step_are_counted_and_their_callers_are_not():
    floor = load_script(SCRIPT)
    torch.manual_seed(0)
    x = torch.randn(2, 8, 16, 16)
    conv = torch.randn(8, 8, 3, 3, requires_grad=True)
    fc = torch.randn(4, 8 * 16 * 16, requires_grad=True)

    def step():
        hidden = F.relu(F.conv2d(x, conv, padding=1))
        F.linear(hidden.flatten(1), fc, torch.zeros(4)).square().sum().backward()

    step()
    with torch.profiler.profile() as prof:
        step()
    names = {event.key for event in prof.key_averages()}
    counted = {name for name in names if floor.dense(name)}
    # the forward convolution's kernel, its backward, the product forward (addmm) and back (mm)
    assert "aten::convolution_backward" in counted
    assert counted & {"aten::mkldnn_convolution", "aten::_convolution", "aten::thnn_conv2d"}
    assert {"aten::addmm", "aten::mm"} <= counted
    assert not {name for name in counted if "Backward" in name}  # autograd's nodes
    assert not counted & {"aten::relu", "aten::threshold_backward", "aten::sum"}

    result = floor.profile(step)
    assert 0 < result["dense_s"] < result["profiled_s"]


def test_convolution_flops_from_onednn_problems():
    floor = load_script(SCRIPT)
    problem = "mb3_ic256oc256_ih200oh200kh3sh1dh0ph1_iw304ow304kw3sw1dw0pw1"
    assert floor.convolution_flops(problem) == 2 * 3 * 256 * 256 * 200 * 304 * 3 * 3
    grouped = "g32mb1_ic64oc64_ih8oh4kh3sh2dh0ph1_iw8ow4kw3sw2dw0pw1"  # 2 inputs per group
    assert floor.convolution_flops(grouped) == 2 * 1 * 2 * 64 * 4 * 4 * 3 * 3


def test_the_log_of_a_call_counts_its_convolutions():
    floor = load_script(SCRIPT)
    torch.manual_seed(0)
    x = torch.randn(2, 16, 32, 32).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(24, 16, 3, 3)

    def call():
        with torch.no_grad():
            F.conv2d(F.conv2d(x, weight, padding=1)[:, :16], weight, stride=2)

    call()
    counted = floor.onednn_convolutions(call)
    expected = 2 * 2 * 16 * 24 * (32 * 32 + 15 * 15) * 3 * 3  # the two convolutions
    assert counted["gflop"] * 1e9 == expected and counted["seconds"] > 0


def test_no_repetition_is_refused_in_one_line(capsys):
    floor = load_script(SCRIPT)
    with pytest.raises(SystemExit) as stopped:
        floor.main(["--repeats", "0"])
    assert stopped.value.code == 2 and "--repeats" in capsys.readouterr().err
