"""`seglab explain`: the study text's figures as a page, drawn by seglab's own code.

seglab explain [--model RUN/model.safetensors] [--image IMG] --out DIR [--only NAME ...]
seglab explain --list
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from seglab.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="draw the study text's figures from live models into DIR/index.html",
        description="Draw the figures of the study text (convolution, pooling, CNN, R-CNN, "
        "selective search, Fast/Faster/Mask R-CNN, anchors, FPN, RoIAlign, mask head, U-Net) "
        "with seglab's own code on a real image, into DIR/index.html: one self-contained "
        "page (pictures embedded, no script, works offline), the pictures also under "
        "DIR/images/ with the study text's file names. Without --model, small models are "
        "built and trained for seconds; without --image, a generated shapes scene is used.",
    )
    parser.add_argument("--out", metavar="DIR", help="output folder (required unless --list)")
    parser.add_argument(
        "--model", metavar="MODEL", help="RUN/model.safetensors: shown by the figures of its kind"
    )
    parser.add_argument("--image", metavar="IMG", help="image file to draw on (default: generated)")
    parser.add_argument(
        "--only", action="append", metavar="NAME",
        help="make only this figure (repeatable, or comma-separated; --list names them)",
    )  # fmt: skip
    parser.add_argument("--list", action="store_true", help="name the figures and stop")
    parser.add_argument(
        "--seed", type=int, default=0, help="generated scene and small models' seed (0)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seglab.explain.page import FIGURES, select_figures

    if args.list:
        width = max(len(spec.name) for spec in FIGURES)
        for number, spec in enumerate(FIGURES, start=1):
            print(f"{number:2d}  {spec.name:<{width}}  {spec.title}")
        return 0
    if not args.out:
        raise UserError("--out DIR is required (or --list)")
    names = [name.strip() for value in args.only or [] for name in value.split(",") if name.strip()]
    specs = select_figures(names)
    return _explain(args, specs)


def _explain(args: argparse.Namespace, specs) -> int:
    from seglab.explain.context import Context, generated_image, load_page_image
    from seglab.explain.page import make_figures, models_to_train, write_page
    from seglab.files import check_output_folder
    from seglab.models.zoo import load_model

    out_dir = check_output_folder(args.out)
    page_image = load_page_image(Path(args.image)) if args.image else generated_image(args.seed)
    user_model = load_model(args.model) if args.model else None
    context = Context(
        page_image, user_model=user_model, user_model_path=args.model,
        trained=models_to_train(specs), seed=args.seed, log=print,
    )  # fmt: skip
    started = time.perf_counter()
    figures = []
    for number, spec in enumerate(specs, start=1):  # a figure may train a model: say which
        step = f"[{number}/{len(specs)}] {spec.name}"
        print(f"{step}: {spec.title} ...", flush=True)
        begun = time.perf_counter()
        figures += make_figures(context, [spec])
        print(f"{step}: {time.perf_counter() - begun:.1f} s", flush=True)
    page = write_page(out_dir, specs, figures, context)
    size_mb = page.stat().st_size / 2**20
    print(f"wrote {page} ({len(figures)} figures, {size_mb:.1f} MB, "
          f"{time.perf_counter() - started:.0f} s)")  # fmt: skip
    return 0
