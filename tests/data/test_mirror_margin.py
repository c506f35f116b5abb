"""`data.mirror_margin`: a valid U-Net's training crops extended by mirroring (U-Net paper
§2, Fig. 2), so that every pixel of an image is supervised, not only the centre of crops."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from seglab.data.config import DataConfig, check_transform_options
from seglab.data.transforms import RandomScaleCrop, build_transforms
from seglab.errors import UserError
from seglab.ops.windows import mirror_pad


def test_the_window_is_grown_by_the_image_mirrored_and_the_mask_ignored_beyond_it():
    torch.manual_seed(0)
    image = tv_tensors.Image(torch.arange(20 * 30, dtype=torch.float32).view(1, 20, 30))
    mask = tv_tensors.Mask(torch.randint(0, 3, (20, 30)))
    weights = tv_tensors.Mask(torch.rand(20, 30) + 1)
    crop = RandomScaleCrop(output_size=(8, 8), mirror_margin=6)
    for top, left in [(0, 0), (12, 22), (5, 9)]:  # two corners and inside
        params = {"resized": (20, 30), "window": (top, left, 8, 8)}
        out_image, out_mask, out_weights = (
            crop.transform(x, params) for x in (image, mask, weights)
        )
        padded = mirror_pad(image, top=6, bottom=6, left=6, right=6)
        torch.testing.assert_close(
            out_image, padded[:, top : top + 20, left : left + 20], rtol=0, atol=0
        )
        inside = torch.zeros(20 + 12, 30 + 12, dtype=torch.bool)
        inside[6:-6, 6:-6] = True  # the image's own pixels, in the padded frame
        inside = inside[top : top + 20, left : left + 20]
        grown_mask = torch.nn.functional.pad(mask, (6, 6, 6, 6))[top : top + 20, left : left + 20]
        assert torch.equal(out_mask[inside], grown_mask[inside])
        assert (out_mask[~inside] == 255).all() and (out_weights[~inside] == 0).all()
        assert (top, left) == (5, 9) or (~inside).any()  # the corners reach beyond the image


def supervised_pixels(cfg: DataConfig, samples: int) -> torch.Tensor:
    """(S, S) bool: the image pixels that ever lie in the supervised centre of a training
    sample (the 8 px output of a valid U-Net whose input is the 20 px sample) with a
    labelled mask. Each pixel's position is written into the image's channels, so flips and
    rotations are followed."""
    side = cfg.image_size
    rows, columns = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    image = tv_tensors.Image(torch.stack([rows, columns, rows]).to(torch.uint8))
    target = {"semantic_mask": tv_tensors.Mask(torch.ones(side, side, dtype=torch.int64))}
    transform = build_transforms(cfg, task="semantic", train=True)
    seen = torch.zeros(side, side, dtype=torch.bool)
    torch.manual_seed(0)
    for _ in range(samples):
        sample, sample_target = transform(image, target)
        positions = (sample[:2] * 255).round().long()  # ToDtype scaled the uint8 positions
        mask = sample_target["semantic_mask"]
        assert mask.shape == sample.shape[-2:] == (20, 20)  # the valid U-Net's input
        centre = slice(6, 6 + 8)
        labelled = mask[centre, centre] != 255
        seen[positions[0, centre, centre][labelled], positions[1, centre, centre][labelled]] = True
    return seen


def test_every_pixel_is_supervised_with_the_margin_and_only_the_centre_without():
    """20 px images, a valid U-Net outputting 8 px of a 20 px input (margin 6): mirrored
    crops of 8 px supervise every pixel; crops of 20 px from the image only its centre."""
    common = {"layout": "masks", "image_size": 20, "hflip": 0.5, "rot90": True}
    mirrored = DataConfig(**common, crop_size=8, mirror_margin=6)
    centre_only = DataConfig(**common, crop_size=20)
    assert supervised_pixels(mirrored, 1500).all()
    seen = supervised_pixels(centre_only, 200)
    expected = torch.zeros(20, 20, dtype=torch.bool)
    expected[6:14, 6:14] = True
    assert torch.equal(seen, expected)


def test_the_weight_map_settings_reach_the_weight_map():
    cfg = DataConfig(layout="masks", image_size=32, weight_map=True, weight_map_w0=3.0,
                     weight_map_sigma=2.5)  # fmt: skip
    first = build_transforms(cfg, task="semantic", train=True).transforms[0]
    assert (first.w0, first.sigma) == (3.0, 2.5)


@pytest.mark.parametrize(
    "values,task,message",
    [
        ({"mirror_margin": -1}, "semantic", "data.mirror_margin: pixels of context, >= 0"),
        ({"mirror_margin": 4}, "classification", "data.mirror_margin: only for semantic"),
        ({"weight_map_sigma": 0.0}, "semantic", "data.weight_map_sigma > 0"),
    ],
)
def test_bad_settings_are_user_errors(values, task, message):
    with pytest.raises(UserError, match=message):
        check_transform_options(DataConfig(layout="masks", image_size=32, **values), task=task)
