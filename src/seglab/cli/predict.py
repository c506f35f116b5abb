"""`seglab predict MODEL IMAGE_OR_DIR... --out DIR`: predictions, overlays and JSON."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="run a trained model on images (top-k classes, detections or class maps)",
        description="Run MODEL (a .safetensors file written by seglab train) on image files "
        "or folders (searched recursively; non-image files in a folder are skipped). "
        "Classifier: prints the top-k classes and writes predictions.json. Detectors: "
        "predictions.json in the COCO results format (image_id = running index of the "
        "image, or its id in --gt; images.json maps ids to files) and overlays/. "
        "Semantic models (predicted tile by tile, any image size): masks/ (class-index "
        "PNGs), overlays/ and predictions.json; with --instances, object instances written "
        "as a detector's (COCO results for seglab eval --iou-type segm).",
    )
    parser.add_argument(
        "model", metavar="MODEL", help="RUN/model.safetensors, or a .onnx file from seglab export"
    )
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images or folders")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--top-k", type=int, default=3, help="classes shown per image (3)")
    parser.add_argument(
        "--score-threshold", type=float, default=0.5, help="detections drawn and counted (0.5)"
    )
    parser.add_argument(
        "--gt",
        metavar="GT.json",
        help="detectors and --instances: COCO ground truth whose image ids to use (matched "
        "by file_name), so that predictions.json can be scored with seglab eval --gt GT.json "
        "--pred",
    )
    parser.add_argument(
        "--tile-size",
        type=int,
        metavar="N",
        help="semantic models: side of the tiles each image is predicted in (default 256; a "
        "valid-padding U-Net rounds it down to an allowed input size, or up to the smallest "
        "that works for its depth: 204 at depth 4); a smaller image goes whole",
    )
    parser.add_argument(
        "--overlap",
        type=int,
        metavar="N",
        help="semantic models: pixels shared by neighbouring tiles (default min(32, tile/4); "
        "valid-padding tiles abut exactly and ignore it)",
    )
    parser.add_argument(
        "--instances",
        choices=("components", "watershed"),
        help="semantic models: split the foreground into object instances (connected "
        "components, or watershed to separate touching objects) and write COCO results",
    )
    parser.add_argument(
        "--batch-size", type=int, default=4,
        help="classifiers and detectors: images of one size per forward pass (4)",
    )  # fmt: skip
    parser.add_argument(
        "--limit", type=int, metavar="N",
        help="predict the first N images only (in the order listed: folders sorted by name), "
        "e.g. overlays of a handful of validation images",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32",
        help="fp32, or bf16: bfloat16 autocast (fast where the CPU has bfloat16 units: "
        "AVX-512 BF16, AMX; boxes, scores and masks decoded in float32); .safetensors only",
    )  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seglab.engine.device import resolve_device
    from seglab.errors import UserError
    from seglab.files import check_output_folder
    from seglab.inference.onnx_model import load_model_or_onnx
    from seglab.inference.predictor import collect_inputs, gt_image_ids, predict_files
    from seglab.ops.precision import announced_autocast

    if args.top_k < 1:
        raise UserError(f"--top-k {args.top_k}: must be at least 1")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit {args.limit}: must be at least 1")
    out_dir = check_output_folder(args.out)
    inputs = collect_inputs(args.inputs)
    if args.limit is not None and args.limit < len(inputs.images):
        _stderr(f"predicting the first {args.limit} of {len(inputs.images)} images (--limit)")
        inputs.images = inputs.images[: args.limit]
    image_ids = gt_image_ids(args.gt, inputs.images) if args.gt else None
    if args.precision != "fp32" and args.model.lower().endswith(".onnx"):
        raise UserError(f"{args.model}: --precision applies to seglab models; a .onnx file "
                        "runs in onnxruntime as exported")  # fmt: skip
    model = load_model_or_onnx(args.model)  # a .onnx file runs in onnxruntime
    options = {"tile_size": args.tile_size, "overlap": args.overlap, "instances": args.instances}
    device = resolve_device(args.device, option="--device")
    with announced_autocast(args.precision, device, say=_stderr):
        predictions = predict_files(
            model, inputs, out_dir, top_k=args.top_k, score_threshold=args.score_threshold,
            device=device, image_ids=image_ids, batch_size=args.batch_size, **options,
        )  # fmt: skip
    for prediction in predictions:
        print(prediction.line)
    for note in inputs.skipped:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {out_dir / 'predictions.json'} ({len(predictions)} images)")
    return 0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)
