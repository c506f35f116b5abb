"""`seglab data`: dataset utilities (`seglab data shapes OUT` writes the synthetic dataset)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("data", help="dataset utilities (synthetic shapes data)")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    shapes = actions.add_parser(
        "shapes",
        help="write the built-in synthetic shapes dataset",
        description="Write RGB scenes of circles, squares and triangles (overlap, occlusion, "
        "noise, empty scenes): COCO layout for --task instance, mask folders for semantic, "
        "image folders of single-object crops for classify. Deterministic for a seed.",
    )
    shapes.add_argument("out", metavar="OUT", help="output folder")
    shapes.add_argument(
        "--task",
        choices=("instance", "semantic", "classify"),
        default="instance",
        help="layout to write (default: instance = COCO)",
    )
    shapes.add_argument("--train", type=int, default=1000, help="training images (default 1000)")
    shapes.add_argument("--val", type=int, default=200, help="validation images (default 200)")
    shapes.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    shapes.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seglab.data.shapes import generate_shapes_summary

    summary = generate_shapes_summary(
        args.out, task=args.task, train=args.train, val=args.val, size=args.size, seed=args.seed
    )
    print(
        f"wrote {summary.out_dir} ({args.task}): {summary.images} images "
        f"({args.train} train, {args.val} val), {summary.objects} objects, "
        f"{summary.classes} classes, {summary.seconds:.1f} s"
    )
    return 0
