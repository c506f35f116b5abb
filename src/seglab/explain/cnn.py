"""Figures 1-3, the study text's "CNN": convolution, pooling, and the classifier's layers.

Every number comes from the CNN classifier itself (`seglab.models.classification.cnn`),
read with forward hooks while it classifies the page's image: the convolution is its
first convolution layer, the pooling its first 2x2 max pooling, the shapes those of its
layers' outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seglab.explain.context import Context
from seglab.explain.figure import (
    Figure,
    draw_box,
    gif,
    new_figure,
    png,
    show_image,
    to_uint8_image,
)

CONV_OUTPUT_SIDE = 6  # output cells in the convolution animation (per side)
POOL_OUTPUT_SIDE = 4  # output cells in the pooling animation (per side)


@dataclass(frozen=True)
class ConvolutionData:
    """The first convolution of the CNN over a small patch of the image.

    Attributes:
        pixels: (n + 2, n + 2, 3) uint8, the patch as shown.
        inputs: (C_in, n + 2, n + 2) what the layer reads there (the normalised image).
        kernel: (C_in, 3, 3) the weights of output channel `channel`; bias: its bias.
        output: (n, n) the layer's output over the patch's interior (3x3 windows inside it).
        origin: (y, x) of the patch's top-left pixel in the image.
    """

    pixels: np.ndarray
    inputs: Tensor
    kernel: Tensor
    bias: float
    output: Tensor
    channel: int
    origin: tuple[int, int]


@dataclass(frozen=True)
class PoolingData:
    """The first 2x2 max pooling of the CNN over a small region of its input map.

    Attributes:
        feature: (2m, 2m) the map the pooling reads (conv, norm, activation), channel `channel`.
        pooled: (m, m) the pooling layer's output over it.
        origin: (y, x) of the region in the map (even: on the pooling grid).
    """

    feature: Tensor
    pooled: Tensor
    channel: int
    origin: tuple[int, int]


@dataclass(frozen=True)
class LayerOutput:
    name: str  # the module's name in the model, e.g. features.0.conv
    layer: str  # its type and settings, e.g. Conv2d(3, 16, 3x3)
    shape: tuple[int, ...]  # the tensor it returned


@dataclass(frozen=True)
class StackData:
    """The classifier on one input: each layer's output shape and the class probabilities."""

    pixels: np.ndarray  # (S, S, 3) uint8 input
    layers: list[LayerOutput]
    probabilities: Tensor  # (K,)
    class_names: list[str]


def record_outputs(model: nn.Module, modules: dict[str, nn.Module], run) -> dict[str, tuple]:
    """Run `run()` with forward hooks on `modules`; name -> (inputs, output) of each call."""
    seen: dict[str, tuple] = {}

    def hook(name: str):
        def keep_first_call(_module, inputs, output) -> None:  # None: the output is unchanged
            seen.setdefault(name, (inputs, output))

        return keep_first_call

    handles = [module.register_forward_hook(hook(name)) for name, module in modules.items()]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return seen


def convolution_data(model: nn.Module, image: Tensor, side: int = CONV_OUTPUT_SIDE):
    """What the classifier's first convolution computes around the busiest patch of `image`."""
    conv = model.features[0].conv
    ((inputs,), output) = record_outputs(model, {"conv": conv}, lambda: model([image]))["conv"]
    y, x = _busiest_patch(image, side + 2)
    # padding 1: output cell (i, j) reads the 3x3 input window centred on pixel (i, j)
    region = output[0, :, y + 1 : y + 1 + side, x + 1 : x + 1 + side]  # (C_out, n, n)
    channel = int(region.flatten(1).std(dim=1).argmax())
    return ConvolutionData(
        pixels=to_uint8_image(image[:, y : y + side + 2, x : x + side + 2]),
        inputs=inputs[0, :, y : y + side + 2, x : x + side + 2],
        kernel=conv.weight[channel].detach(),
        bias=float(conv.bias[channel]) if conv.bias is not None else 0.0,
        output=region[channel],
        channel=channel,
        origin=(y, x),
    )


def pooling_data(model: nn.Module, image: Tensor, side: int = POOL_OUTPUT_SIDE) -> PoolingData:
    """What the classifier's first 2x2 max pooling computes over a region of its input."""
    pool = model.features[0].pool
    ((feature,), pooled) = record_outputs(model, {"pool": pool}, lambda: model([image]))["pool"]
    y, x = (2 * (value // 2) for value in _busiest_patch(image, 2 * side))
    region = feature[0, :, y : y + 2 * side, x : x + 2 * side]  # (C, 2m, 2m)
    channel = int(region.flatten(1).std(dim=1).argmax())
    return PoolingData(
        feature=region[channel],
        pooled=pooled[0, channel, y // 2 : y // 2 + side, x // 2 : x // 2 + side],
        channel=channel,
        origin=(y, x),
    )


def stack_data(model: nn.Module, crop: Tensor) -> StackData:
    """Every layer's output shape for one (C, S, S) input, in the order they ran."""
    leaves = {name: module for name, module in model.named_modules() if not list(module.children())}
    outputs: dict[str, tuple] = {}
    result = record_outputs(model, leaves, lambda: outputs.update(out=model([crop])[0]))
    layers = [
        LayerOutput(name, _describe(leaves[name]), tuple(output.shape))
        for name, (_inputs, output) in result.items()
    ]
    return StackData(
        pixels=to_uint8_image(crop),
        layers=layers,
        probabilities=outputs["out"]["logits"].softmax(dim=0),
        class_names=list(model.card.class_names),
    )


def classifier_input(context: Context, model: nn.Module) -> Tensor:
    """The page's largest object (or the whole image) as a square at the CNN's input size."""
    image = context.image_for(model)
    target = context.page_image.target
    if target is not None and len(target["boxes"]):
        x0, y0, x1, y1 = target["boxes"][_largest(target["boxes"])].tolist()
        half = max(x1 - x0, y1 - y0) * 0.65
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        top, left = int(max(cy - half, 0)), int(max(cx - half, 0))
        image = image[:, top : int(cy + half) + 1, left : int(cx + half) + 1]
    size = classifier_input_side(model)
    # (C, h, w) -> (1, C, h, w) -> (1, C, S, S) -> (C, S, S)
    return F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)[0]


def _largest(boxes: Tensor) -> int:
    return int(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).argmax())


def classifier_input_side(model: nn.Module) -> int:
    """The side the classifier was trained at (its run's data.image_size), else 48 px."""
    data = model.card.data
    return int(data.get("image_size") or 48)


def _busiest_patch(image: Tensor, side: int) -> tuple[int, int]:
    """(y, x) of the side x side window of `image` whose pixels vary the most."""
    grey = image.mean(dim=0)[None, None]  # (C, H, W) -> (1, 1, H, W)
    mean = F.avg_pool2d(grey, side, stride=1)
    variance = F.avg_pool2d(grey**2, side, stride=1) - mean**2  # (1, 1, H-side+1, W-side+1)
    index = int(variance.flatten().argmax())
    return divmod(index, variance.shape[-1])


def _describe(module: nn.Module) -> str:
    kind = type(module).__name__
    if isinstance(module, nn.Conv2d):
        size = "x".join(map(str, module.kernel_size))
        return f"{kind}({module.in_channels}->{module.out_channels}, {size})"
    if isinstance(module, nn.Linear):
        return f"{kind}({module.in_features}->{module.out_features})"
    if isinstance(module, nn.MaxPool2d):
        return f"{kind}({module.kernel_size}x{module.kernel_size})"
    return kind


# -- drawing ------------------------------------------------------------------------------


def convolution_figure(context: Context) -> Figure:
    model = context.model("cnn")
    data = convolution_data(model, context.image_for(model))
    side = data.output.shape[0]
    limit = float(data.output.abs().max()) or 1.0
    frames = [_convolution_frame(data, step, limit) for step in range(side * side)]
    return Figure(
        f"The first convolution layer of {context.note(model)}, output channel "
        f"{data.channel}: each output cell is the sum of the 3x3 kernel times the "
        f"{data.inputs.shape[0]}-channel window under it, plus a bias. Sliding the same "
        "kernel over every position keeps the spatial layout: the output is a map of where "
        "the kernel's pattern occurs (patch at row {}, column {} of the image).".format(
            *data.origin
        ),
        gif(frames),
    )


def _convolution_frame(data: ConvolutionData, step: int, limit: float):
    side = data.output.shape[0]
    row, column = divmod(step, side)
    figure = new_figure(8.4, 3.0)
    inputs, kernel, outputs = figure.subplots(1, 3, gridspec_kw={"width_ratios": [1, 0.5, 1]})
    show_image(inputs, data.pixels, "input pixels")
    draw_box(inputs, (column, row, column + 3, row + 3), "red", width=2.5)
    weights = data.kernel.permute(1, 2, 0).float()  # (C, 3, 3) -> (3, 3, C)
    scaled = (weights - weights.min()) / (weights.max() - weights.min() + 1e-12)
    show_image(kernel, (scaled if scaled.shape[2] == 3 else scaled.repeat(1, 1, 3)).numpy(),
               f"kernel (channel {data.channel})")  # fmt: skip
    window = data.inputs[:, row : row + 3, column : column + 3]
    value = float((window * data.kernel).sum()) + data.bias
    kernel.set_xlabel(f"sum(w * x) + b\n= {value:.2f}", fontsize=9)
    shown = np.full((side, side), np.nan)
    shown.flat[: step + 1] = data.output.flatten()[: step + 1].numpy()
    outputs.imshow(shown, cmap="coolwarm", vmin=-limit, vmax=limit, extent=(0, side, side, 0))
    draw_box(outputs, (column, row, column + 1, row + 1), "black", width=2)
    outputs.set_title("feature map", fontsize=9)
    outputs.set_xticks([])
    outputs.set_yticks([])
    figure.tight_layout()
    return figure


def pooling_figure(context: Context) -> Figure:
    model = context.model("cnn")
    data = pooling_data(model, context.image_for(model))
    side = data.pooled.shape[0]
    limit = float(data.feature.max()) or 1.0
    frames = [_pooling_frame(data, step, limit) for step in range(side * side)]
    return Figure(
        f"The first max-pooling layer of {context.note(model)}, on channel {data.channel} of "
        "the map it receives (convolution, normalisation, ReLU). Each 2 x 2 window keeps "
        "only its largest value (outlined), so the map shrinks by half in each direction and "
        "what follows costs a quarter as much.",
        gif(frames),
    )


def _pooling_frame(data: PoolingData, step: int, limit: float):
    side = data.pooled.shape[0]
    row, column = divmod(step, side)
    figure = new_figure(7.0, 3.4)
    before, after = figure.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1.2]})
    _value_grid(before, data.feature.numpy(), limit, "input map (8 x 8)")
    draw_box(before, (2 * column, 2 * row, 2 * column + 2, 2 * row + 2), "red", width=2.5)
    window = data.feature[2 * row : 2 * row + 2, 2 * column : 2 * column + 2]
    top, left = divmod(int(window.flatten().argmax()), 2)
    draw_box(before, (2 * column + left, 2 * row + top, 2 * column + left + 1,
                      2 * row + top + 1), "black", width=2)  # fmt: skip
    shown = np.full((side, side), np.nan)
    shown.flat[: step + 1] = data.pooled.flatten()[: step + 1].numpy()
    _value_grid(after, shown, limit, "pooled (4 x 4)")
    draw_box(after, (column, row, column + 1, row + 1), "red", width=2.5)
    figure.tight_layout()
    return figure


def _value_grid(axes, values: np.ndarray, limit: float, title: str) -> None:
    rows, columns = values.shape
    axes.imshow(values, cmap="Greens", vmin=0, vmax=limit, extent=(0, columns, rows, 0))
    for (row, column), value in np.ndenumerate(values):
        if not np.isnan(value):
            axes.text(column + 0.5, row + 0.5, f"{value:.1f}", ha="center", va="center",
                      fontsize=7)  # fmt: skip
    axes.set_xticks(range(columns + 1), labels=[])
    axes.set_yticks(range(rows + 1), labels=[])
    axes.grid(True, color="grey", linewidth=0.5)
    axes.tick_params(length=0)
    axes.set_title(title, fontsize=9)


def cnn_figure(context: Context) -> Figure:
    model = context.model("cnn")
    data = stack_data(model, classifier_input(context, model))
    return Figure(
        f"{context.note(model)[0].upper()}{context.note(model)[1:]}, on the page's largest "
        "object. Convolution blocks (convolution, normalisation, activation, pooling) halve "
        "the map and widen the channels; global pooling and the fully connected layers turn "
        "the last map into one score per class. Shapes are (batch, channels, height, width), "
        "as the layers returned them.",
        png(_stack_picture(data)),
    )


_LAYER_COLOURS = {"Conv2d": "#4c72b0", "Linear": "#8172b2", "MaxPool2d": "#55a868",
                  "AdaptiveMaxPool2d": "#55a868", "AdaptiveAvgPool2d": "#55a868"}  # fmt: skip


def _stack_picture(data: StackData):
    rows = len(data.layers)
    figure = new_figure(9.6, 0.26 * rows + 1.0)
    picture, layers, scores = figure.subplots(1, 3, gridspec_kw={"width_ratios": [1, 4.4, 1.3]})
    show_image(picture, data.pixels, f"input {tuple(data.pixels.shape[:2])}")
    largest = max(np.log2(np.prod(layer.shape[1:]) + 1) for layer in data.layers)
    for index, layer in enumerate(data.layers):
        colour = _LAYER_COLOURS.get(layer.layer.split("(")[0], "#c0c0c0")
        for x, text in ((0, layer.name), (30, layer.layer), (60, str(layer.shape))):
            layers.text(x, index, text, va="center", fontsize=7.5)
        # bar length: log2 of the number of values in the output
        length = 22 * np.log2(np.prod(layer.shape[1:]) + 1) / largest
        layers.barh(index, length, left=78, color=colour, height=0.7)
    for x, text in ((0, "layer"), (30, "module"), (60, "output shape"), (78, "log2(values)")):
        layers.text(x, -1.2, text, va="center", fontsize=8, fontweight="bold")
    layers.set_ylim(rows - 0.5, -1.8)
    layers.set_xlim(0, 100)
    layers.axis("off")
    names = data.class_names or [str(k) for k in range(len(data.probabilities))]
    scores.barh(range(len(names)), data.probabilities.numpy(), color="#dd8452", height=0.6)
    scores.set_yticks(range(len(names)), labels=names, fontsize=8)
    scores.set_xlim(0, 1)
    scores.set_box_aspect(0.25 * len(names))  # bars of a readable height, not the figure's
    scores.invert_yaxis()
    scores.set_title("class probabilities", fontsize=8)
    figure.tight_layout()
    return figure
