"""bfloat16 autocast: the parts kept in float32 equal float32's exactly, what bfloat16
would have made of them, the fused convolution in bfloat16, and the CPU-without-bf16 line.

Coordinates are tested at 300-800 px, where bfloat16 (8 significant bits) holds only
multiples of 2 (256-512 px) and 4 (512-1024 px): the scale of the default 800 px images.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seglab.inference.precision_check import BF16_ROUNDING
from seglab.models import layers
from seglab.models.layers import conv_norm_act
from seglab.ops import precision
from seglab.ops.anchors import AnchorGenerator
from seglab.ops.roi_align import MultiScaleRoIAlign
from seglab.ops.roi_pool import roi_pool

onednn_conv = layers._onednn_conv

SIZE = 800  # px of the image the feature maps belong to
STRIDES = (4, 8, 16, 32)
FP32_ROUNDING = 2**-24


def _levels(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """FPN-like levels of an 800 px image, 4 channels, values exact in bfloat16."""
    generator = torch.Generator().manual_seed(0)
    return {
        str(index): torch.randn(1, 4, SIZE // stride, SIZE // stride, generator=generator)
        .to(torch.bfloat16)
        .to(dtype)
        for index, stride in enumerate(STRIDES)
    }


def _far_boxes(count: int = 40) -> torch.Tensor:
    """(count, 4) xyxy boxes with corners between 300 and 800 px, at fractional pixels."""
    generator = torch.Generator().manual_seed(1)
    corners = 300 + 499 * torch.rand(count, 2, 2, generator=generator)  # (K, 2 corners, xy)
    low, high = corners.min(dim=1).values, corners.max(dim=1).values
    return torch.cat([low, high + 1.37], dim=1)


def test_anchors_of_bfloat16_features_are_float32_anchors():
    generator = AnchorGenerator(((32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 4)
    args = ([(SIZE, SIZE)], (SIZE, SIZE))
    (want,) = generator(*args, list(_levels(torch.float32).values()))
    (got,) = generator(*args, list(_levels(torch.bfloat16).values()))
    assert got.dtype == torch.float32
    assert torch.equal(got, want)
    # what bfloat16 anchors would be: corners up to 2 px off (4 px steps past 512)
    assert float((want.bfloat16().float() - want).abs().max()) >= 1.0


def test_roi_align_of_bfloat16_levels_samples_at_float32_points():
    """The sparse RoIAlign of bfloat16 levels equals that of their float32 copies bit for
    bit (float32 sampling points, weights and sums), while regions rounded to bfloat16
    would pool other cells."""
    pooler = MultiScaleRoIAlign(list(_levels(torch.float32)), 7, sampling_ratio=2, aligned=True)
    boxes = [_far_boxes()]
    want = pooler(_levels(torch.float32), boxes, [(SIZE, SIZE)])
    got = pooler(_levels(torch.bfloat16), boxes, [(SIZE, SIZE)])
    assert got.dtype == torch.float32
    assert torch.equal(got, want)
    rounded = pooler(_levels(torch.float32), [boxes[0].bfloat16().float()], [(SIZE, SIZE)])
    # features are N(0, 1): a shift of a fraction of a cell moves a bin by a tenth or more
    assert float((rounded - want).abs().max()) > 0.1


def test_roi_pool_of_bfloat16_features_is_float32_pooling():
    features = _levels(torch.bfloat16)["2"]  # stride 16
    rois = torch.cat([torch.zeros(40, 1), _far_boxes()], dim=1)
    got = roi_pool(features, rois, 7, 1 / 16)
    assert torch.equal(got, roi_pool(features.float(), rois, 7, 1 / 16))


def test_fused_convolution_runs_in_bfloat16_under_autocast(monkeypatch):
    """oneDNN's fused conv + residual + ReLU (inference) gives what F.conv2d gives under
    autocast: bfloat16, the same products, to a few bfloat16 roundings of the output. On a
    CPU where oneDNN has no bfloat16 convolution (AVX2 only, or ONEDNN_MAX_CPU_ISA=AVX2)
    the layer takes F.conv2d instead of failing."""
    fused_calls = []
    monkeypatch.setattr(
        layers, "_onednn_conv", lambda *a, **k: fused_calls.append(1) or onednn_conv(*a, **k)
    )
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 16, 3, padding=1)
    x = torch.randn(1, 16, 12, 12).contiguous(memory_format=torch.channels_last)
    residual = torch.randn(1, 16, 12, 12)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fused = conv_norm_act(conv, None, x, relu=True, residual=residual)
        plain = F.relu(conv(x) + residual.bfloat16())  # a block's shortcut: bf16 there
    assert len(fused_calls) == int(precision.onednn_bf16())
    assert fused.dtype == plain.dtype == torch.bfloat16
    # both round the sum to bfloat16 at different points: a few 2^-8 of the largest value
    atol = 4 * BF16_ROUNDING * float(plain.float().abs().max())
    torch.testing.assert_close(fused.float(), plain.float(), atol=atol, rtol=0)
    with torch.no_grad():
        fp32 = conv_norm_act(conv, None, x, relu=True, residual=residual)
    assert fp32.dtype == torch.float32
    assert float((fp32 - plain.float()).abs().max()) > 100 * FP32_ROUNDING


def test_a_cpu_without_bf16_says_so_in_one_line(monkeypatch):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx512f", "avx2"})
    assert precision.cpu_bf16_units() is None
    note = precision.bf16_note("bf16", "cpu")
    assert note is not None and "\n" not in note
    assert "no bfloat16 instructions" in note and "emulated, slower than fp32" in note
    assert precision.bf16_note("fp32", "cpu") is None
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert precision.cpu_bf16_units() == "AVX-512 BF16"
    assert precision.bf16_note("bf16", "cpu") is None


def test_precision_names_are_checked():
    assert precision.check_precision("bf16") == "bf16"
    with pytest.raises(Exception, match="--precision 'bf61': use fp32 or bf16"):
        precision.check_precision("bf61")
