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

import seglab
from seglab.data import build_dataset
from seglab.data.config import DataConfig
from seglab.data.shapes import generate_shapes
from seglab.inference import quantize
from seglab.inference.export import ExportCheckFailed, export_onnx
from seglab.inference.onnx_model import OnnxModel
from seglab.inference.quantize import (
    Int8Settings,
    export_int8,
    int8_datasets,
    quantize_checked,
)
from seglab.models.segmentation.unet import valid_margin
from seglab.ops.windows import mirror_pad

CLASSES = ["circle", "square", "triangle"]  # seglab.data.shapes
UNET = {"num_classes": 4, "base_channels": 8, "depth": 2, "padding": "valid"}


def train_small_unet(data, steps: int = 120) -> torch.nn.Module:
    """A small valid-padding U-Net fitted to the 8 training images (seconds), each mirror-
    padded by the margin the network eats (U-Net paper §2) so that its whole mask is
    learnt: train mIoU about 0.6 against 0.2 for the background alone, so a wrong int8 model
    shows in it (the checks here measure on the train split)."""
    torch.manual_seed(0)
    model = seglab.build_model("unet", **UNET)
    config = DataConfig(root=str(data), layout="masks", image_size=64)
    dataset = build_dataset(config, "train", task="semantic", train=False)
    images, targets = zip(*(dataset[index] for index in range(len(dataset))), strict=True)
    margin = valid_margin(UNET["depth"])
    padded = [mirror_pad(image.as_subclass(torch.Tensor), top=margin, bottom=margin,
                         left=margin, right=margin) for image in images]  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        _, losses = model.forward_with_losses(padded, list(targets))
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    return model.eval()


_BUILT: dict[str, tuple] = {}  # one U-Net and one export for every module that asks


@pytest.fixture(scope="session")
def unet_run(tmp_path_factory):
    """(model loaded from its file, the file, the data, its float32 export (checked), that
    export's report): shapes at 64 px, 8 train and 4 val images. Built once per session,
    also for tests/cli/test_export_quantize_cli.py (the export takes 20-50 s)."""
    if "unet" not in _BUILT:
        folder = tmp_path_factory.mktemp("unet_run")
        data = generate_shapes(folder / "data", task="semantic", train=8, val=4, size=64, seed=0)
        path = folder / "model.safetensors"
        config = {"data": {"root": str(data), "layout": "masks", "image_size": 64}}
        seglab.save_model(train_small_unet(data), path, class_names=CLASSES, config=config)
        model = seglab.load_model(path).eval()  # with its card: the data it names
        report = export_onnx(model, folder / "unet.onnx")
        _BUILT["unet"] = (model, path, data, folder / "unet.onnx", report)
    return _BUILT["unet"]


def quantized(unet_run, out, calibration_images: int = 8):
    """The int8 file of the run's float32 export at `out`, checked on the train split."""
    model, path, _, fp32_path, _ = unet_run
    settings = Int8Settings(calibration_images=calibration_images, check_split="train")
    datasets = int8_datasets(model, settings, path)
    return quantize_checked(model, fp32_path, out, datasets, settings)


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


def test_int8_file_holds_int8_convolution_weights_and_is_smaller(unet_int8):
    path, result = unet_int8
    graph = onnx.load(str(path)).graph
    convolutions = [node for node in graph.node if node.op_type == "Conv"]
    weights = initializers(path)
    producers = {output: node for node in graph.node for output in node.output}
    for conv in convolutions:  # its weight: DequantizeLinear of an int8 tensor, per channel
        dequantize = producers[conv.input[1]]
        assert dequantize.op_type == "DequantizeLinear"
        quantized, scales = weights[dequantize.input[0]], weights[dequantize.input[1]]
        assert quantized.dtype == np.int8 and scales.shape == (quantized.shape[0],)
    assert len(convolutions) == 2 * 2 * 2 + 2 + 1  # 2 double convs per level, bottom, 1x1
    kinds = weight_kinds(path)
    assert kinds["Conv"] == {"int8"} and kinds["ConvTranspose"] == {"float32"}  # quantize.py
    assert path.stat().st_size < 0.5 * result.float32_mb * 1e6
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
    report = export_int8(model, out, model_path=path,
                         settings=Int8Settings(calibration_images=2, max_drop=1.0))  # fmt: skip
    assert set(report.int8.metrics.values["ONNX int8"]) == {"segm.AP", "bbox.AP"}
    weights = weight_kinds(out)
    assert weights["Conv"] == {"int8"} and weights["Gemm"] == {"float32"}
    assert report.int8.kept_float32.startswith(f"{len(weights['Gemm_nodes'])} Gemm")
    config = DataConfig(root=str(data), layout="coco")
    image = build_dataset(config, "val", task="instance", train=False)[0][0]
    detections = OnnxModel(out)([image.as_subclass(torch.Tensor)])[0]
    assert list(detections) == ["boxes", "labels", "scores", "masks"]
