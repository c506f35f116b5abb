"""int8 ONNX for deployment: onnxruntime's static quantization of an exported seglab graph,
calibrated on training images and checked by the metric on a split.

`export_int8` exports the float32 graph (`seglab.inference.export.export_onnx`, checked
exactly against PyTorch as always), quantizes it with `onnxruntime.quantization.
quantize_static` and writes the int8 file only when the model's metric (mask AP, box AP,
mIoU, accuracy) on a split loses at most `max_drop` against the PyTorch float32 model. The
quantized model's outputs are not PyTorch's to a rounding, so its detections cannot be
paired exactly as the float32 check pairs them; the metric is what a deployment keeps.

How (onnxruntime's recommendations for CNNs on x86):
- QDQ format: QuantizeLinear / DequantizeLinear pairs around each quantized node, which
  onnxruntime's CPU provider fuses into int8 kernels (QLinearConv) when it loads the file;
- weights int8, per output channel (convolution filters differ in range by orders of
  magnitude; one scale per tensor would round the small ones to 0); activations uint8,
  per tensor, with the ranges seen on the calibration images (MinMax);
- which nodes: every convolution (backbone, FPN, RPN head, mask head; U-Net's), where
  the time is. Everything else runs in float32: RoIAlign, box decoding, NMS, mask pasting
  (no weights; they place boxes to the pixel), and two kinds of nodes with weights: the
  box head's fully connected layers (quantized too, they cost the Mask R-CNN shapes
  recipe 0.009 mask AP more, nearly all the 0.01 allowed) and the transposed convolutions
  (no measurable effect on AP either way; kept float32 as the measured configuration).
  docs/benchmarks.md, "int8 ONNX", has the numbers.

Quantized models: CNN, U-Net, Faster R-CNN, Mask R-CNN. R-CNN and Fast R-CNN are refused:
their graphs take selective-search proposals as a second input, which calibration and the
check would have to compute for every image, and selective search, outside the graph,
takes most of their time (docs/benchmarks.md, "Detector lineage").
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from seglab.errors import UserError
from seglab.files import atomic_write
from seglab.inference.export import ExportCheckFailed, ExportReport, export_graph, export_onnx
from seglab.inference.onnx_model import OnnxModel
from seglab.progress import status

# arch -> why int8 is refused (one line for the user)
REFUSED = {
    arch: f"{name} takes selective-search proposals as a second input, which calibration "
    "would compute for every image, and the search outside the graph takes most of its "
    "time; export it in float32 (without --quantize)"
    for arch, name in (("rcnn", "R-CNN"), ("fast_rcnn", "Fast R-CNN"))
}
QUANTIZED_OPS = ("Conv",)  # where the time of these models is
# Nodes with weights kept in float32 (see the module's notes): the box head's fully
# connected layers, the transposed convolutions (Mask R-CNN's mask head, U-Net's up-convs).
FLOAT32_WEIGHTED_OPS = ("Gemm", "MatMul", "ConvTranspose")
# The metrics the check reports, by task, the primary one first (the metric that ranks
# models, `seglab.evaluation.PRIMARY_METRICS`).
REPORTED_METRICS = {
    "instance": ("segm.AP", "bbox.AP"),
    "detection": ("bbox.AP",),
    "semantic": ("mIoU",),
    "classification": ("accuracy",),
}
# (an engine: a PyTorch model or an `OnnxModel`, a dataset) -> `seglab eval`'s metrics
Scorer = Callable[[Any, Any], dict[str, Any]]


@dataclass(frozen=True)
class Int8Settings:
    """What `export_int8` calibrates with and checks against.

    calibration_images: training images whose activation ranges set the int8 scales.
    check_split: the split the metric is measured on.
    max_drop: the most the primary metric (REPORTED_METRICS) may lose against PyTorch.
    data: the dataset root; None: the data the model's training config names.
    """

    calibration_images: int = 32
    check_split: str = "val"
    max_drop: float = 0.01
    data: str | None = None


@dataclass
class MetricCheck:
    """The metrics of each engine on the check split, and the primary one's loss."""

    split: str
    images: int
    primary: str
    values: dict[str, dict[str, float]]  # engine -> metric name -> value
    max_drop: float

    @property
    def drop(self) -> float:
        return self.values["PyTorch float32"][self.primary] - self.values["ONNX int8"][self.primary]

    def lines(self) -> list[str]:
        engines = list(self.values)
        lines = [f"checked on {self.split} ({self.images} images): " + ", ".join(engines)]
        for name in self.values[engines[0]]:
            values = ", ".join(f"{self.values[engine][name]:.4f}" for engine in engines)
            lines.append(f"  {name}: {values}")
        lines.append(f"  {self.primary} lost: {self.drop:.4f} (at most {self.max_drop})")
        return lines


@dataclass
class Quantized:
    """What `quantize_checked` did: the calibration, the nodes quantized and those kept in
    float32 (in words), the metric check, the float32 file's size."""

    calibration: str
    quantized: str
    kept_float32: str
    metrics: MetricCheck
    float32_mb: float


@dataclass
class Int8Report:
    """What `export_int8` did: the float32 export and its exact check, then the int8 file
    (`Quantized`)."""

    float32: ExportReport
    seconds: float
    int8: Quantized

    @property
    def path(self) -> Path:
        return self.float32.path

    def lines(self) -> list[str]:
        export_lines = self.float32.lines()
        size_mb = self.path.stat().st_size / 1e6
        return [
            f"wrote {self.path} ({size_mb:.1f} MB int8; float32 {self.int8.float32_mb:.1f} "
            f"MB) in {self.seconds:.1f} s",
            *export_lines[1:3],
            f"float32 graph {export_lines[3]}",
            *export_lines[4:],
            f"int8: {self.int8.calibration}",
            f"  quantized: {self.int8.quantized}",
            f"  float32: {self.int8.kept_float32}",
            *self.int8.metrics.lines(),
        ]


def quantize_refusal(arch: str) -> str | None:
    """Why `arch` is not quantized (one line), or None when it is."""
    return REFUSED.get(arch)


def export_int8(
    model: nn.Module,
    path: str | Path,
    *,
    datasets: tuple,
    score: Scorer,
    settings: Int8Settings = Int8Settings(),
    image: Tensor | None = None,
    opset: int | None = None,
    allow_unchecked: bool = False,
) -> Int8Report:
    """Export `model` in float32 (checked exactly), quantize it to int8 and write `path`
    only when its primary metric on the check split loses at most `settings.max_drop`.

    Args:
        model: a seglab model of a kind `quantize_refusal` accepts.
        path: the int8 .onnx file, written atomically.
        datasets: (the train split, the check split), evaluation transforms
            (`seglab.evaluation.exported.check_datasets`).
        score: the metrics of an engine on a dataset
            (`seglab.evaluation.exported.split_metrics`: `seglab eval`'s).
        settings: calibration and check (`Int8Settings`).
        image: a float (C, H, W) image in [0, 1] for the float32 check; default: the first
            image of the check split.
        opset, allow_unchecked: as `export_onnx`.

    Raises:
        UserError: a refused kind.
        ExportCheckFailed: the float32 graph disagrees with PyTorch, or int8 loses more
            than `max_drop`; nothing is written.
    """
    refusal = quantize_refusal(model.card.arch)
    if refusal:
        raise UserError(f"--quantize int8: {refusal}")
    model = model.cpu().eval()
    path = Path(path)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as work:
        fp32_path = Path(work) / "float32.onnx"
        first = image if image is not None else datasets[1][0][0].as_subclass(Tensor)
        try:
            float32 = export_onnx(model, fp32_path, image=first, opset=opset,
                                  allow_unchecked=allow_unchecked)  # fmt: skip
        except ExportCheckFailed as error:
            raise ExportCheckFailed(f"float32 graph: onnxruntime disagrees with PyTorch: "
                                    f"{error}") from None  # fmt: skip
        int8 = quantize_checked(model, fp32_path, path, datasets, score, settings)
    float32.path = path
    return Int8Report(float32, time.perf_counter() - start, int8)


def quantize_checked(model: nn.Module, fp32_path: Path, path: str | Path, datasets,
                     score: Scorer, settings: Int8Settings) -> Quantized:  # fmt: skip
    """Quantize the float32 export of `model` at `fp32_path`, calibrated on the first of
    `datasets` (train, check split), and write it to `path` when its primary metric on the
    second (by `score`) loses at most `settings.max_drop` against `model`.

    Raises:
        ExportCheckFailed: int8 loses more than `max_drop`; nothing is written.
    """
    calibration_set, check_set = datasets
    inputs = calibration_inputs(model, calibration_set, settings.calibration_images)
    status(f"export: quantizing to int8, calibrated on {len(inputs)} images of the train "
           "split")  # fmt: skip
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as work:
        int8_path = Path(work) / "int8.onnx"
        quantized, kept = quantize_graph(fp32_path, int8_path, inputs)
        metrics = check_metrics(model, fp32_path, int8_path, check_set, score, settings)
        if metrics.drop > settings.max_drop:
            before, after = (metrics.values[engine][metrics.primary]
                             for engine in ("PyTorch float32", "ONNX int8"))  # fmt: skip
            raise ExportCheckFailed(
                f"int8 loses {metrics.drop:.4f} {metrics.primary} on {settings.check_split} "
                f"({before:.4f} -> {after:.4f}; at most {settings.max_drop} allowed)"
            )
        atomic_write(path, lambda temporary: shutil.copyfile(int8_path, temporary))
    calibration = (f"onnxruntime static quantization, QDQ, int8 weights per channel, uint8 "
                   f"activations (MinMax over {len(inputs)} train images)")  # fmt: skip
    return Quantized(calibration, quantized, kept, metrics, fp32_path.stat().st_size / 1e6)


def calibration_inputs(model: nn.Module, dataset, count: int) -> list[dict[str, np.ndarray]]:
    """The graph's inputs for `count` images of `dataset` spread evenly over it (all of them
    when it has fewer), each as the exported graph takes it: {"images": (1, C, H, W)}
    float32 in [0, 1] (a valid-padding U-Net's cropped to a side it takes)."""
    graph = export_graph(model)
    picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
    inputs = []
    for index in dict.fromkeys(picks.tolist()):
        image = graph.fit_size(dataset[index][0].as_subclass(Tensor).float())
        inputs.append({"images": image[None].numpy()})  # (C, H, W) -> (1, C, H, W)
    return inputs


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader (a class with `get_next` is one) over prepared
    inputs."""

    def __init__(self, inputs: list[dict[str, np.ndarray]]):
        self.inputs = inputs
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position == len(self.inputs):
            return None
        self.position += 1
        return self.inputs[self.position - 1]

    def rewind(self) -> None:
        self.position = 0


def quantize_graph(
    fp32_path: Path, int8_path: Path, inputs: list[dict[str, np.ndarray]]
) -> tuple[str, str]:
    """Quantize the float32 graph at `fp32_path` to `int8_path` (QDQ, see the module's
    notes); the model card's metadata is carried over. Returns what was quantized and the
    weighted nodes kept in float32, in words."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    graph = onnx.load(str(fp32_path))
    with _quiet_preprocessing_advice():
        quantize_static(
            graph, int8_path, _CalibrationReader(inputs), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=list(QUANTIZED_OPS),
        )  # fmt: skip
    _copy_metadata(graph, int8_path)
    counts = Counter(node.op_type for node in graph.graph.node)
    quantized = ", ".join(f"{counts[op]} {op}" for op in QUANTIZED_OPS)
    kept = ", ".join(f"{counts[op]} {op}" for op in FLOAT32_WEIGHTED_OPS if counts[op])
    return quantized, f"{kept} and every other node" if kept else "every other node"


@contextlib.contextmanager
def _quiet_preprocessing_advice():
    """Without onnxruntime's advice, logged at each call, to pre-process the graph (shape
    inference: the exporter's graph has its shapes already; tested without)."""

    def advice(record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def _copy_metadata(source, path: Path) -> None:
    """The model card (`metadata_props`) of `source` into the ONNX file at `path`."""
    import onnx

    quantized = onnx.load(str(path))
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(source.metadata_props)
    onnx.save(quantized, str(path))


def check_metrics(model: nn.Module, fp32_path: Path, int8_path: Path, dataset, score: Scorer,
                  settings: Int8Settings) -> MetricCheck:  # fmt: skip
    """The task's metrics (REPORTED_METRICS) on `dataset` of PyTorch float32, ONNX float32
    and ONNX int8."""
    names = REPORTED_METRICS[model.task]
    engines = {"PyTorch float32": model, "ONNX float32": OnnxModel(fp32_path),
               "ONNX int8": OnnxModel(int8_path)}  # fmt: skip
    values = {}
    for engine_name, engine in engines.items():
        status(f"export: {engine_name} on the {settings.check_split} split ({len(dataset)} "
               "images)")  # fmt: skip
        metrics = score(engine, dataset)
        values[engine_name] = {name: _dotted(metrics, name) for name in names}
    return MetricCheck(settings.check_split, len(dataset), names[0], values, settings.max_drop)


def _dotted(metrics: dict[str, Any], name: str) -> float:
    """metrics["segm"]["AP"] for "segm.AP"."""
    value: Any = metrics
    for part in name.split("."):
        value = value[part]
    return float(value)
