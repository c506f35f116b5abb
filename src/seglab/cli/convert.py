"""`seglab convert`: weights trained elsewhere -> a seglab model file.

seglab convert torchvision IN.pth OUT.safetensors --arch mask_rcnn_resnet50_fpn [--set k=v]
"""

from __future__ import annotations

import argparse

import yaml

from seglab.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from seglab.models.detection.torchvision_archs import TORCHVISION_ARCHS

    parser = subparsers.add_parser(
        "convert",
        help="convert a torchvision detection checkpoint into a seglab model",
        description="Map a torchvision state dict (.pth) onto seglab's modules and write a "
        "seglab model file (weights + architecture + class names) that load_model reads.",
    )
    parser.add_argument("source", choices=["torchvision"], help="where the weights come from")
    parser.add_argument(
        "checkpoint",
        metavar="IN.pth",
        help="the torchvision state dict: a file, or torchvision's weight name "
        "(MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1), read from its cache (TORCH_HOME; "
        "downloaded there once where there is a network)",
    )
    parser.add_argument("out", metavar="OUT.safetensors", help="the seglab model to write")
    parser.add_argument("--arch", required=True, choices=sorted(TORCHVISION_ARCHS))
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="builder argument of the converted model, e.g. min_size=512 (repeatable)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seglab.files import check_output_file
    from seglab.models.detection.convert import convert_torchvision, read_torchvision_state_dict
    from seglab.models.weight_names import is_weight_name
    from seglab.models.zoo import save_model

    check_output_file(args.out, "OUT.safetensors")
    builder_args = dict(_parse_override(item) for item in args.overrides)
    checkpoint = args.checkpoint
    if is_weight_name(checkpoint):
        from seglab.models.backbones.pretrained import cached_weights

        example = "MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1"
        checkpoint = cached_weights(checkpoint, "IN.pth", example)
    state = read_torchvision_state_dict(checkpoint)
    model = convert_torchvision(state, args.arch, **builder_args)
    save_model(model, args.out)
    print(
        f"wrote {args.out}: {model.card.arch} ({args.arch}), {len(model.card.class_names)} "
        "classes, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters"
    )
    return 0


def _parse_override(item: str) -> tuple[str, object]:
    key, separator, value = item.partition("=")
    if not separator or not key:
        raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. min_size=512")
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str):  # YAML 1.1 reads "1e-5" as a string
        try:
            parsed = float(parsed)
        except ValueError:
            pass
    return key.strip(), parsed
