"""Overlap-tile prediction for images of any size (U-Net paper §2, Fig. 2).

`valid`-padding U-Nets (the paper): the image is mirror-padded by the network's margin and
cut into input tiles whose *valid output* regions tile the image. Tiles are placed at
multiples of 2**depth so every tile sees the same 2x2-pooling grid as the whole image would:
the result equals a whole-image prediction on the mirror-padded image up to float error.

`same`-padding U-Nets (as used today, MONAI / nnU-Net sliding window): overlapping tiles,
each prediction weighted by a Gaussian window (sigma = tile / 8) that trusts tile centres
more than tile borders, summed and normalised by the summed weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seglab.errors import UserError
from seglab.models.segmentation.unet import valid_input_size, valid_margin, valid_output_size
from seglab.ops.windows import mirror_pad
from seglab.progress import progress as progress_display


def predict_tiled(
    model: nn.Module,
    image: Tensor,
    tile_size: int = 256,
    overlap: int = 32,
    *,
    batch_size: int = 4,
    progress: bool = False,
) -> Tensor:
    """Class probabilities (C, H, W) of a semantic model for one image of any size.

    Args:
        model: a U-Net (`model.padding` "valid" or "same", `model.depth`) or any semantic model
            with `forward(list of (C, h, w)) -> [{"logits": (K, h, w)}]` (treated as "same").
        image: float (C, H, W) in [0, 1].
        tile_size: side of the input tiles. Valid padding: rounded down to an allowed input
            size, or up to the smallest one whose output spans a 2**depth pooling cell
            (depth 4: 204 px, output 20).
        overlap: pixels shared by neighbouring tiles (same padding only; valid tiles abut).
        batch_size: tiles per forward pass.
        progress: show a progress bar over the tile batches.

    Returns:
        float32 (C, H, W) probabilities (softmax over classes), on the CPU.
    """
    if image.dim() != 3:
        raise UserError(f"predict_tiled: image must be (C, H, W), got shape {tuple(image.shape)}")
    if tile_size < 1 or not 0 <= overlap < tile_size:
        raise UserError(
            f"predict_tiled: need tile_size >= 1 and 0 <= overlap < tile_size, "
            f"got tile_size={tile_size}, overlap={overlap}"
        )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if getattr(model, "padding", "same") == "valid":
                logits = _valid_logits(model, image, tile_size, batch_size, progress)
                return logits.softmax(dim=0)
            return _predict_same(model, image, tile_size, overlap, batch_size, progress)
    finally:
        model.train(was_training)


def tiled_logits(
    model: nn.Module,
    image: Tensor,
    tile_size: int = 256,
    *,
    batch_size: int = 4,
    progress: bool = False,
) -> Tensor:
    """Logits (C, H, W) of a `valid`-padding U-Net for a whole image of any size.

    The same tiles as `predict_tiled` (whose result is their softmax over classes): each
    output pixel comes from exactly one tile, so the stitched logits are the model's own,
    which a loss can be taken of. Float32 on the CPU; the model is run in eval mode.
    """
    if getattr(model, "padding", "same") != "valid":
        raise ValueError("tiled_logits: for valid-padding U-Nets (same padding averages tiles)")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _valid_logits(model, image, tile_size, batch_size, progress)
    finally:
        model.train(was_training)


def _valid_logits(model, image: Tensor, tile_size: int, batch_size: int, progress: bool):
    depth, margin = model.depth, valid_margin(model.depth)
    tile_in = _allowed_tile_size(tile_size, depth)
    tile_out = valid_output_size(tile_in, depth)
    stride = tile_out - tile_out % 2**depth  # keeps every tile on the whole image's pooling grid
    height, width = image.shape[-2:]
    starts_y, starts_x = range(0, height, stride), range(0, width, stride)
    padded = mirror_pad(
        image,
        top=margin,
        left=margin,
        bottom=starts_y[-1] + tile_in - margin - height,
        right=starts_x[-1] + tile_in - margin - width,
    )
    corners = [(y, x) for y in starts_y for x in starts_x]
    logits = None
    for batch_corners, batch_logits in _run_tiles(
        model, padded, corners, (tile_in, tile_in), batch_size, progress
    ):
        if logits is None:
            size = (starts_y[-1] + tile_out, starts_x[-1] + tile_out)
            logits = torch.zeros(batch_logits.shape[1], *size)
        for (y, x), tile in zip(batch_corners, batch_logits, strict=True):
            logits[:, y : y + tile_out, x : x + tile_out] = tile  # the tiles abut
    return logits[:, :height, :width]


def _predict_same(model, image, tile_size, overlap, batch_size, progress):
    height, width = image.shape[-2:]
    tile_hw = (min(tile_size, height), min(tile_size, width))
    starts_y = _tile_starts(height, tile_hw[0], tile_size - overlap)
    starts_x = _tile_starts(width, tile_hw[1], tile_size - overlap)
    window = gaussian_window(*tile_hw)
    corners = [(y, x) for y in starts_y for x in starts_x]
    summed, weights = None, torch.zeros(height, width)
    for batch_corners, batch_logits in _run_tiles(
        model, image, corners, tile_hw, batch_size, progress
    ):
        batch_probabilities = batch_logits.softmax(dim=1)
        if summed is None:
            summed = torch.zeros(batch_probabilities.shape[1], height, width)
        for (y, x), tile in zip(batch_corners, batch_probabilities, strict=True):
            summed[:, y : y + tile_hw[0], x : x + tile_hw[1]] += tile * window
            weights[y : y + tile_hw[0], x : x + tile_hw[1]] += window
    return summed / weights


def _run_tiles(model, image, corners, tile_hw, batch_size, progress):
    """Yield (corners, float32 logits (B, C, h', w') on the CPU) batch by batch."""
    device = next(model.parameters(), torch.empty(0)).device
    batches = [corners[i : i + batch_size] for i in range(0, len(corners), batch_size)]
    for batch_corners in progress_display(batches, desc="tiles", unit="batch", enabled=progress):
        tiles = [
            image[:, y : y + tile_hw[0], x : x + tile_hw[1]].to(device) for y, x in batch_corners
        ]
        logits = torch.stack([output["logits"] for output in model(tiles)])
        yield batch_corners, logits.float().cpu()


def _tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins covering [0, length): every `stride`, the last one flush with the end."""
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def _allowed_tile_size(tile_size: int, depth: int) -> int:
    """The largest allowed valid input side <= tile_size whose output spans at least one
    2**depth pooling cell (tiles step by whole cells, to stay on the image's pooling grid),
    else the smallest such side: a smaller tile cannot step at all."""
    smallest = valid_input_size(2**depth, depth)
    for size in range(tile_size, smallest, -1):
        if valid_output_size(size, depth):
            return size
    return smallest


def resize_probabilities(probabilities: Tensor, size_hw) -> Tensor:
    """(C, h, w) class probabilities bilinearly resized to `size_hw` (unchanged if equal)."""
    if tuple(probabilities.shape[-2:]) == tuple(size_hw):
        return probabilities
    return torch.nn.functional.interpolate(
        probabilities[None], size=tuple(size_hw), mode="bilinear", align_corners=False
    )[0]


def gaussian_window(height: int, width: int, *, sigma_scale: float = 1 / 8) -> Tensor:
    """(H, W) weights: a Gaussian centred on the tile, sigma = side * sigma_scale (nnU-Net).

    Normalised to a maximum of 1 and clamped away from 0 so that border pixels covered by a
    single tile still get a defined average.
    """
    axes = []
    for side in (height, width):
        coordinates = torch.arange(side, dtype=torch.float32) - (side - 1) / 2
        sigma = max(side * sigma_scale, 1e-6)
        axes.append(torch.exp(-(coordinates**2) / (2 * sigma**2)))
    window = axes[0][:, None] * axes[1][None, :]
    return (window / window.max()).clamp(min=1e-3)
