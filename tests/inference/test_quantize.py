"""int8 ONNX (`seglab.inference.quantize`): a small U-Net, trained for a few seconds on
the shapes, quantized with onnxruntime's static quantization. The file holds int8 weights
and is smaller; its logits stay within a tolerance derived from the int8 steps; the check
on a split fails, and writes nothing, when the calibration is wrong (zeros) or an output is
swapped. The box head's fully connected layers and the transposed convolutions keep
float32 weights (the Mask R-CNN quantized end to end is slow-marked)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from tests.inference import int8_fixtures

import seglab
from seglab.data import build_dataset
from seglab.data.config import DataConfig
from seglab.data.shapes import generate_shapes
from seglab.evaluation.exported import check_datasets, split_metrics
from seglab.inference import quantize
from seglab.inference.export import ExportCheckFailed
from seglab.inference.onnx_model import OnnxModel
from seglab.inference.quantize import (
    Int8Settings,
    export_int8,
    quantize_checked,
)

unet_run = int8_fixtures.unet_run  # the fixture, built once for both modules
CLASSES = int8_fixtures.CLASSES


def quantized(unet_run, out, calibration_images: int = 8):
    """The int8 file of the run's float32 export at `out`, checked on the train split."""
    model, path, _, fp32_path, _ = unet_run
    settings = Int8Settings(calibration_images=calibration_images, check_split="train")
    datasets = check_datasets(model, path, None, ("train", "train"))
    return quantize_checked(model, fp32_path, out, datasets, split_metrics, settings)


@pytest.fixture(scope="module")
def unet_int8(unet_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "unet.int8.onnx"
    return out, quantized(unet_run, out)


def initializers(path) -> dict[str, np.ndarray]:
    graph = onnx.load(str(path)).graph
    return {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in graph.initializer}


def weight_kinds(path) -> dict[str, set[str]]:
    """Op type -> the kinds of its nodes' weights in an ONNX file: "int8" (an int8 tensor
    through DequantizeLinear) or "float32" (a float32 tensor)."""
    graph = onnx.load(str(path)).graph
    weights = initializers(path)
    producers = {output: node for node in graph.node for output in node.output}
    kinds: dict[str, set[str]] = {}
    for node in graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            weight = node.input[1]
            if weight in producers and producers[weight].op_type == "DequantizeLinear":
                kind = str(weights[producers[weight].input[0]].dtype)
            else:
                kind = str(weights[weight].dtype) if weight in weights else "activation"
            kinds.setdefault(node.op_type, set()).add(kind)
            kinds.setdefault(f"{node.op_type}_nodes", set()).add(node.name)
    return kinds


def test_int8_file_holds_int8_convolution_weights_and_is_smaller(unet_run, unet_int8):
    fp32_path = unet_run[3]
    path, result = unet_int8
    graph = onnx.load(str(path)).graph
    convolutions = [node for node in graph.node if node.op_type == "Conv"]
    weights = initializers(path)
    producers = {output: node for node in graph.node for output in node.output}
    for conv in convolutions:  # its weight: DequantizeLinear of an int8 tensor, per channel
        dequantize = producers.get(conv.input[1])  # None: a float32 initializer
        assert dequantize is not None and dequantize.op_type == "DequantizeLinear"
        quantized, scales = weights[dequantize.input[0]], weights[dequantize.input[1]]
        assert quantized.dtype == np.int8 and scales.shape == (quantized.shape[0],)
    assert len(convolutions) == 2 * 2 * 2 + 2 + 1  # 2 double convs per level, bottom, 1x1
    kinds = weight_kinds(path)
    assert kinds["Conv"] == {"int8"} and kinds["ConvTranspose"] == {"float32"}  # quantize.py
    float32 = initializers(fp32_path)
    float32_graph = onnx.load(str(fp32_path)).graph
    float32_bytes = sum(float32[conv.input[1]].nbytes
                        for conv in float32_graph.node if conv.op_type == "Conv")  # fmt: skip
    int8_bytes = sum(weights[producers[conv.input[1]].input[0]].nbytes for conv in convolutions)
    assert 4 * int8_bytes == float32_bytes  # one byte a weight instead of four
    assert path.stat().st_size < result.float32_mb * 1e6
    assert result.metrics.drop <= 0.01


def test_int8_logits_stay_within_the_quantization_steps(unet_run, unet_int8):
    """On the calibration images (inside the calibrated ranges: no clipping), int8 logits
    differ from float32's by rounding noise alone (see `rounding_noise`): on average
    within one sigma of it, everywhere within six."""
    model, _, data, _, _ = unet_run
    path, _ = unet_int8
    exported = OnnxModel(path)
    config = DataConfig(root=str(data), layout="masks", image_size=64)
    dataset = build_dataset(config, "train", task="semantic", train=False)
    sigma = rounding_noise(path)
    for index in range(len(dataset)):
        image = dataset[index][0].as_subclass(torch.Tensor)[:, :60, :60]  # a side it takes
        with torch.no_grad():
            expected = model([image])[0]["logits"]
        gaps = (exported([image])[0]["logits"] - expected).abs()
        assert float(gaps.mean()) <= sigma and float(gaps.max()) <= 6 * sigma


def rounding_noise(path) -> float:
    """The standard deviation of the int8 logits' error from rounding: each of the L
    QuantizeLinear nodes on activations rounds its tensor to its step, uniform noise of
    variance step^2 / 12; layers with batch norm pass it on with a gain about 1, so at the
    logits each stands as noise of the logits' own step s; L independent ones add up to
    s * sqrt(L / 12)."""
    graph = onnx.load(str(path)).graph
    producers = {output: node for node in graph.node for output in node.output}
    weights = initializers(path)
    step = float(weights[producers["logits"].input[1]])  # logits = DequantizeLinear(...)
    activations = [node for node in graph.node if node.op_type == "QuantizeLinear"]
    return step * (len(activations) / 12) ** 0.5


def test_the_check_fails_when_calibrated_on_zeros(unet_run, tmp_path, monkeypatch):
    """Calibrated on black images the activations' ranges are empty: the int8 model's mIoU
    collapses and the check refuses it, writing nothing."""
    calibrate = quantize.calibration_inputs

    def zeros(*args):
        return [{"images": np.zeros_like(each["images"])} for each in calibrate(*args)]

    monkeypatch.setattr(quantize, "calibration_inputs", zeros)
    with pytest.raises(ExportCheckFailed, match=r"int8 loses 0\.\d+ mIoU on train"):
        quantized(unet_run, tmp_path / "unet.onnx")
    assert list(tmp_path.iterdir()) == []


def test_the_check_fails_when_int8_swaps_two_classes(unet_run, tmp_path, monkeypatch):
    run = OnnxModel.__call__

    def swapped(self, images):
        outputs = run(self, images)
        if self.path.name == "int8.onnx":
            return [{"logits": out["logits"][[0, 2, 1, 3]]} for out in outputs]
        return outputs

    monkeypatch.setattr(OnnxModel, "__call__", swapped)
    with pytest.raises(ExportCheckFailed, match=r"int8 loses 0\.\d+ mIoU on train"):
        quantized(unet_run, tmp_path / "unet.onnx")
    assert list(tmp_path.iterdir()) == []


# ~2 minutes (the Mask R-CNN export traces for 40-110 s): `make test-all`. The default run
# covers the same claims on the U-Net (every convolution quantized, int8 weights per
# channel, the nodes with float32 weights kept so, the metric check).
@pytest.mark.slow
def test_mask_rcnn_quantizes_its_convolutions_and_keeps_its_box_head_float32(tmp_path):
    from tests.inference.test_export import TINY_MASK_RCNN, sharpened

    data = generate_shapes(tmp_path / "data", task="instance", train=4, val=2, size=96, seed=0)
    torch.manual_seed(0)
    model = sharpened(seglab.build_model("mask_rcnn", num_classes=4, **TINY_MASK_RCNN).eval())
    path = tmp_path / "model.safetensors"
    seglab.save_model(model, path, class_names=CLASSES,
                      config={"data": {"root": str(data), "layout": "coco"}})  # fmt: skip
    model = seglab.load_model(path).eval()
    out = tmp_path / "mask_rcnn.int8.onnx"
    # an untrained model's AP says nothing: the check's number is not what is tested here
    datasets = check_datasets(model, path, None, ("train", "val"))
    report = export_int8(model, out, datasets=datasets, score=split_metrics,
                         settings=Int8Settings(calibration_images=2, max_drop=1.0))  # fmt: skip
    assert set(report.int8.metrics.values["ONNX int8"]) == {"segm.AP", "bbox.AP"}
    weights = weight_kinds(out)
    assert weights["Conv"] == {"int8"} and weights["Gemm"] == {"float32"}
    assert report.int8.kept_float32.startswith(f"{len(weights['Gemm_nodes'])} Gemm")
    config = DataConfig(root=str(data), layout="coco")
    image = build_dataset(config, "val", task="instance", train=False)[0][0]
    detections = OnnxModel(out)([image.as_subclass(torch.Tensor)])[0]
    assert list(detections) == ["boxes", "labels", "scores", "masks"]


def test_the_check_is_on_the_metric_that_ranks_models():
    from seglab.evaluation import PRIMARY_METRICS

    assert {task: names[0] for task, names in quantize.REPORTED_METRICS.items()} == PRIMARY_METRICS
