"""The one image-loading rule (seglab.data.images): bit depths, modes, channels, EXIF."""

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.data.images import channels_for_modes, load_image, load_index_mask, read_header
from seglab.errors import UserError

EXIF_ORIENTATION = 0x0112


def _gray8():
    return (np.arange(12 * 20).reshape(12, 20) % 256).astype(np.uint8)


def test_sixteen_bit_maps_the_full_range_to_the_8_bit_scale(tmp_path):
    gray8 = _gray8()
    Image.fromarray(gray8).save(tmp_path / "g8.png")
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # v * 257 = v/255
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    eight, sixteen = load_image(tmp_path / "g8.png", 1), load_image(tmp_path / "g16.png", 1)
    assert eight.dtype == torch.uint8 and sixteen.dtype == torch.float32
    assert sixteen.shape == (1, 12, 20)
    # the same intensities as the 8-bit file after the models' to_dtype(scale=True)
    assert torch.equal(sixteen, eight.float() / 255)


def test_sixteen_bit_keeps_its_precision_and_is_not_stretched_per_image(tmp_path):
    values = np.array([[1000, 1001], [1002, 4095]], dtype=np.uint16)  # 12-bit camera data
    Image.fromarray(values).save(tmp_path / "g.png")
    loaded = load_image(tmp_path / "g.png", 1)[0]
    assert torch.equal(loaded, torch.from_numpy(values.astype(np.float32) / 65535))
    assert len(loaded.unique()) == 4  # 8-bit quantisation would merge 1000..1002


def test_sixteen_bit_on_a_three_channel_load_is_gray_in_each_channel(tmp_path):
    """The predict bug: a 16-bit PNG read as RGB was clipped to 255 (all white)."""
    Image.fromarray(_gray8().astype(np.uint16) * 257).save(tmp_path / "g16.png")
    image = load_image(tmp_path / "g16.png", 3)
    assert image.shape == (3, 12, 20)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert torch.equal(image[0], torch.from_numpy(_gray8()).float() / 255)


def test_float_images_must_be_in_unit_range(tmp_path):
    inside = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    Image.fromarray(inside).save(tmp_path / "ok.tif")
    assert torch.equal(load_image(tmp_path / "ok.tif", 1)[0], torch.from_numpy(inside))
    Image.fromarray(inside * 1000).save(tmp_path / "big.tif")
    with pytest.raises(UserError, match=r"big.tif: float image with values 0..1000; .*\[0, 1\]"):
        load_image(tmp_path / "big.tif", 1)


def test_32_bit_integer_images_beyond_16_bits_are_refused(tmp_path):
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32)).save(tmp_path / "i.tif")
    with pytest.raises(UserError, match="i.tif: I image with values 0..70000"):
        load_image(tmp_path / "i.tif", 1)


def test_colour_modes_become_rgb(tmp_path):
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: alpha is dropped, not composited
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert load_image(tmp_path / "rgba.png")[:, 0, 0].tolist() == [200, 0, 0]

    palette = Image.new("P", (5, 4))
    palette.putpalette([0, 0, 0, 10, 20, 30])
    palette.putpixel((1, 1), 1)
    palette.save(tmp_path / "p.png", transparency=0)  # palette transparency: via RGBA
    image = load_image(tmp_path / "p.png")
    assert image[:, 1, 1].tolist() == [10, 20, 30] and image[:, 0, 0].tolist() == [0, 0, 0]

    Image.new("CMYK", (5, 4), (0, 255, 0, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    magenta = load_image(tmp_path / "cmyk.jpg")[:, 2, 2].int()
    assert magenta[0] > 240 and magenta[1] < 15 and magenta[2] > 240


def test_channel_conversions(tmp_path):
    Image.fromarray(np.full((4, 5, 3), (100, 150, 200), np.uint8)).save(tmp_path / "rgb.png")
    luma = round(0.299 * 100 + 0.587 * 150 + 0.114 * 200)
    assert abs(int(load_image(tmp_path / "rgb.png", 1)[0, 0, 0]) - luma) <= 1
    gray_alpha = Image.fromarray(np.full((4, 5, 2), (70, 0), np.uint8), "LA")
    gray_alpha.save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png", 3)[:, 0, 0].tolist() == [70, 70, 70]
    assert channels_for_modes(["L", "I;16", "LA", "F"]) == 1
    assert channels_for_modes(["L", "P"]) == 3 and channels_for_modes(["L", "RGB"]) == 3


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_orientation_applies_to_size_and_pixels(tmp_path, orientation):
    pixels = np.zeros((30, 40, 3), dtype=np.uint8)
    pixels[:5, :10] = 255  # a white block in the stored top-left corner
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(pixels).save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=100)
    turned = orientation in (6, 8)
    assert read_header(tmp_path / "o.jpg") == ("RGB", (40, 30) if turned else (30, 40))
    image = load_image(tmp_path / "o.jpg")
    assert tuple(image.shape[-2:]) == ((40, 30) if turned else (30, 40))
    # orientation 6: the viewer turns the image 90 degrees clockwise, 8 counter-clockwise
    corner = {6: (0, -1), 8: (-1, 0), 3: (-1, -1)}[orientation]
    assert image[0, 2 if corner[0] == 0 else -3, 2 if corner[1] == 0 else -3] > 200


def test_masks_accept_index_modes_and_gray_saved_as_rgb(tmp_path):
    values = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    Image.fromarray(values).save(tmp_path / "l.png")
    Image.fromarray(np.stack([values] * 3, axis=-1)).save(tmp_path / "rgb.png")
    Image.fromarray(values.astype(np.uint16) * 100).save(tmp_path / "i16.png")
    assert np.array_equal(load_index_mask(tmp_path / "l.png"), values)
    assert np.array_equal(load_index_mask(tmp_path / "rgb.png"), values)
    assert np.array_equal(load_index_mask(tmp_path / "i16.png"), values.astype(np.int64) * 100)
