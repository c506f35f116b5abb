"""Figure 13, the study text's "U-NET": the U with the paper configuration's real shapes,
the overlap-tile strategy, and the border weight map of touching objects.

- Shapes: the paper's U-Net (`UNet` with valid padding, depth 4, 64 base channels, one
  grey channel, two classes) run on a 572 x 572 tensor on the `meta` device (shapes without
  arithmetic), each convolution, pooling and up-convolution's output kept by a hook.
- Tiles: `seglab.predict_tiled` itself, on an image whose two channels hold each pixel's
  row and column, with a stand-in network that notes which pixel each tile's output starts
  at (the pixel `valid_margin` in from the tile's corner) and returns empty logits.
- Weights: `border_weight_map` (paper eq. 2) of a generated scene with touching objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.patches import Rectangle
from scipy import ndimage
from torch import Tensor, nn

from seglab.data.weight_map import border_weight_map, class_frequency_weights
from seglab.explain.context import Context
from seglab.explain.figure import Figure, draw_box, new_figure, png, show_image, to_uint8_image
from seglab.explain.training import shapes_scene
from seglab.inference.tiling import mirror_pad, predict_tiled
from seglab.models.segmentation.unet import UNet, valid_margin, valid_output_size

PAPER_INPUT = 572
TILED_IMAGE = 512  # two tiles of the paper's 388 x 388 output per side
TOUCHING_SCENE_SEED = 7


@dataclass(frozen=True)
class LayerShape:
    name: str  # module name in the model
    kind: str  # conv, pool, up, concat, classifier (the last 1x1 convolution)
    level: int  # 0 = full resolution ... depth = bottleneck
    shape: tuple[int, ...]  # (N, C, H, W)


def paper_unet(device: str | torch.device = "meta") -> UNet:
    """The paper's configuration (§2-§3, Fig. 1)."""
    with torch.device(device):
        return UNet(in_channels=1, num_classes=2, base_channels=64, depth=4, padding="valid",
                    norm="none", upsampling="transpose", init="he")  # fmt: skip


def unet_shapes(model: UNet, input_side: int = PAPER_INPUT) -> list[LayerShape]:
    """Output shapes of every convolution, pooling, up-convolution and skip concatenation
    (the input of each expansive level's convolutions), in the order they ran."""
    shapes: list[LayerShape] = []

    def record(name: str, kind: str, level: int):
        def hook(_module, _inputs, output) -> None:  # None: the output is unchanged
            shapes.append(LayerShape(name, kind, level, tuple(output.shape)))

        return hook

    def record_input(name: str, level: int):
        def pre_hook(_module, inputs) -> None:  # before the convolutions: in execution order
            shapes.append(LayerShape(name, "concat", level, tuple(inputs[0].shape)))

        return pre_hook

    handles = []
    for name, module in model.named_modules():
        kind, level = _kind_and_level(name, module, model.depth)
        if kind is not None:
            handles.append(module.register_forward_hook(record(name, kind, level)))
        if name.endswith(".convs") and name.startswith("expansive"):
            handles.append(module.register_forward_pre_hook(record_input(name, level)))
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model.forward_logits(torch.zeros(1, 1, input_side, input_side, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def _kind_and_level(name: str, module: nn.Module, depth: int) -> tuple[str | None, int]:
    parts = name.split(".")
    if parts[0] == "input_level":
        level = 0
    elif parts[0] == "contracting" and len(parts) > 1:
        level = int(parts[1]) + 1
    elif parts[0] == "bottleneck":
        level = depth
    elif parts[0] == "expansive" and len(parts) > 1:
        level = depth - 1 - int(parts[1])
    else:
        level = 0
    if isinstance(module, nn.ConvTranspose2d):
        return "up", level + 1
    if isinstance(module, nn.Conv2d):
        return ("classifier" if module.kernel_size == (1, 1) else "conv"), level
    if isinstance(module, nn.MaxPool2d):
        return "pool", level
    return None, level


@dataclass(frozen=True)
class TileLayout:
    """Where `predict_tiled` cuts a valid-padding U-Net's input tiles.

    Attributes:
        tile_in, tile_out: input and output tile sides; margin: (tile_in - tile_out) / 2.
        corners: (y, x) of each tile's output region in the image (its input region starts
            `margin` earlier, in the mirror-padded image).
    """

    tile_in: int
    tile_out: int
    margin: int
    corners: list[tuple[int, int]]


class _TileRecorder(nn.Module):
    """Stands in for a valid U-Net of `depth` in `predict_tiled`: notes where each tile's
    output starts (its channels hold row and column) and returns zero logits."""

    padding = "valid"

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.depth = depth
        self.margin = valid_margin(depth)
        self.corners: list[tuple[int, int]] = []
        self.tile_in = 0

    def forward(self, tiles: list[Tensor]) -> list[dict[str, Tensor]]:
        outputs = []
        for tile in tiles:
            row, column = tile[:, self.margin, self.margin].tolist()
            self.corners.append((int(row), int(column)))
            self.tile_in = tile.shape[-1]
            side = valid_output_size(tile.shape[-1], self.depth)
            outputs.append({"logits": torch.zeros(2, side, side)})
        return outputs


def tile_layout(height: int, width: int, tile_size: int, depth: int = 4) -> TileLayout:
    """The tiles `predict_tiled(model, image, tile_size)` runs a depth-`depth` valid U-Net on."""
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    columns = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    recorder = _TileRecorder(depth)
    predict_tiled(recorder, torch.stack([rows, columns]), tile_size=tile_size, overlap=0)
    tile_out = valid_output_size(recorder.tile_in, depth)
    return TileLayout(recorder.tile_in, tile_out, recorder.margin, recorder.corners)


@dataclass(frozen=True)
class WeightMapData:
    image: Tensor  # (3, H, W)
    semantic_mask: np.ndarray  # (H, W) class per pixel
    instance_ids: np.ndarray  # (H, W) object ids, 0 none
    weights: np.ndarray  # (H, W) w(x) of eq. 2
    class_weights: np.ndarray  # (H, W) its class-balance term w_c(x)


def touching_objects(size: int = TILED_IMAGE, seed: int = TOUCHING_SCENE_SEED) -> WeightMapData:
    """A generated scene of many objects, where objects that overlap are cut apart by a
    one-pixel background line (touching cells, as in the paper's Fig. 3), and its weight map."""
    image, target = shapes_scene(seed, size, count=14)
    instance_ids = np.zeros((size, size), dtype=np.int32)
    semantic = np.zeros((size, size), dtype=np.int64)
    for index, (mask, label) in enumerate(zip(target["masks"], target["labels"], strict=True)):
        instance_ids[mask.numpy() > 0] = index + 1
        semantic[mask.numpy() > 0] = int(label)
    between = _between_objects(instance_ids)
    instance_ids[between], semantic[between] = 0, 0
    weights = border_weight_map(semantic, instance_ids)
    return WeightMapData(image, semantic, instance_ids, weights, class_frequency_weights(semantic))


def _between_objects(instance_ids: np.ndarray) -> np.ndarray:
    """Object pixels with a pixel of another object among their 8 neighbours."""
    largest = ndimage.maximum_filter(instance_ids, size=3)
    others = np.where(instance_ids == 0, np.iinfo(np.int32).max, instance_ids)
    smallest = ndimage.minimum_filter(others, size=3)
    return (instance_ids > 0) & (largest != smallest)


# -- drawing ------------------------------------------------------------------------------


def unet_figure(context: Context) -> Figure:
    shapes = unet_shapes(paper_unet())
    scene = touching_objects()
    layout = tile_layout(*scene.semantic_mask.shape, tile_size=PAPER_INPUT)
    figure = new_figure(11.0, 9.2)
    grid = figure.add_gridspec(2, 2, height_ratios=[1.25, 1])
    _draw_u(figure.add_subplot(grid[0, :]), shapes)
    _draw_tiles(figure.add_subplot(grid[1, 0]), scene.image, layout)
    weights = figure.add_subplot(grid[1, 1])
    border = scene.weights - scene.class_weights
    shown = weights.imshow(border, cmap="jet", interpolation="nearest")
    figure.colorbar(shown, ax=weights, fraction=0.046)
    weights.contour(scene.instance_ids > 0, levels=[0.5], colors="white", linewidths=0.5)
    weights.set_title("w(x) - w_c(x): the border term of eq. 2 (w0 = 10, sigma = 5 px)",
                      fontsize=9)  # fmt: skip
    weights.set_xticks([])
    weights.set_yticks([])
    figure.tight_layout()
    bottleneck = [s for s in shapes if s.level == 4 and s.kind == "conv"]
    first, last = shapes[0], shapes[-1]
    return Figure(
        f"Top: the paper's U-Net as seglab builds it, with the shape each layer returned for a "
        f"{PAPER_INPUT} x {PAPER_INPUT} input: unpadded 3 x 3 convolutions lose a pixel a side "
        f"({first.shape[-1]} after the first), the bottleneck gives "
        f"{_side(bottleneck[0])} then {_side(bottleneck[1])}, and the output is "
        f"{last.shape[-1]} x {last.shape[-1]} x {last.shape[1]}. Bottom left: overlap-tile as "
        f"seglab.predict_tiled cuts a {TILED_IMAGE} px image: {len(layout.corners)} input tiles "
        f"of {layout.tile_in} px from the mirrored image, whose {layout.tile_out} px outputs "
        "tile it. Bottom right: the weight map's border term, large in the narrow gaps "
        "between touching objects (white outlines) that the loss must learn to keep.",
        png(figure),
    )


def _side(shape: LayerShape) -> str:
    return f"{shape.shape[-2]} x {shape.shape[-1]} x {shape.shape[1]}"


_KIND_COLOURS = {"conv": "#4c72b0", "pool": "#d62728", "up": "#2ca02c", "concat": "#999999",
                 "classifier": "#17becf"}  # fmt: skip


def _draw_u(axes, shapes: list[LayerShape]) -> None:
    """One bar per layer output: x in execution order, y by level (the U), labelled."""
    x = 0.0
    for index, layer in enumerate(shapes):
        x += 0.35 if layer.kind == "conv" else 0.8
        height = 0.25 + 0.6 * layer.shape[-1] / shapes[0].shape[-1]
        y = -layer.level * 1.2
        axes.add_patch(_bar(x, y, height, _KIND_COLOURS[layer.kind]))
        if layer.kind in ("conv", "concat", "classifier"):
            axes.text(x, y - height / 2 - 0.06, str(layer.shape[-1]), ha="center", va="top",
                      fontsize=6)  # fmt: skip
        last_of_run = index + 1 == len(shapes) or shapes[index + 1].kind != layer.kind
        if layer.kind in ("conv", "classifier") and last_of_run:
            axes.text(x + 0.25, y + height / 2, f"x{layer.shape[1]}", ha="left", va="top",
                      fontsize=6.5, color=_KIND_COLOURS[layer.kind])  # fmt: skip
    for kind, colour in _KIND_COLOURS.items():
        axes.plot([], [], color=colour, linewidth=6, label=_KIND_LABELS[kind])
    axes.legend(fontsize=7, loc="lower center", ncol=5, frameon=False)
    axes.set_xlim(-0.3, x + 0.5)
    axes.set_ylim(-5.9, 0.7)
    axes.axis("off")
    axes.set_title(f"the paper's U-Net on a {PAPER_INPUT} px input: each layer's output side "
                   "(below) and channels (right of each block)", fontsize=9)  # fmt: skip


_KIND_LABELS = {"conv": "3x3 conv + ReLU", "pool": "2x2 max pool", "up": "2x2 up-conv",
                "concat": "copy, crop and concatenate", "classifier": "1x1 conv"}  # fmt: skip


def _bar(x: float, y: float, height: float, colour: str) -> Rectangle:
    return Rectangle((x - 0.12, y - height / 2), 0.24, height, color=colour)


def _draw_tiles(axes, image: Tensor, layout: TileLayout) -> None:
    margin = layout.margin
    last_y = max(y for y, _ in layout.corners)
    last_x = max(x for _, x in layout.corners)
    padded = mirror_pad(
        image, top=margin, left=margin,
        bottom=last_y + layout.tile_in - margin - image.shape[-2],
        right=last_x + layout.tile_in - margin - image.shape[-1],
    )  # fmt: skip
    show_image(axes, to_uint8_image(padded), "overlap-tile: input tiles (thin) over the mirrored "
               "image, their outputs (thick) tile it")  # fmt: skip
    draw_box(axes, (margin, margin, margin + image.shape[-1], margin + image.shape[-2]), "white",
             width=2, style="--")  # fmt: skip
    colours = ("#e41a1c", "#377eb8", "#4daf4a", "#ff7f00", "#984ea3", "#a65628")
    for index, (y, x) in enumerate(layout.corners):
        colour = colours[index % len(colours)]
        draw_box(axes, (x, y, x + layout.tile_in, y + layout.tile_in), colour, width=0.8,
                 style="--")  # fmt: skip
        draw_box(axes, (x + margin, y + margin, x + margin + layout.tile_out,
                        y + margin + layout.tile_out), colour, width=2.5)  # fmt: skip
