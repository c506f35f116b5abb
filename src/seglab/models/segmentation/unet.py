"""U-Net (Ronneberger, Fischer and Brox, MICCAI 2015), as in the paper and as used today.

The network is a contracting path (two 3x3 convolutions + ReLU, then 2x2 max-pooling, the
number of channels doubling at every level), a bottleneck (two 3x3 convolutions at the
lowest resolution, dropout at the end of the contracting path, paper §3), and an expansive
path (a 2x2 up-convolution halving the channels, concatenation with the contracting path's
features of the same level, two 3x3 convolutions). A final 1x1 convolution maps to classes.

Two paddings:
- `valid` (the paper): unpadded convolutions, the output is smaller than the input. With
  `depth` = d poolings the output is the input's centre crop with a margin of
  `6 * 2**d - 4` pixels on every side (92 for the paper's d = 4: 572 -> 388). Every
  2x2 pooling must see an even size (paper §2), so only some input sizes are allowed:
  `valid_output_size` says which, `valid_input_size` finds the smallest one that covers a
  wanted output. In the loss the target is centre-cropped to the output.
- `same` (as used today): padded convolutions; any H, W is accepted: the input is
  mirror-padded inside the model to a multiple of 2**d and the logits cropped back.

Images enter as float (C, H, W) in [0, 1]; the mean/std normalisation lives in the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx.experimental.symbolic_shapes import statically_known_true

from seglab.errors import UserError, did_you_mean
from seglab.models.inputs import Normalize, stack_images
from seglab.models.layers import check_norm, conv_norm
from seglab.models.segmentation.losses import IGNORE_INDEX, segmentation_losses
from seglab.ops.precision import full_precision
from seglab.ops.windows import center_crop


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by [norm and] ReLU: one U-Net "level" (Fig. 1)."""

    def __init__(self, in_channels: int, out_channels: int, *, padding: int, norm: str) -> None:
        super().__init__(
            *conv_norm(in_channels, out_channels, 3, norm=norm, padding=padding),
            nn.ReLU(inplace=True),
            *conv_norm(out_channels, out_channels, 3, norm=norm, padding=padding),
            nn.ReLU(inplace=True),
        )


class ContractingLevel(nn.Module):
    """2x2 max-pooling (stride 2), then a DoubleConv doubling the channels."""

    def __init__(self, in_channels: int, out_channels: int, *, padding: int, norm: str) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.convs = DoubleConv(in_channels, out_channels, padding=padding, norm=norm)

    def forward(self, features: Tensor) -> Tensor:
        return self.convs(self.pool(features))


class ExpansiveLevel(nn.Module):
    """Upsample x2 halving the channels, concatenate the skip, then a DoubleConv.

    `transpose`: the paper's 2x2 up-convolution. `bilinear`: a 1x1 convolution then bilinear
    upsampling (no checkerboard artefacts; the two linear maps commute, so convolving at the
    low resolution gives the same result as after upsampling for a quarter of the cost).
    In `valid` mode the skip is
    larger than the upsampled map and is centre-cropped to it (paper Fig. 1, "copy and crop").
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, padding: int, norm: str, upsampling: str
    ) -> None:
        super().__init__()
        if upsampling == "transpose":
            self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        else:
            self.up = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            )
        self.convs = DoubleConv(2 * out_channels, out_channels, padding=padding, norm=norm)

    def forward(self, features: Tensor, skip: Tensor) -> Tensor:
        upsampled = self.up(features)
        skip = center_crop(skip, upsampled.shape[-2:])
        return self.convs(torch.cat([skip, upsampled], dim=1))  # (N, 2*out, h, w)


def valid_output_size(input_size: int, depth: int = 4) -> int | None:
    """Output side of a `valid` U-Net for an input side, or None if a pooling sees an odd size."""
    size = input_size
    for _ in range(depth):
        size -= 4
        if size <= 0 or size % 2:
            return None
        size //= 2
    size -= 4  # bottleneck
    if size <= 0:
        return None
    for _ in range(depth):
        size = 2 * size - 4
    return size if size > 0 else None


def valid_input_size(min_output_size: int, depth: int = 4) -> int:
    """Smallest allowed `valid` input side whose output side is at least `min_output_size`."""
    size = 1
    while (valid_output_size(size, depth) or 0) < min_output_size:
        size += 1
    return size


def valid_margin(depth: int = 4) -> int:
    """Pixels lost on each side by a `valid` U-Net: (input - output) / 2 = 6 * 2**depth - 4."""
    return 6 * 2**depth - 4


class UNet(nn.Module):
    """U-Net for semantic segmentation: `forward(images) -> [{"logits": (C, H', W')}]`.

    Args:
        in_channels: image channels (1 for the paper's grey-scale microscopy images).
        num_classes: outputs, background included (the paper has 2).
        base_channels: channels of the first level (64); level l has base * 2**l.
        depth: number of 2x2 poolings (4 in the paper).
        padding: "valid" (paper: output is a centre crop) or "same" (output = input size).
        norm: "none" (paper), "bn" or "gn" after each conv (`seglab.models.layers`).
        upsampling: "transpose" (paper's 2x2 up-convolution) or "bilinear" (+ 1x1 conv).
        dropout: dropout probability at the end of the contracting path (paper §3).
        mean, std: per-channel normalisation of the [0, 1] input (default: ImageNet for 3
            channels, 0.5/0.25 otherwise).
        loss: "ce" (pixel-wise cross-entropy, weighted by `weight_map` when the targets carry
            one: paper eq. 1), "dice" or "ce+dice".
        init: "he" (paper §3: every convolution's weights drawn from a Gaussian with std
            sqrt(2 / N), N = k * k * C_in incoming nodes, biases zero) or "default"
            (PyTorch's uniform initialisation, about 0.41x that std).
    """

    task = "semantic"

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 2,
        base_channels: int = 64,
        depth: int = 4,
        padding: str = "same",
        norm: str = "bn",
        upsampling: str = "transpose",
        dropout: float = 0.0,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        loss: str = "ce",
        init: str = "default",
    ) -> None:
        super().__init__()
        _check_choice("padding", padding, ("valid", "same"))
        norm = check_norm(norm, owner="unet", allowed=("none", "bn", "gn"))
        _check_choice("upsampling", upsampling, ("transpose", "bilinear"))
        _check_choice("loss", loss, ("ce", "dice", "ce+dice"))
        _check_choice("init", init, ("he", "default"))
        if depth < 1 or base_channels < 1 or num_classes < 2:
            raise UserError("unet: needs depth >= 1, base_channels >= 1 and num_classes >= 2")
        self.padding, self.depth, self.num_classes, self.loss = padding, depth, num_classes, loss
        conv_padding = 1 if padding == "same" else 0
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.normalize = Normalize(in_channels, mean=mean, std=std, model_name="unet")

        self.input_level = DoubleConv(in_channels, widths[0], padding=conv_padding, norm=norm)
        self.contracting = nn.ModuleList(
            ContractingLevel(widths[level], widths[level + 1], padding=conv_padding, norm=norm)
            for level in range(depth - 1)
        )
        self.bottleneck = ContractingLevel(
            widths[depth - 1], widths[depth], padding=conv_padding, norm=norm
        )
        self.bottleneck_dropout = nn.Dropout(dropout)
        self.expansive = nn.ModuleList(
            ExpansiveLevel(
                widths[level + 1],
                widths[level],
                padding=conv_padding,
                norm=norm,
                upsampling=upsampling,
            )
            for level in reversed(range(depth))
        )
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)
        if init == "he":
            self.apply(_he_init)

    def forward_logits(self, batch: Tensor) -> Tensor:
        """(N, C_in, H, W) in [0, 1] -> logits (N, num_classes, H', W').

        H' = H for `same`; for `valid` H' = valid_output_size(H) and the logits cover the
        input pixels [m, m + H') with m = valid_margin(depth): the receptive field of output
        pixel i is centred on input pixel i + m, to within the pooling grid's phase
        (2**(depth - 1) pixels).
        """
        batch = self.normalize(batch)
        if self.padding == "same":
            batch, crop = _pad_to_multiple(batch, 2**self.depth)
        elif not torch.compiler.is_exporting():  # an exported graph takes allowed sides only
            self._check_valid_size(batch.shape[-2:])
        features_for_skip = [self.input_level(batch)]  # full resolution, base channels
        for level in self.contracting:
            features_for_skip.append(level(features_for_skip[-1]))  # 1/2**l, base*2**l
        features = self.bottleneck_dropout(self.bottleneck(features_for_skip[-1]))
        for level, skip in zip(self.expansive, reversed(features_for_skip), strict=True):
            features = level(features, skip)
        logits = full_precision(self.classifier(features))  # float32: losses, probabilities
        if self.padding == "same":
            logits = logits[..., crop[0], crop[1]]
        return logits

    def forward(self, images: list[Tensor] | Tensor, targets: list[dict] | None = None):
        """Images (list of (C, H, W), same size, or an (N, C, H, W) tensor) -> [{"logits"}]."""
        logits = self.forward_logits(stack_images(images, "unet"))
        return [{"logits": per_image} for per_image in logits]

    def forward_with_losses(self, images, targets: list[dict]):
        """Outputs and a dict of losses (`losses`)."""
        logits = self.forward_logits(stack_images(images, "unet"))
        return [{"logits": per_image} for per_image in logits], self.losses(logits, targets)

    def losses(self, logits: Tensor, targets: list[dict]) -> dict[str, Tensor]:
        """The losses of logits (N, C, H', W') against targets that carry `semantic_mask`
        (H, W) int64 (255 ignored) and, optionally, `weight_map` (H, W) float. For `valid`
        padding both are centre-cropped to the logits (H' <= H). Evaluation takes them of
        the overlap-tile logits of whole images too."""
        masks = torch.stack([target["semantic_mask"] for target in targets]).long()
        weight_maps = None
        if all("weight_map" in target for target in targets):
            weight_maps = torch.stack([target["weight_map"] for target in targets]).float()
            weight_maps = center_crop(weight_maps, logits.shape[-2:])
        masks = center_crop(masks.to(logits.device), logits.shape[-2:])
        self._check_class_indices(masks)
        if weight_maps is not None:
            weight_maps = weight_maps.to(logits.device)
        return segmentation_losses(logits, masks, weight_maps, kind=self.loss)

    def _check_class_indices(self, masks: Tensor) -> None:
        labelled = masks[masks != IGNORE_INDEX]
        if labelled.numel() and int(labelled.max()) >= self.num_classes:
            raise UserError(
                f"unet: semantic_mask has class index {int(labelled.max())} but the model has "
                f"num_classes={self.num_classes}; set model.num_classes (background included)"
            )

    def _check_valid_size(self, size_hw) -> None:
        for side in (int(side) for side in size_hw):
            if valid_output_size(side, self.depth) is None:
                allowed = _allowed_valid_sides_near(side, self.depth)
                raise UserError(
                    f"unet (padding=valid, depth={self.depth}): input side {side} makes a 2x2 "
                    f"pooling see an odd size (paper §2); use an allowed side such as "
                    f"{' or '.join(map(str, allowed))}, or padding=same"
                )


def _he_init(module: nn.Module) -> None:
    """Paper §3: std sqrt(2 / N), N the incoming nodes of one neuron (fan-in). For an
    up-convolution a neuron's inputs are C_in * 1 (one input pixel per kernel tap), which
    PyTorch's fan-in of a ConvTranspose2d weight (C_in, C_out, k, k) would count as C_out * k^2."""
    if isinstance(module, nn.ConvTranspose2d):
        std = (2.0 / module.in_channels) ** 0.5
        nn.init.normal_(module.weight, std=std)
    elif isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
    else:
        return
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def _allowed_valid_sides_near(side: int, depth: int) -> list[int]:
    below = [size for size in range(side, 0, -1) if valid_output_size(size, depth)][:1]
    above = valid_input_size((valid_output_size(below[0], depth) if below else 0) + 1, depth)
    return below + [above]


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        hint = did_you_mean(str(value), choices)
        raise UserError(f"unet: {name}={value!r} is not one of {', '.join(choices)}{hint}")


def _pad_to_multiple(batch: Tensor, multiple: int) -> tuple[Tensor, tuple[slice, slice]]:
    """Mirror-pad H and W up to a multiple of `multiple`; return the crop that undoes it."""
    height, width = batch.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    # statically_known_true: under ONNX export the size is symbolic and the graph always pads
    if statically_known_true(pad_h == 0) and statically_known_true(pad_w == 0):
        return batch, (slice(None), slice(None))
    top, left = pad_h // 2, pad_w // 2
    padding = (left, pad_w - left, top, pad_h - top)
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    padded = F.pad(batch, padding, mode=mode)
    return padded, (slice(top, top + height), slice(left, left + width))


def build_unet(**kwargs) -> UNet:
    """`seglab.build_model("unet", ...)`: keyword arguments as in `UNet`."""
    return UNet(**kwargs)
