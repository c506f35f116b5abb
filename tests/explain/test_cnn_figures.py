"""Figures 1-3: the convolution, pooling and layer shapes are the CNN classifier's own."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import seglab
from seglab.explain.cnn import convolution_data, pooling_data, stack_data


def _cnn():
    torch.manual_seed(0)
    return seglab.build_model("cnn", num_classes=3, widths=(8, 16), hidden=8).eval()


def test_convolution_cells_are_the_kernel_times_the_window_plus_bias(page_context):
    data = convolution_data(_cnn(), page_context.image, side=5)
    # an independent convolution of the patch the figure shows, without padding
    expected = F.conv2d(data.inputs[None], data.kernel[None], torch.tensor([data.bias]))[0, 0]
    assert data.output.shape == (5, 5)
    torch.testing.assert_close(data.output, expected, rtol=1e-5, atol=1e-5)
    window = data.inputs[:, 2:5, 1:4]  # output cell (2, 1)
    assert abs(float((window * data.kernel).sum()) + data.bias - float(data.output[2, 1])) < 1e-4


def test_convolution_patch_is_the_image_under_the_window(page_context):
    data = convolution_data(_cnn(), page_context.image, side=4)
    y, x = data.origin
    patch = (page_context.image[:, y : y + 6, x : x + 6] * 255).round().byte().permute(1, 2, 0)
    assert (torch.from_numpy(data.pixels) == patch).all()


def test_pooling_output_is_the_max_of_each_2x2_window(page_context):
    data = pooling_data(_cnn(), page_context.image)
    assert data.origin[0] % 2 == 0 and data.origin[1] % 2 == 0  # on the pooling grid
    expected = F.max_pool2d(data.feature[None, None], 2)[0, 0]
    assert torch.equal(data.pooled, expected)
    assert data.feature.min() >= 0  # after the ReLU


def test_layer_shapes_follow_the_blocks_and_probabilities_are_the_models():
    model = _cnn()
    crop = torch.rand(3, 32, 32)
    data = stack_data(model, crop)
    shapes = {layer.name: layer.shape for layer in data.layers}
    assert shapes["features.0.conv"] == (1, 8, 32, 32)
    assert shapes["features.0.pool"] == (1, 8, 16, 16)
    assert shapes["features.1.conv"] == (1, 16, 16, 16)
    assert shapes["features.1.pool"] == (1, 16, 8, 8)
    assert shapes["head.pool"] == (1, 16, 1, 1)
    assert data.layers[-1].shape == (1, 3)
    assert [layer.name for layer in data.layers][:2] == ["normalize", "features.0.conv"]
    with torch.no_grad():
        logits = model([crop])[0]["logits"]
    torch.testing.assert_close(data.probabilities, logits.softmax(dim=0))
