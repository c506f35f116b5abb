"""What every model does with its input images: normalisation constants and batching.

Images enter the models as float (C, H, W) in [0, 1]; the models normalise them with a
mean and std (ImageNet's by default, as torchvision's models do).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seglab.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def stack_images(images: list[Tensor] | Tensor, model_name: str) -> Tensor:
    """A list of (C, H, W) images of one size, or a (B, C, H, W) / (C, H, W) tensor -> (B, C, H, W).

    Detectors batch images of different sizes themselves (padding); these models cannot.
    """
    if isinstance(images, Tensor):
        return images if images.dim() == 4 else images.unsqueeze(0)
    sizes = {tuple(image.shape) for image in images}
    if len(sizes) != 1:
        raise UserError(
            f"{model_name}: images of one batch must share one size, got {sorted(sizes)}"
        )
    return torch.stack([image.as_subclass(Tensor) for image in images])


class Normalize(nn.Module):
    """(N, C, H, W) in [0, 1] -> (x - mean) / std, per channel.

    Defaults: ImageNet's statistics for 3 channels, 0.5 / 0.25 otherwise. The buffers are
    not saved in checkpoints (they are builder arguments, rebuilt by `load_model`).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        model_name: str = "model",
    ) -> None:
        super().__init__()
        if mean is None:
            mean = IMAGENET_MEAN if in_channels == 3 else (0.5,) * in_channels
        if std is None:
            std = IMAGENET_STD if in_channels == 3 else (0.25,) * in_channels
        if len(mean) != in_channels or len(std) != in_channels:
            raise UserError(f"{model_name}: mean and std need {in_channels} values (in_channels)")
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, batch: Tensor) -> Tensor:
        return (batch - self.mean) / self.std
