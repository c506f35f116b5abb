"""Entry point of the `seglab` command.

Each subcommand lives in its own module exposing `add_parser(subparsers)` (which registers
the subcommand and sets `func`) and a `run(args) -> int`. This is the one place that maps
names to code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from seglab.errors import UserError

# subcommand name -> module under seglab.cli.
SUBCOMMANDS = {
    "data": "seglab.cli.data",
    "train": "seglab.cli.train",
    "eval": "seglab.cli.eval",
    "predict": "seglab.cli.predict",
    "convert": "seglab.cli.convert",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seglab",
        description="Train, evaluate and predict with a CNN classifier, Faster R-CNN, "
        "Mask R-CNN and U-Net; convert torchvision detection checkpoints.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 on bad arguments
    try:
        return int(args.func(args) or 0)
    except UserError as error:
        print(f"seglab {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"seglab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
