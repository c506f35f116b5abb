"""The convolutional neural network (CNN) classifier, as textbooks present it.

A CNN has four kinds of parts, and each is one piece of this file:

1. convolutional layers that apply learned filters (edges, textures, then more complex
   patterns) while keeping the spatial relations between pixels: `ConvBlock.conv`;
2. pooling layers that downsample the feature maps, cutting computation and parameters:
   `ConvBlock.pool` (2x2 max-pooling) and the global pooling (max or average) before the head;
3. activation functions that make the model non-linear: `ConvBlock.activation`;
4. fully connected layers that make the prediction from the learned features:
   `ClassifierHead`.

A normalisation layer (BatchNorm or GroupNorm) sits between convolution and activation, as in
every modern CNN; `norm="none"` gives the plain textbook block. Images enter as float
(C, H, W) in [0, 1]; the mean/std normalisation lives in the model (docs/conventions.md).
Labels are 0..K-1 (no background class) and the loss is cross-entropy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seglab.errors import UserError
from seglab.models.inputs import Normalize, stack_images
from seglab.models.layers import check_norm, conv_norm
from seglab.ops.precision import full_precision

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}
NORMS = ("none", "bn", "gn")


class ConvBlock(nn.Sequential):
    """3x3 convolution -> norm -> activation -> 2x2 max-pooling (halves H and W)."""

    def __init__(self, in_channels: int, out_channels: int, *, norm: str, activation: str):
        super().__init__()
        self.conv, self.norm = conv_norm(in_channels, out_channels, 3, norm=norm, padding=1)
        self.activation = ACTIVATIONS[activation]()
        self.pool = nn.MaxPool2d(2)


class ClassifierHead(nn.Sequential):
    """Global pooling, then the fully connected layers (with dropout) -> K logits."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        hidden: int,
        dropout: float,
        activation: str,
        global_pool: str,
    ):
        super().__init__()
        # (N, C, H, W) -> (N, C, 1, 1), for any input size. Max keeps the strongest response
        # of each filter wherever the object is; average dilutes a small object.
        self.pool = nn.AdaptiveMaxPool2d(1) if global_pool == "max" else nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()  # (N, C, 1, 1) -> (N, C)
        if hidden > 0:
            self.dropout_hidden = nn.Dropout(dropout)
            self.hidden = nn.Linear(in_features, hidden)
            self.activation = ACTIVATIONS[activation]()
            in_features = hidden
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)


class CNNClassifier(nn.Module):
    """Conv blocks (features), then a fully connected head (classes).

    Args:
        num_classes: K, the number of classes (no background).
        in_channels: 3 for RGB, 1 for grayscale.
        widths: output channels of each conv block; the depth is `len(widths)` and an input
            of side S leaves the last block at side S / 2**depth.
        activation: relu, gelu, silu or leaky_relu.
        norm: bn, gn or none (`seglab.models.layers`).
        hidden: width of the hidden fully connected layer; 0 for a single linear layer.
        dropout: dropout probability before each fully connected layer (training only).
        global_pool: max or avg, the pooling of the last feature map to one vector.
        mean, std: per-channel normalisation; ImageNet's for RGB, 0.5/0.25 otherwise.
    """

    task = "classification"

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 128),
        activation: str = "relu",
        norm: str = "bn",
        hidden: int = 128,
        dropout: float = 0.2,
        global_pool: str = "max",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        _check_arguments(num_classes, widths, activation, norm, global_pool)
        self.in_channels = in_channels
        self.normalize = Normalize(in_channels, mean=mean, std=std, model_name="cnn")
        channels = [in_channels, *(int(width) for width in widths)]
        self.features = nn.Sequential(
            *(
                ConvBlock(c_in, c_out, norm=norm, activation=activation)
                for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
            )
        )
        self.head = ClassifierHead(
            channels[-1],
            num_classes,
            hidden=hidden,
            dropout=dropout,
            activation=activation,
            global_pool=global_pool,
        )

    def forward_logits(self, batch: Tensor) -> Tensor:
        """(N, C_in, H, W) float in [0, 1] -> logits (N, K)."""
        if batch.shape[1] != self.in_channels:
            raise UserError(
                f"cnn: images have {batch.shape[1]} channels but the model takes "
                f"{self.in_channels}; set model.in_channels={batch.shape[1]}"
            )
        features = self.features(self.normalize(batch))  # (N, widths[-1], h, w)
        return full_precision(self.head(features))  # float32: the loss, the probabilities

    def forward(self, images: list[Tensor] | Tensor, targets: list[dict] | None = None):
        """Images (list of (C, H, W) of one size, or (N, C, H, W)) -> [{"logits": (K,)}]."""
        logits = self.forward_logits(stack_images(images, "cnn"))
        return [{"logits": per_image} for per_image in logits]

    def forward_with_losses(self, images, targets: list[dict]):
        """Outputs and `{"loss_cls": cross-entropy}`; targets carry `labels` (0-d, 0..K-1)."""
        logits = self.forward_logits(stack_images(images, "cnn"))
        labels = torch.stack([torch.as_tensor(target["labels"]) for target in targets])
        loss = F.cross_entropy(logits.float(), labels.to(logits.device).long().view(-1))
        return [{"logits": per_image} for per_image in logits], {"loss_cls": loss}


def _check_arguments(num_classes, widths, activation, norm, global_pool) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"cnn: num_classes must be a positive integer, got {num_classes!r}")
    if len(widths) == 0 or any(int(width) < 1 for width in widths):
        raise UserError(f"cnn: widths must be a non-empty list of positive ints, got {widths}")
    if activation not in ACTIVATIONS:
        known = ", ".join(ACTIVATIONS)
        raise UserError(f"cnn: activation={activation!r} is not one of {known}")
    check_norm(norm, owner="cnn", allowed=NORMS)
    if global_pool not in ("max", "avg"):
        raise UserError(f"cnn: global_pool={global_pool!r} is not one of max, avg")


def build_cnn(**kwargs) -> CNNClassifier:
    """`seglab.build_model("cnn", num_classes=K, ...)`: keyword arguments as in `CNNClassifier`."""
    return CNNClassifier(**kwargs)
