"""Layers every model builds from: the normalisation named by a string, and its conv block.

One vocabulary for every model's `norm` argument (CNN, U-Net, ResNet, FPN, detection heads):

- `none`: no normalisation (the convolution keeps its bias): the textbook CNN, the U-Net
  paper, the FPN paper and torchvision's v1 detectors;
- `bn`: BatchNorm, batch statistics in training (Ioffe & Szegedy 2015);
- `frozen_bn`: BatchNorm with fixed statistics and affine terms (a pretrained backbone
  fine-tuned at small batch sizes, as torchvision and detectron2 do);
- `gn`: GroupNorm, independent of the batch size (Wu & He 2018).

The spellings of earlier versions (`batch`, `group`) are refused with the new name.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seglab.errors import UserError

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

    def forward(self, x: Tensor) -> Tensor:
        scale = (
            self.weight.reshape(1, -1, 1, 1)
            * (self.running_var.reshape(1, -1, 1, 1) + self.eps).rsqrt()
        )
        shift = self.bias.reshape(1, -1, 1, 1) - self.running_mean.reshape(1, -1, 1, 1) * scale
        return x * scale + shift

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def check_norm(norm: str | None, *, owner: str, allowed: tuple[str, ...] = NORMS) -> str:
    """`norm` in the shared vocabulary (None means `none`); UserError naming the new
    spelling for an old one, or the allowed names for an unknown one."""
    norm = "none" if norm is None else norm
    if norm in _RENAMED and _RENAMED[norm] in allowed:
        raise UserError(f"{owner}: norm {norm!r} is now spelled {_RENAMED[norm]!r}")
    if norm not in allowed:
        raise UserError(f"{owner}: norm {norm!r} is not one of {', '.join(allowed)}")
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
