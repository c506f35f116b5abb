"""Entry point of the `seglab` command.

Each subcommand lives in its own module exposing `add_parser(subparsers)` (which registers
the subcommand and sets `func`) and a `run(args) -> int`. This is the one place that maps
names to code.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import signal
import sys
import warnings

import seglab
from seglab.errors import SeglabWarning, UserError
from seglab.progress import quiet

# subcommand name -> module under seglab.cli.
SUBCOMMANDS = {
    "data": "seglab.cli.data",
    "train": "seglab.cli.train",
    "eval": "seglab.cli.eval",
    "predict": "seglab.cli.predict",
    "export": "seglab.cli.export",
    "convert": "seglab.cli.convert",
    "proposals": "seglab.cli.proposals",
    "rcnn-svm": "seglab.cli.rcnn_svm",
    "bench": "seglab.cli.bench",
    "explain": "seglab.cli.explain",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seglab",
        description="Train (on one process or several, under torchrun), evaluate, predict "
        "with and export to ONNX a CNN classifier, R-CNN, Fast R-CNN, Faster R-CNN, Mask "
        "R-CNN and U-Net; convert torchvision detection checkpoints.",
    )
    parser.add_argument("--version", action="version", version=f"seglab {seglab.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    for command in _leaf_parsers(subparsers):
        command.add_argument(
            "-q", "--quiet", action="store_true",
            help="no progress display (a bar on a terminal, a line every 30 s in a log)",
        )  # fmt: skip
    return parser


def _leaf_parsers(subparsers: argparse._SubParsersAction) -> list[argparse.ArgumentParser]:
    """The parser of every command that runs: `train`, `data shapes`, `data check`, ..."""
    leaves = []
    for command in subparsers.choices.values():
        # argparse keeps a parser's own subcommands among its actions; it has no public getter
        nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        leaves += _leaf_parsers(nested[0]) if nested else [command]
    return leaves


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 on bad arguments
    with warnings.catch_warnings(), quiet(args.quiet):
        warnings.simplefilter("always", SeglabWarning)
        warnings.showwarning = _one_line_warnings(args.command, warnings.showwarning)
        return _run(args)


def _one_line_warnings(command: str, show_other):
    """`warnings.showwarning` that prints a SeglabWarning as `seglab CMD: warning: ...`."""

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, SeglabWarning):
            print(f"seglab {command}: warning: {message}", file=sys.stderr)
        else:
            show_other(message, category, filename, lineno, file, line)

    return show


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except UserError as error:
        print(f"seglab {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # Commands check their output paths before working; this catches what a check cannot
        # foresee (a disk that fills up, permissions changed while running): one line.
        remedy = _FILE_SYSTEM_REMEDIES.get(error.errno)
        if remedy is None or error.filename is None:
            raise
        print(f"seglab {args.command}: error: {error.filename}: {error.strerror}; {remedy}",
              file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt as interrupt:
        # 128 + the signal's number, as a shell reports a process a signal stopped
        number = getattr(interrupt, "signal_number", signal.SIGINT)
        print(f"seglab {args.command}: stopped by {signal.Signals(number).name}", file=sys.stderr)
        return 128 + number


_FILE_SYSTEM_REMEDIES = {
    errno.EACCES: "choose another path or change its permissions",
    errno.EPERM: "choose another path or change its permissions",
    errno.EROFS: "choose a path on a writable file system",
    errno.ENOTDIR: "a file stands where a folder is needed; choose another path",
    errno.EISDIR: "a folder stands where a file is needed; choose another path",
    errno.EEXIST: "choose another path",
    errno.ENOSPC: "free some disk space or choose another path",
    errno.EDQUOT: "free some disk space or choose another path",
}


if __name__ == "__main__":
    sys.exit(main())
