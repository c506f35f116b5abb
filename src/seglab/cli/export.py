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
        help="image to check with (the second is it resized); default: a synthetic image of "
        "shapes (with --quantize: the first image of the check split)",
    )
    parser.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    parser.add_argument(
        "--allow-unchecked",
        action="store_true",
        help="write the file even when the detector finds no object in the check images "
        "(nothing compared: the command otherwise exits 1 and asks for --image)",
    )
    _add_quantize_arguments(parser)
    parser.set_defaults(func=run)


def _add_quantize_arguments(parser: argparse.ArgumentParser) -> None:
    """--quantize int8 and what it calibrates with and is checked against."""
    group = parser.add_argument_group(
        "int8", "--quantize int8: onnxruntime's static quantization of the float32 graph "
        "(checked exactly first), calibrated on training images; the file is written only "
        "when the model's metric (mask AP, box AP, mIoU, accuracy) on a split loses at most "
        "--max-drop against the PyTorch model. CNN, U-Net, Faster R-CNN, Mask R-CNN.",
    )  # fmt: skip
    group.add_argument("--quantize", choices=["int8"], help="int8: weights and activations")
    group.add_argument("--calibration-images", type=int, metavar="N",
                       help="training images that set the int8 ranges (default: 32)")  # fmt: skip
    group.add_argument("--check-split", metavar="SPLIT",
                       help="split the metric is checked on (default: val)")  # fmt: skip
    group.add_argument("--data", metavar="DIR", help="dataset root (default: the data the "
                       "model was trained with, as its config names it)")  # fmt: skip
    group.add_argument("--max-drop", type=float, metavar="X",
                       help="the most the metric may lose (default: 0.01)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seglab.errors import UserError
    from seglab.files import check_output_file

    out = check_output_file(args.out)
    if out.suffix.lower() != ".onnx":
        raise UserError(f"{out}: --out must end in .onnx (seglab predict tells the formats "
                        "apart by it)")  # fmt: skip
    settings = _int8_settings(args)
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
        if settings is None:
            report = export_onnx(model, out, image=image, opset=args.opset,
                                 allow_unchecked=args.allow_unchecked)  # fmt: skip
        else:
            report = _export_int8(model, out, args, settings, image)
    except ExportCheckFailed as error:
        print(f"seglab export: error: {_failed(settings)}, {out} not written: {error}",
              file=sys.stderr)  # fmt: skip
        return 1
    except ExportUnchecked as error:
        given = "the image given" if args.image else (
            "the synthetic check image" if settings is None else
            f"the first image of the {settings.check_split} split")  # fmt: skip
        print(f"seglab export: error: {out} not written: {error}; give an image in which "
              f"the model finds objects with --image IMG (a validation image), instead of "
              f"{given}, or --allow-unchecked to write it unchecked", file=sys.stderr)  # fmt: skip
        return 1
    print("\n".join(report.lines()))
    return 0


def _int8_settings(args: argparse.Namespace):
    """`Int8Settings` from --quantize int8 and its options; None without --quantize (and
    none of its options)."""
    from seglab.errors import UserError

    given = {"--calibration-images": args.calibration_images, "--check-split": args.check_split,
             "--data": args.data, "--max-drop": args.max_drop}  # fmt: skip
    if args.quantize is None:
        options = [option for option, value in given.items() if value is not None]
        if options:
            raise UserError(f"{', '.join(options)} only apply with --quantize int8")
        return None
    if args.calibration_images is not None and args.calibration_images < 1:
        raise UserError(f"--calibration-images {args.calibration_images}: must be at least 1")
    if args.max_drop is not None and not args.max_drop >= 0:
        raise UserError(f"--max-drop {args.max_drop}: must be 0 or more")
    from seglab.inference.quantize import Int8Settings

    chosen = {"calibration_images": args.calibration_images, "check_split": args.check_split,
              "data": args.data, "max_drop": args.max_drop}  # fmt: skip
    return Int8Settings(**{key: value for key, value in chosen.items() if value is not None})


def _export_int8(model, out, args: argparse.Namespace, settings, image):
    """The int8 export: refused kinds first, then the data read (before the export's
    minutes), then `export_int8` scored with `seglab eval`'s metrics."""
    from seglab.errors import UserError
    from seglab.evaluation.exported import check_datasets, split_metrics
    from seglab.inference.quantize import export_int8, quantize_refusal

    refusal = quantize_refusal(model.card.arch)
    if refusal:
        raise UserError(f"--quantize int8: {refusal}")
    datasets = check_datasets(model, args.model, settings.data, ("train", settings.check_split))
    return export_int8(model, out, datasets=datasets, score=split_metrics, settings=settings,
                       image=image, opset=args.opset,
                       allow_unchecked=args.allow_unchecked)  # fmt: skip


def _failed(settings) -> str:
    """Which check failed (the message of an int8 export's says which of its two)."""
    return "onnxruntime disagrees with PyTorch" if settings is None else "int8 export check failed"


def _require_export_extra() -> None:
    from importlib.util import find_spec

    from seglab.errors import UserError

    missing = [name for name in ("onnx", "onnxruntime", "onnxscript") if find_spec(name) is None]
    if missing:
        raise UserError(f"seglab export needs {', '.join(missing)}: pip install "
                        "'seglab[export]'")  # fmt: skip
