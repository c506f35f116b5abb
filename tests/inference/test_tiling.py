"""Overlap-tile prediction: exact for valid U-Nets, Gaussian-blended for same U-Nets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import seglab
from seglab.errors import UserError
from seglab.inference.tiling import gaussian_window, predict_tiled
from seglab.models.segmentation.unet import UNet, valid_margin, valid_output_size


def whole_image_prediction(model: UNet, image: torch.Tensor) -> torch.Tensor:
    """One forward pass on the image mirror-padded by the margin (plus up to an allowed size)."""
    margin = valid_margin(model.depth)
    height, width = image.shape[-2:]
    extra = [
        next(e for e in range(64) if valid_output_size(side + 2 * margin + e, model.depth))
        for side in (height, width)
    ]
    padded = np.pad(
        image.numpy(),
        ((0, 0), (margin, margin + extra[0]), (margin, margin + extra[1])),
        mode="reflect",
    )
    with torch.no_grad():
        logits = model.forward_logits(torch.from_numpy(padded)[None])[0]
    return logits.softmax(dim=0)[:, :height, :width]


class TileSizes(nn.Module):
    """Wraps a U-Net and records the side of every tile it is given."""

    def __init__(self, unet: UNet):
        super().__init__()
        self.unet, self.padding, self.depth = unet, unet.padding, unet.depth
        self.sides: set[int] = set()

    def forward(self, tiles):
        self.sides |= {side for tile in tiles for side in tile.shape[-2:]}
        return self.unet(tiles)


@pytest.mark.parametrize("tile_size", [132, 188])
def test_valid_tile_too_small_for_the_depth_uses_the_smallest_working_tile(tile_size):
    """Depth 4: 132 px is no allowed input; 188 px is, but its 4 px output is smaller than
    one 16 px pooling cell, so tiles could not step on the pooling grid (the stride was 0:
    `range() arg 3 must not be zero`). The smallest working tile is 204 px (output 20)."""
    torch.manual_seed(0)
    unet = UNet(in_channels=3, base_channels=8, depth=4, padding="valid", norm="none")
    model = TileSizes(unet.double().eval())
    image = torch.rand(3, 30, 42, dtype=torch.double)
    tiled = predict_tiled(model, image, tile_size=tile_size, batch_size=8)
    assert model.sides == {204} and valid_output_size(204, 4) == 20
    expected = whole_image_prediction(unet, image).float()
    torch.testing.assert_close(tiled, expected, atol=1e-7, rtol=0)


@pytest.mark.slow
def test_valid_tile_too_small_on_the_reported_image():
    """The case of the report: depth 4, base 8, tile_size=132, a 300 x 420 image (11 s on
    one core: 19 x 27 tiles of 204 px; the test above covers the same claim in a second)."""
    unet = UNet(in_channels=3, base_channels=8, depth=4, padding="valid", norm="none")
    probabilities = predict_tiled(unet.eval(), torch.rand(3, 300, 420), tile_size=132)
    assert probabilities.shape == (2, 300, 420)
    torch.testing.assert_close(probabilities.sum(0), torch.ones(300, 420))


@pytest.mark.parametrize("size_hw", [(50, 70), (36, 29)])
def test_valid_unet_tiles_equal_whole_image_prediction(size_hw):
    """Depth 3 so that the tile stride must respect the 2**3 pooling grid (output 36 -> 32)."""
    torch.manual_seed(0)
    model = UNet(in_channels=1, base_channels=4, depth=3, padding="valid", norm="none")
    model = model.double().eval()  # double: a pooling-grid mismatch (~1e-6) stands out
    image = torch.rand(1, *size_hw, dtype=torch.double)
    tiled = predict_tiled(model, image, tile_size=124, batch_size=3)
    assert tiled.shape == (2, *size_hw)
    expected = whole_image_prediction(model, image).float()
    torch.testing.assert_close(tiled, expected, atol=1e-7, rtol=0)


def test_valid_tile_size_is_rounded_down_to_an_allowed_size():
    torch.manual_seed(0)
    model = UNet(in_channels=1, base_channels=4, depth=2, padding="valid", norm="none").eval()
    image = torch.rand(1, 33, 41)
    tiled = predict_tiled(model, image, tile_size=63)  # 63 is not allowed; 60 is
    torch.testing.assert_close(tiled, whole_image_prediction(model, image), atol=1e-5, rtol=0)


class PixelwiseModel(nn.Module):
    """A 1x1 convolution: its prediction does not depend on the tiling at all."""

    padding = "same"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, images):
        return [{"logits": logits} for logits in self.conv(torch.stack(images))]


def test_same_padding_blending_is_a_normalised_average():
    torch.manual_seed(0)
    model = PixelwiseModel()
    image = torch.rand(3, 97, 203)
    tiled = predict_tiled(model, image, tile_size=48, overlap=16, batch_size=5)
    with torch.no_grad():
        expected = model([image])[0]["logits"].softmax(dim=0)
    torch.testing.assert_close(tiled, expected, atol=1e-5, rtol=0)


def test_same_unet_gives_probabilities_for_odd_sizes_and_restores_train_mode():
    torch.manual_seed(0)
    model = UNet(base_channels=4, depth=3, num_classes=3)
    tiled = seglab.predict_tiled(model, torch.rand(3, 97, 203), tile_size=64, overlap=16)
    assert tiled.shape == (3, 97, 203)
    torch.testing.assert_close(tiled.sum(dim=0), torch.ones(97, 203))
    assert model.training


def test_single_tile_equals_direct_prediction():
    torch.manual_seed(0)
    model = UNet(base_channels=4, depth=2).eval()
    image = torch.rand(3, 40, 30)
    with torch.no_grad():
        direct = model([image])[0]["logits"].softmax(dim=0)
    torch.testing.assert_close(predict_tiled(model, image, tile_size=64, overlap=8), direct)


def test_gaussian_window_peaks_at_the_centre():
    window = gaussian_window(33, 20)
    assert window.shape == (33, 20)
    assert window[16].argmax() in (9, 10) and window[:, 9].argmax() == 16
    torch.testing.assert_close(window, window.flip(0).flip(1))
    assert window.min() > 0


def test_progress_bar_is_shown_on_request(capsys):
    model = PixelwiseModel()
    predict_tiled(model, torch.rand(3, 64, 64), tile_size=32, overlap=8, progress=True)
    assert "tiles" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("shape", "tile_size", "overlap", "message"),
    [((64, 64), 32, 0, "must be \\(C, H, W\\)"), ((3, 64, 64), 32, 32, "overlap < tile_size")],
)
def test_bad_arguments_are_user_errors(shape, tile_size, overlap, message):
    with pytest.raises(UserError, match=message):
        predict_tiled(PixelwiseModel(), torch.rand(shape), tile_size=tile_size, overlap=overlap)
