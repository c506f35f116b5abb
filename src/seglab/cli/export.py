"""`seglab export MODEL --format onnx --out model.onnx`: an ONNX file checked with onnxruntime.

The export and its check are `seglab.inference.export`; `seglab predict model.onnx` runs
the file with the same command as the PyTorch model.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a trained model to ONNX, checked against PyTorch with onnxruntime",
        description="Export MODEL (a .safetensors file written by seglab) to ONNX with "
        "dynamic image sizes, then run the file with onnxruntime on two images of different "
        "sizes and compare with PyTorch (detections: count, labels, boxes, scores, masks). "
        "The file is written only when they agree within the printed tolerances; otherwise "
        "the command says what differs and exits 1. R-CNN and Fast R-CNN take the "
        "selective-search proposals as a second input (OpenCV runs outside the graph; "
        "seglab predict model.onnx computes them with the model's settings). Needs the "
        "export extra (pip install 'seglab[export]').",
    )
    parser.add_argument("model", metavar="MODEL", help="RUN/model.safetensors")
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="onnx (the only one)")
    parser.add_argument("--out", required=True, metavar="FILE.onnx", help="the file to write")
    parser.add_argument(
        "--image",
        metavar="IMG",
        help="image to check with (the second is it resized); default: a synthetic image of shapes",
    )
    parser.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    parser.add_argument(
        "--allow-unchecked",
        action="store_true",
        help="write the file even when the detector finds no object in the check images "
        "(nothing compared: the command otherwise exits 1 and asks for --image)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seglab.errors import UserError
    from seglab.files import check_output_file

    out = check_output_file(args.out)
    if out.suffix.lower() != ".onnx":
        raise UserError(f"{out}: --out must end in .onnx (seglab predict tells the formats "
                        "apart by it)")  # fmt: skip
    _require_export_extra()
    import torch
    from torchvision.transforms.v2 import functional as TF

    from seglab.data.images import load_image
    from seglab.inference.export import ExportCheckFailed, ExportUnchecked, export_onnx
    from seglab.models.zoo import load_model

    model = load_model(args.model)
    image = None
    if args.image:
        channels = model.card.in_channels
        loaded = load_image(Path(args.image), channels)
        image = TF.to_dtype(loaded, torch.float32, scale=True).as_subclass(torch.Tensor)
    try:
        report = export_onnx(model, out, image=image, opset=args.opset,
                             allow_unchecked=args.allow_unchecked)  # fmt: skip
    except ExportCheckFailed as error:
        print(f"seglab export: error: onnxruntime disagrees with PyTorch, {out} not written: "
              f"{error}", file=sys.stderr)  # fmt: skip
        return 1
    except ExportUnchecked as error:
        given = "the image given" if args.image else "the synthetic check image"
        print(f"seglab export: error: {out} not written: {error}; give an image in which "
              f"the model finds objects with --image IMG (a validation image), instead of "
              f"{given}, or --allow-unchecked to write it unchecked", file=sys.stderr)  # fmt: skip
        return 1
    print("\n".join(report.lines()))
    return 0


def _require_export_extra() -> None:
    from importlib.util import find_spec

    from seglab.errors import UserError

    missing = [name for name in ("onnx", "onnxruntime", "onnxscript") if find_spec(name) is None]
    if missing:
        raise UserError(f"seglab export needs {', '.join(missing)}: pip install "
                        "'seglab[export]'")  # fmt: skip
