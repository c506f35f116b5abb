"""Figure 13: the U-Net shapes are a forward pass's, the tiles predict_tiled's own."""

from __future__ import annotations

import torch

from seglab.explain.unet import paper_unet, tile_layout, touching_objects, unet_shapes
from seglab.inference.tiling import mirror_pad, predict_tiled
from seglab.models.segmentation.unet import UNet, valid_output_size


def test_paper_configuration_shapes_on_meta_tensors():
    shapes = unet_shapes(paper_unet("meta"))
    convs = [s for s in shapes if s.kind == "conv"]
    assert [s.shape[-1] for s in convs[:10]] == [570, 568, 282, 280, 138, 136, 66, 64, 30, 28]
    assert convs[8].shape == (1, 1024, 30, 30) and convs[9].shape == (1, 1024, 28, 28)
    assert shapes[-1].shape == (1, 2, 388, 388)
    assert valid_output_size(572) == 388
    concat = [s.shape for s in shapes if s.kind == "concat"]
    assert concat[0] == (1, 1024, 56, 56) and concat[-1] == (1, 128, 392, 392)
    # in the order they run: up-convolution, copy-and-concatenate, two convolutions per
    # expansive level, then the 1x1 classifier
    first_up = next(index for index, s in enumerate(shapes) if s.kind == "up")
    decoder = ["up", "concat", "conv", "conv"] * 4 + ["classifier"]
    assert [s.kind for s in shapes[first_up:]] == decoder


def test_shapes_equal_a_real_forward_pass():
    torch.manual_seed(0)
    model = UNet(in_channels=1, num_classes=3, base_channels=4, depth=2, padding="valid",
                 norm="none").eval()  # fmt: skip
    shapes = unet_shapes(model, input_side=60)
    with torch.no_grad():
        logits = model.forward_logits(torch.rand(1, 1, 60, 60))
    assert shapes[-1].shape == tuple(logits.shape)
    assert shapes[-1].shape[-1] == valid_output_size(60, 2)


def test_tile_layout_is_what_predict_tiled_runs():
    torch.manual_seed(0)
    model = UNet(in_channels=1, num_classes=2, base_channels=4, depth=2, padding="valid",
                 norm="none").eval()  # fmt: skip
    image = torch.rand(1, 50, 45)
    layout = tile_layout(50, 45, tile_size=40, depth=2)
    assert layout.tile_out == valid_output_size(layout.tile_in, 2)
    # stitch the model's outputs on the layout's tiles by hand: predict_tiled's result
    padded = mirror_pad(image, top=layout.margin, left=layout.margin, bottom=60, right=60)
    stitched = torch.zeros(2, 50 + 60, 45 + 60)
    with torch.no_grad():
        for y, x in layout.corners:
            tile = padded[:, y : y + layout.tile_in, x : x + layout.tile_in]
            probs = model([tile])[0]["logits"].softmax(dim=0)
            stitched[:, y : y + layout.tile_out, x : x + layout.tile_out] = probs
    expected = predict_tiled(model, image, tile_size=40)
    torch.testing.assert_close(stitched[:, :50, :45], expected, rtol=1e-5, atol=1e-6)


def test_paper_tiles_on_the_512_px_image():
    layout = tile_layout(512, 512, tile_size=572)
    assert (layout.tile_in, layout.tile_out, layout.margin) == (572, 388, 92)
    assert sorted(layout.corners) == [(0, 0), (0, 384), (384, 0), (384, 384)]


def test_touching_objects_get_border_weight_in_the_gaps():
    scene = touching_objects(size=128, seed=7)
    border = scene.weights - scene.class_weights
    assert border.max() > 5  # gaps between objects, of about one pixel: near w0 = 10
    assert (border[scene.instance_ids > 0] == 0).all()  # the term is on background only
