"""The small U-Net the int8 tests quantize, trained and exported once per session for
tests/inference/test_quantize.py and tests/cli/test_export_quantize_cli.py (a helper
module, imported by both under one name, so that its cache is one)."""

from __future__ import annotations

import pytest
import torch

import seglab
from seglab.data import build_dataset
from seglab.data.config import DataConfig
from seglab.data.shapes import generate_shapes
from seglab.inference.export import export_onnx
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
