"""ONNX export of a seglab model, checked against PyTorch with onnxruntime in the same call.

One graph per task; every input is float in [0, 1] (normalisation is in the graph):

| task | input | outputs | dynamic |
|---|---|---|---|
| classification (CNN) | images (B, C, H, W) | logits (B, K) | B, H, W |
| semantic (U-Net) | images (B, C, H, W) | logits (B, K, H', W') | B, H, W (1) |
| detection | images (1, C, H, W) | boxes (N, 4), labels (N,), scores (N,) | H, W, N |
| instance (Mask R-CNN) | images (1, C, H, W) | the above and masks (N, 1, H, W) | H, W, N |
| R-CNN, Fast R-CNN | images (1, C, H, W), proposals (P, 4) | as detection | H, W, P, N |

(1) same padding: any H, W >= 2**depth; valid padding: the allowed sides s0 + 2**depth k.
Boxes are xyxy in the input's pixels, labels int64 1..K, masks probabilities in [0, 1].

R-CNN and Fast R-CNN take their regions as a second input, xyxy in the image's pixels:
selective search is OpenCV's graph segmentation and merging, not tensor operations, so it
stays outside the graph (`OnnxModel` runs it with the model's settings, as the PyTorch
model does) and the graph is `SelectiveSearchDetector.detect_with_proposals`. Fast R-CNN's
RoI max pooling becomes ONNX's MaxRoiPool, whose onnxruntime kernel quantises the regions
as torchvision's (tested equal bit for bit); R-CNN's warp is RoIAlign, as Faster R-CNN's.

The exporter is `torch.onnx.export`'s default since torch 2.9, the one built on
`torch.export`: image sizes stay symbolic and the number of detections is data-dependent,
so one graph serves every image size, and images without detections give N = 0. The
models' code keeps sizes symbolic for it (no `int()` on a size, no per-detection Python
loop under export). The model card (architecture, arguments, classes, config) goes
into the file's `metadata_props`, which is all `OnnxModel` (`seglab predict model.onnx`)
needs.
"""

from __future__ import annotations

import abc
import contextlib
import io
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.export import Dim

from seglab.files import atomic_write
from seglab.inference.onnx_check import CheckResult, compare_outputs, detection_count
from seglab.inference.onnx_model import OUTPUT_NAMES, OnnxModel
from seglab.models.detection.selective_search import SelectiveSearchDetector
from seglab.models.zoo import model_card
from seglab.progress import status

# Sides of the check images (the second is another size, to show the graph is dynamic).
SYNTHETIC_SIZE = (96, 128)
SECOND_SIZE_SCALE = (0.75, 1.25)
# The most proposals the R-CNN and Fast R-CNN graphs take (selective search gives about
# 2000); a bound keeps the exporter's arithmetic on the sizes within int64.
MAX_PROPOSALS = 2**20


class ExportCheckFailed(Exception):
    """onnxruntime's outputs differ from PyTorch's beyond the tolerances (exit code 1)."""


class ExportUnchecked(Exception):
    """The check compared nothing: the detector found no object in any check image, so no
    box, score or mask of onnxruntime's was held against PyTorch's (exit code 1)."""


@dataclass
class ExportReport:
    """What `export_onnx` did: the file, the time it took, the checks and their timings."""

    path: Path
    seconds: float
    inputs: str
    outputs: str
    checks: list[CheckResult] = field(default_factory=list)

    def lines(self) -> list[str]:
        size_mb = self.path.stat().st_size / 1e6
        lines = [f"wrote {self.path} ({size_mb:.1f} MB) in {self.seconds:.1f} s",
                 f"input: {self.inputs}", f"outputs: {self.outputs}"]  # fmt: skip
        import onnxruntime

        versions = f"onnxruntime {onnxruntime.__version__}, PyTorch {torch.__version__}"
        if nothing_compared(self.checks):
            lines.append(
                f"NOT checked ({versions}, CPU, float32): no detection in the "
                f"{len(self.checks)} images, nothing compared (--allow-unchecked):"
            )
        else:
            lines.append(f"checked ({versions}, CPU, float32) on {len(self.checks)} images:")
        lines += [f"  {check.line()}" for check in self.checks]
        return lines


def _require_detections(graph: ExportGraph, images: list[Tensor]) -> None:
    """ExportUnchecked when a detector finds nothing in any check image: known from PyTorch
    alone, before the export's minutes are spent on a check that could compare nothing."""
    if not graph.detects or any(detection_count(graph.model, image) for image in images):
        return
    sizes = " and ".join("x".join(str(side) for side in image.shape[-2:]) for image in images)
    raise ExportUnchecked(
        f"the model detects nothing in the check images ({sizes}: 0 detections in PyTorch), "
        "so the check would compare no box, score or mask"
    )


def nothing_compared(checks: list[CheckResult]) -> bool:
    """A detector's check with no detection on any image: its outputs were never compared."""
    return bool(checks) and all(check.detections == 0 for check in checks)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    image: Tensor | None = None,
    opset: int | None = None,
    allow_unchecked: bool = False,
) -> ExportReport:
    """Export `model` to `path` and check it with onnxruntime on two images of two sizes.

    Args:
        model: a seglab model (`seglab.build_model` / `load_model`), any task.
        path: the .onnx file; written only when the check passes (atomically).
        image: a float (C, H, W) image in [0, 1] to check with (and trace at); by default a
            synthetic image of shapes. The second check image is it resized.
        opset: ONNX opset version (default: the exporter's).
        allow_unchecked: write the file even when a detector finds nothing in the check
            images (nothing compared); the report says so.

    Raises:
        ExportCheckFailed: an output of onnxruntime differs from PyTorch's (the message
            says which, on which image, by how much); nothing is written.
        ExportUnchecked: a detector finds no object in the check images and
            `allow_unchecked` is False; found before the export, nothing is written.

    Says on stderr what it is doing (the export alone can take minutes for a large model).
    """
    model = model.cpu().eval()
    graph = export_graph(model)
    channels = model.card.in_channels
    first = image if image is not None else synthetic_image(channels, SYNTHETIC_SIZE)
    check_images = [graph.fit_size(first), graph.fit_size(resized(first), grow=1)]
    if not allow_unchecked:
        _require_detections(graph, check_images)
    inputs = graph.example_inputs(check_images[0])
    start = time.perf_counter()
    status(f"export: tracing {model.card.arch} and translating it to ONNX (torch.export, "
           "one pass; a minute or more for a large model)")  # fmt: skip
    # torchvision's and onnxscript's notes to developers, and the graph of each attempt the
    # exporter drops for the next (torch.export non-strict, then strict) go unshown
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        program = torch.onnx.export(
            graph, inputs, dynamic_shapes=graph.dynamic_shapes(),
            input_names=list(graph.input_names), output_names=list(OUTPUT_NAMES[model.task]),
            opset_version=opset, external_data=False, verbose=False,
            custom_translation_table=custom_translations(),
        )  # fmt: skip
    seconds = time.perf_counter() - start
    sizes = ", ".join("x".join(str(side) for side in image.shape[-2:]) for image in check_images)
    status(f"export: translated in {seconds:.1f} s; checking with onnxruntime against "
           f"PyTorch on {len(check_images)} images ({sizes})")  # fmt: skip
    proto = program.model_proto
    for key, value in graph.metadata().items():
        proto.metadata_props.add(key=key, value=value)
    checks: list[CheckResult] = []

    def save_checked(temporary: str) -> None:
        import onnx

        onnx.save(proto, temporary)
        exported = OnnxModel(temporary)
        checks.extend(compare_outputs(model, exported, image) for image in check_images)
        problems = [problem for check in checks for problem in check.problems]
        if problems:
            raise ExportCheckFailed("; ".join(problems))

    atomic_write(path, save_checked)
    outputs = ", ".join(OUTPUT_NAMES[model.task])
    return ExportReport(Path(path), seconds, graph.describe_inputs(), outputs, checks)


class ExportGraph(nn.Module, abc.ABC):
    """What one kind of model exports as (chosen once, by `export_graph`): the graph's
    `forward`, its inputs (names, the example it is traced with, which axes are dynamic, in
    words), the size of the check images and the file's metadata (the model card, and for
    U-Net what tiling needs).

    The default: one input, `images` (B, C, H, W) float in [0, 1], taken as it is.
    """

    input_names: tuple[str, ...] = ("images",)
    detects = False  # a detector's check compares only the boxes it finds

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def example_inputs(self, image: Tensor) -> tuple[Tensor, ...]:
        """What the graph is traced with, for the (C, H, W) check image `image`."""
        return (image[None],)

    @abc.abstractmethod
    def dynamic_shapes(self) -> tuple[dict[int, object], ...]:
        """Which axes of each input are dynamic, and the sides allowed (`torch.export.Dim`)."""

    @abc.abstractmethod
    def describe_inputs(self) -> str:
        """The inputs in words, for the export's report."""

    def fit_size(self, image: Tensor, grow: int = 0) -> Tensor:
        """The (C, H, W) image at a size the model takes (`grow`: a larger one)."""
        return image

    def metadata(self) -> dict[str, str]:
        """The model card as `load_model` reads it from a .safetensors file."""
        return model_card(self.model).to_metadata()


class _LogitsGraph(ExportGraph):
    """CNN and U-Net: images (B, C, H, W) -> logits."""

    def forward(self, images: Tensor) -> Tensor:
        return self.model.forward_logits(images)


class _ClassifierGraph(_LogitsGraph):
    """CNN: images (B, C, H, W) -> logits (B, K), any B, H, W."""

    def dynamic_shapes(self) -> tuple[dict[int, object], ...]:
        return ({0: Dim("batch"), 2: Dim.AUTO, 3: Dim.AUTO},)

    def describe_inputs(self) -> str:
        channels = self.model.card.in_channels
        return f"images (B, {channels}, H, W) float in [0, 1], any B, H, W"


class _UNetGraph(_LogitsGraph):
    """U-Net: images (B, C, H, W) -> logits (B, K, H', W'). Same padding takes any
    H, W >= 2**depth; valid padding the sides s0 + 2**depth k (`valid_input_size`)."""

    def dynamic_shapes(self) -> tuple[dict[int, object], ...]:
        step = 2**self.model.depth
        if self.model.padding == "same":  # padded to a multiple of 2**depth inside the graph
            return ({0: Dim("batch"), 2: Dim("height", min=step), 3: Dim("width", min=step)},)
        smallest = self._smallest_valid_side()
        rows, columns = Dim("rows", min=0), Dim("columns", min=0)
        return ({0: Dim("batch"), 2: step * rows + smallest, 3: step * columns + smallest},)

    def describe_inputs(self) -> str:
        channels, step = self.model.card.in_channels, 2**self.model.depth
        if self.model.padding == "same":
            return f"images (B, {channels}, H, W) float in [0, 1], any B and H, W >= {step}"
        smallest = self._smallest_valid_side()
        return (f"images (B, {channels}, H, W) float in [0, 1], any B; H and W of the form "
                f"{smallest} + {step} k (valid padding)")  # fmt: skip

    def fit_size(self, image: Tensor, grow: int = 0) -> Tensor:
        """Valid padding: the image cropped to an allowed side, from the third smallest
        (plus `grow` steps) on, mirror-padded up to it; same padding: as it is."""
        if self.model.padding != "valid":
            return image
        from seglab.inference.tiling import mirror_pad

        step, smallest = 2**self.model.depth, self._smallest_valid_side()
        least = smallest + (2 + grow) * step  # the export traces k >= 2 (0 and 1 would be fixed)
        height, width = image.shape[-2:]
        image = mirror_pad(image, top=0, left=0, bottom=max(least - height, 0),
                           right=max(least - width, 0))  # fmt: skip
        height, width = image.shape[-2:]
        allowed_h = smallest + (height - smallest) // step * step
        allowed_w = smallest + (width - smallest) // step * step
        return image[:, :allowed_h, :allowed_w]

    def metadata(self) -> dict[str, str]:
        """The card, and what tiling needs to know (`predict_tiled`)."""
        attributes = {"padding": self.model.padding, "depth": self.model.depth}
        return {**super().metadata(), "seglab_attributes": json.dumps(attributes)}

    def _smallest_valid_side(self) -> int:
        from seglab.models.segmentation.unet import valid_input_size

        return valid_input_size(1, self.model.depth)


class _DetectorGraph(ExportGraph):
    """Detectors: one image (1, C, H, W) -> its boxes, labels, scores (and masks)."""

    detects = True

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        detections = self.model([images[0]])[0]
        return tuple(detections[name] for name in OUTPUT_NAMES[self.model.task])

    def dynamic_shapes(self) -> tuple[dict[int, object], ...]:
        return ({2: Dim("height", min=16), 3: Dim("width", min=16)},)

    def describe_inputs(self) -> str:
        channels = self.model.card.in_channels
        return f"images (1, {channels}, H, W) float in [0, 1], any H, W >= 16"


class _GivenProposalsGraph(_DetectorGraph):
    """R-CNN, Fast R-CNN: one image (1, C, H, W) and its proposals (P, 4) xyxy in its
    pixels -> its boxes, labels, scores (`SelectiveSearchDetector.detect_with_proposals`)."""

    input_names = ("images", "proposals")

    def forward(self, images: Tensor, proposals: Tensor) -> tuple[Tensor, ...]:
        detections = self.model.detect_with_proposals([images[0]], [proposals])[0]
        return tuple(detections[name] for name in OUTPUT_NAMES["detection"])

    def example_inputs(self, image: Tensor) -> tuple[Tensor, ...]:
        """The image and its selective-search proposals (two whole-image boxes more when it
        has fewer than two: the exporter takes a size of 0 or 1 in its example for a
        constant)."""
        proposals = self.model.proposal_generator.search(image)
        if len(proposals) < 2:
            height, width = image.shape[-2:]
            whole = torch.tensor([[0.0, 0.0, width, height]] * 2)
            proposals = torch.cat([proposals, whole])
        return image[None], proposals

    def dynamic_shapes(self) -> tuple[dict[int, object], ...]:
        (image,) = super().dynamic_shapes()
        return image, {0: Dim("proposals", min=0, max=MAX_PROPOSALS)}

    def describe_inputs(self) -> str:
        search = self.model.proposal_generator.settings.describe()
        return (f"{super().describe_inputs()}; proposals (P, 4) float xyxy in the image's "
                f"pixels, any P (selective search, {search}, run outside the graph)")  # fmt: skip


def export_graph(model: nn.Module) -> ExportGraph:
    """The graph `model` exports as, by its kind, in eval mode."""
    if model.task == "classification":
        return _ClassifierGraph(model).eval()
    if model.task == "semantic":
        return _UNetGraph(model).eval()
    if isinstance(model, SelectiveSearchDetector):
        return _GivenProposalsGraph(model).eval()
    return _DetectorGraph(model).eval()


def custom_translations() -> dict:
    """ONNX translations of the torchvision kernels the exporter has none for."""
    return {torch.ops.torchvision.roi_pool.default: _max_roi_pool}


def _max_roi_pool(features, rois, spatial_scale: float, pooled_height: int, pooled_width: int):
    """torchvision::roi_pool as ONNX's MaxRoiPool: the same (K, 5) rois and (K, C, h, w)
    output. The second output, the argmax the backward pass reads, has no use in a graph
    for inference: a placeholder of its type (int32) stands for it."""
    from onnxscript import INT32
    from onnxscript import opset18 as op

    pooled = op.MaxRoiPool(
        features, rois, pooled_shape=[pooled_height, pooled_width], spatial_scale=spatial_scale
    )
    return pooled, op.Cast(pooled, to=INT32.dtype)


def synthetic_image(channels: int, size_hw: tuple[int, int], seed: int = 0) -> Tensor:
    """A (channels, H, W) float image in [0, 1]: a gradient with a few bright rectangles."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size_hw
    ramp = torch.linspace(0.1, 0.4, width)[None, None, :]
    image = ramp.expand(channels, height, width).clone()
    for _ in range(4):
        y0, x0 = (int(torch.randint(0, s // 2, (1,), generator=generator)) for s in size_hw)
        box_h, box_w = (int(torch.randint(s // 6, s // 2, (1,), generator=generator))
                        for s in size_hw)  # fmt: skip
        colour = torch.rand(channels, 1, 1, generator=generator) * 0.5 + 0.5
        image[:, y0 : y0 + box_h, x0 : x0 + box_w] = colour
    return image


def resized(image: Tensor) -> Tensor:
    """The image at another size: (H, W) scaled by SECOND_SIZE_SCALE (bilinear)."""
    height, width = image.shape[-2:]
    size = (round(height * SECOND_SIZE_SCALE[0]), round(width * SECOND_SIZE_SCALE[1]))
    return F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0]
