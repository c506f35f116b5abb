"""The U-Net paper's elastic deformation (§3.1), applied identically to image and targets.

"We generate smooth deformations using random displacement vectors on a coarse 3 by 3 grid.
The displacements are sampled from a Gaussian distribution with 10 pixels standard
deviation. Per-pixel displacements are then computed using bicubic interpolation."

One displacement field warps every tensor of a sample: the image with bilinear
interpolation, every `tv_tensors.Mask` (class map, instance ids, the float weight map) with
nearest neighbour, so label maps stay valid and each output pixel's class and weight come
from the same source pixel. Outside the image the warp mirrors it, as the paper's
overlap-tile strategy does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2


def random_displacement(
    height: int,
    width: int,
    *,
    sigma: float = 10.0,
    grid_size: int = 3,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A smooth random displacement field (2, H, W), float32 pixels, (dy, dx) per pixel.

    Coarse `grid_size` x `grid_size` vectors ~ N(0, sigma^2) at evenly spaced points (the
    corners included), upsampled bicubically to every pixel.
    """
    coarse = torch.randn(1, 2, grid_size, grid_size, generator=generator) * sigma
    field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
    return field[0]


def warp(tensor: Tensor, displacement: Tensor, *, mode: str = "bilinear") -> Tensor:
    """Sample `tensor` (..., H, W) at (y + dy, x + dx); same shape and dtype as the input.

    Args:
        tensor: any leading dimensions, then H, W; integer tensors need mode="nearest".
        displacement: (2, H, W) float pixels from `random_displacement`.
        mode: "bilinear", "bicubic" or "nearest" (label maps).
    """
    height, width = tensor.shape[-2:]
    rows = torch.arange(height, dtype=torch.float32).view(-1, 1) + displacement[0]
    columns = torch.arange(width, dtype=torch.float32).view(1, -1) + displacement[1]
    # grid_sample wants (x, y) in [-1, 1], -1 and 1 on the centres of the border pixels
    grid = torch.stack(
        [2 * columns / max(width - 1, 1) - 1, 2 * rows / max(height - 1, 1) - 1], dim=-1
    )  # (H, W, 2)
    leading = tensor.shape[:-2]
    planes = tensor.reshape(1, -1, height, width).float()  # (..., H, W) -> (1, P, H, W)
    warped = F.grid_sample(
        planes, grid[None], mode=mode, padding_mode="reflection", align_corners=True
    )
    if not tensor.dtype.is_floating_point:
        warped = warped.round()
    return warped.reshape(*leading, height, width).to(tensor.dtype)


class ElasticDeformation(v2.Transform):
    """torchvision v2 transform: one random elastic deformation per sample (paper §3.1).

    Images are warped bilinearly, masks (class maps, instance ids, weight maps) with nearest
    neighbour. Boxes cannot follow a non-rigid warp: refused.
    """

    def __init__(self, *, sigma: float = 10.0, grid_size: int = 3) -> None:
        super().__init__()
        self.sigma, self.grid_size = sigma, grid_size

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        if any(isinstance(item, tv_tensors.BoundingBoxes) for item in flat_inputs):
            raise TypeError("ElasticDeformation warps images and masks only, not boxes")

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.functional.get_size(
            next(item for item in flat_inputs if isinstance(item, Tensor))
        )
        field = random_displacement(height, width, sigma=self.sigma, grid_size=self.grid_size)
        return {"displacement": field}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, Tensor):
            return inpt
        mode = "nearest" if isinstance(inpt, tv_tensors.Mask) else "bilinear"
        warped = warp(inpt.as_subclass(Tensor), params["displacement"], mode=mode)
        return (
            tv_tensors.wrap(warped, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else warped
        )
