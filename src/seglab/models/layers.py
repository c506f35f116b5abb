"""Layers every model builds from: the normalisation named by a string, and its conv block.

One vocabulary for every model's `norm` argument (CNN, U-Net, ResNet, FPN, detection heads):

- `none`: no normalisation (the convolution keeps its bias): the textbook CNN, the U-Net
  paper, the FPN paper and torchvision's v1 detectors;
- `bn`: BatchNorm, batch statistics in training (Ioffe & Szegedy 2015);
- `frozen_bn`: BatchNorm with fixed statistics and affine terms (a pretrained backbone
  fine-tuned at small batch sizes, as torchvision and detectron2 do);
- `gn`: GroupNorm, independent of the batch size (Wu & He 2018).

The spellings of earlier versions (`batch`, `group`) are refused with the new name.

`conv_norm_act` is how the detectors' convolutions run (ResNet, FPN, RPN and mask heads):
a norm that is a fixed affine map (FrozenBatchNorm2d, BatchNorm2d in eval mode) is folded
into the convolution's weight and bias on each call (nothing stored, parameters and their
names unchanged), and, where no gradient is needed, oneDNN applies the residual sum and
the ReLU inside the convolution; elsewhere the same arithmetic runs as separate steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seglab.errors import UserError, did_you_mean
from seglab.ops.precision import autocast_dtype, onednn_bf16
from seglab.ops.tracing import tracing

NORMS = ("none", "bn", "frozen_bn", "gn")
_RENAMED = {"batch": "bn", "group": "gn", "batchnorm": "bn", "groupnorm": "gn"}


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (all buffers).

    `y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`, computed as one
    scale and shift in the same order as torchvision's `FrozenBatchNorm2d` (bit-equal).
    torchvision's default eps is 1e-5; its pretrained v1 detection checkpoints were trained
    with eps = 0 (`overwrite_eps(model, 0.0)`): pass that when converting them.

    Args:
        num_features: channels C of the (N, C, H, W) input.
        eps: added to the variance.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A BatchNorm2d checkpoint also counts its batches; a frozen norm has no use for it.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def scale_and_shift(self) -> tuple[Tensor, Tensor]:
        """(C,) scale and shift of `y = x * scale + shift` (what `fold_norm_into_conv` folds)."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.scale_and_shift()
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def check_norm(norm: str | None, *, owner: str, allowed: tuple[str, ...] = NORMS) -> str:
    """`norm` in the shared vocabulary (None means `none`); UserError naming the new
    spelling for an old one, or the allowed names for an unknown one."""
    norm = "none" if norm is None else norm
    if norm in _RENAMED and _RENAMED[norm] in allowed:
        raise UserError(f"{owner}: norm {norm!r} is now spelled {_RENAMED[norm]!r}")
    if norm not in allowed:
        hint = did_you_mean(norm, allowed)
        raise UserError(f"{owner}: norm {norm!r} is not one of {', '.join(allowed)}{hint}")
    return norm


def group_norm_groups(channels: int) -> int:
    """32 groups (Wu & He 2018, as detectron2 and torchvision), fewer for narrow layers:
    the largest divisor of `channels` that is at most 32 and leaves 2 channels per group."""
    limit = max(1, min(32, channels // 2))
    return next(groups for groups in range(limit, 0, -1) if channels % groups == 0)


def norm_layer(norm: str | None, channels: int) -> nn.Module:
    """The normalisation `norm` (a name in NORMS, already checked) over `channels`."""
    if norm == "frozen_bn":
        return FrozenBatchNorm2d(channels)
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "gn":
        return nn.GroupNorm(group_norm_groups(channels), channels)
    if norm in (None, "none"):
        return nn.Identity()
    raise ValueError(f"norm_layer: {norm!r} is not one of {', '.join(NORMS)}")


def conv_norm(
    in_channels: int, out_channels: int, kernel_size: int, *, norm: str | None, padding: int
) -> list[nn.Module]:
    """[conv, norm] (the norm an Identity for `none`, so that parameter names do not depend
    on it); the conv has a bias only without a norm, whose shift would replace it."""
    bias = norm in (None, "none")
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
    return [conv, norm_layer(norm, out_channels)]


def fold_norm_into_conv(
    conv: nn.Conv2d, norm: nn.Module | None
) -> tuple[Tensor, Tensor | None] | None:
    """(weight, bias) of one convolution equal to `norm(conv(x))`, or None when `norm` is not
    a fixed affine map (BatchNorm2d in training, GroupNorm).

    A frozen norm is `y * scale + shift` per output channel, so it moves into the conv:
    `weight * scale` and `bias * scale + shift` (a bias-free conv gets `shift`).
    """
    affine = _fixed_affine(norm)
    if affine is None:
        return None
    scale, shift = affine
    if scale is None:
        return conv.weight, conv.bias
    return conv.weight * scale.reshape(-1, 1, 1, 1), _folded_bias(conv, scale, shift)


def _fixed_affine(norm: nn.Module | None) -> tuple[Tensor | None, Tensor | None] | None:
    """(C,) scale and shift of a norm that is `y * scale + shift` (FrozenBatchNorm2d,
    BatchNorm2d in eval mode); (None, None) for no norm; None for any other norm."""
    if norm is None or isinstance(norm, nn.Identity):
        return None, None
    if isinstance(norm, FrozenBatchNorm2d):
        return norm.scale_and_shift()
    if isinstance(norm, nn.BatchNorm2d) and not norm.training and norm.running_var is not None:
        scale = (norm.running_var + norm.eps).rsqrt()
        shift = -norm.running_mean * scale
        if norm.weight is not None:
            scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
        return scale, shift
    return None


def _folded_bias(conv: nn.Conv2d, scale: Tensor, shift: Tensor) -> Tensor:
    return shift if conv.bias is None else conv.bias * scale + shift


def conv_norm_act(
    conv: nn.Conv2d,
    norm: nn.Module | None,
    x: Tensor,
    *,
    relu: bool,
    residual: Tensor | None = None,
) -> Tensor:
    """`relu(norm(conv(x)) + residual)` (ReLU and residual optional), the norm folded.

    Args:
        conv: a zero-padded Conv2d; norm: its norm (None or Identity for none).
        x: (N, C_in, H, W), any memory format (channels_last is the fast one on CPUs).
        residual: (N, C_out, H', W') added before the ReLU (a ResNet block's shortcut).

    Under ONNX export or torch.compile the modules run one by one, as written.
    """
    affine = None if tracing() else _fixed_affine(norm)
    if affine is None or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        out = conv(x) if norm is None else norm(conv(x))
    elif _needs_graph(x, conv, affine[0]):
        out = _ScaledWeightConv2d.apply(
            x, conv.weight, affine[0], _folded_bias(conv, *affine),
            conv.stride, conv.padding, conv.dilation, conv.groups,
        )  # fmt: skip
    else:
        weight, bias = fold_norm_into_conv(conv, norm)
        if _fusable(x, weight):
            return _onednn_conv(conv, x, weight, bias, relu=relu, residual=residual)
        out = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    if residual is not None:  # in the convolution's dtype, as oneDNN's fused sum
        out = out + residual.to(out.dtype)
    return F.relu(out) if relu else out


def _needs_graph(x: Tensor, conv: nn.Conv2d, scale: Tensor | None) -> bool:
    """Whether autograd records a convolution with a norm folded into its weight (outside
    autocast, which casts the weight itself)."""
    return (
        scale is not None
        and torch.is_grad_enabled()
        and (x.requires_grad or conv.weight.requires_grad or scale.requires_grad)
        and autocast_dtype("cpu") is None
    )


class _ScaledWeightConv2d(torch.autograd.Function):
    """conv2d(x, weight * scale, bias), keeping x, the weight and the (C_out,) scale for the
    backward, which multiplies the weight by the scale again.

    Autograd would keep the folded weight itself from the forward to the backward: a copy
    of every trainable convolution's weight (ResNet-50's layer2-4: 85 MiB) that an
    unfolded convolution does not need (it keeps a reference to its parameter). The
    gradients are `F.conv2d`'s on `weight * scale`, bit for bit (tests/models/test_layers.py).
    """

    @staticmethod
    def forward(ctx, x, weight, scale, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight, scale)
        ctx.arguments = (stride, padding, dilation, groups)
        ctx.bias_size = None if bias is None else list(bias.shape)
        folded = weight * scale.reshape(-1, 1, 1, 1)  # (C_out,) -> (C_out, 1, 1, 1)
        return F.conv2d(x, folded, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight, scale = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.arguments
        scale = scale.reshape(-1, 1, 1, 1)
        needs_x, needs_weight, needs_scale, needs_bias = ctx.needs_input_grad[:4]
        grad_x, grad_folded, grad_bias = torch.ops.aten.convolution_backward(
            grad, x, weight * scale, ctx.bias_size, stride, padding, dilation, False,
            [0] * len(padding), groups, [needs_x, needs_weight or needs_scale, needs_bias],
        )  # fmt: skip
        grad_weight = grad_folded * scale if needs_weight else None
        grad_scale = (grad_folded * weight).sum((1, 2, 3)) if needs_scale else None
        return grad_x, grad_weight, grad_scale, grad_bias, None, None, None, None


def channels_last(x: Tensor) -> Tensor:
    """(N, C, H, W) laid out channels-last (oneDNN's convolutions need no reordering then);
    unchanged under ONNX export and torch.compile, which choose layouts themselves."""
    return x if tracing() else x.contiguous(memory_format=torch.channels_last)


def _fusable(x: Tensor, weight: Tensor) -> bool:
    """oneDNN's fused convolution: float32 weights on a CPU (the input float32, or bfloat16
    under bfloat16 autocast where oneDNN has a bfloat16 convolution), no autograd graph to
    record."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    dtype = autocast_dtype("cpu") or torch.float32
    return (
        not needs_grad
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, dtype)
        and (dtype != torch.bfloat16 or onednn_bf16())
        and weight.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
    )


def _onednn_conv(
    conv: nn.Conv2d,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    *,
    relu: bool,
    residual: Tensor | None,
) -> Tensor:
    """The convolution with its residual sum and ReLU as oneDNN post-ops: one pass over the
    output instead of three (the kernel torch.compile's CPU backend emits for this pattern).
    Under CPU autocast it runs in autocast's dtype, as `F.conv2d` would (autocast does not
    see this operator)."""
    dtype = autocast_dtype("cpu") or torch.float32
    x, weight = x.to(dtype), weight.to(dtype).contiguous(memory_format=torch.channels_last)
    bias = None if bias is None else bias.to(dtype)
    residual = None if residual is None else residual.to(dtype)
    arguments = (weight, bias, conv.padding, conv.stride, conv.dilation, conv.groups)
    if residual is None:
        activation = "relu" if relu else "none"
        return torch.ops.mkldnn._convolution_pointwise(x, *arguments, activation, [], "")
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, residual, *arguments, "add", None, "relu" if relu else None, [], None
    )
