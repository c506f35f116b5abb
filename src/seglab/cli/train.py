"""`seglab train CONFIG --out RUN [--set key=value ...]`: train, or resume a run.

`seglab train --out RUN [--set ...]` resumes RUN from its own `config.yaml`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import warnings
from pathlib import Path

from seglab.errors import UserError
from seglab.progress import quiet


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model from a YAML config or a shipped recipe (resumes a run)",
        description="Train the model of CONFIG (a YAML file, or the name of a recipe in "
        "configs/ such as cnn_shapes) into RUN. If RUN has a checkpoint, training resumes "
        "from it with the same config: leave out CONFIG to resume with RUN/config.yaml. "
        "Only budget and bookkeeping keys may change on resume: train.max_steps, "
        "max_minutes, eval_every, checkpoint_every, log_every, workers, device. Ctrl-C or "
        "SIGTERM saves a checkpoint after the current step, then stops.",
    )
    parser.add_argument(
        "config",
        nargs="?",
        metavar="CONFIG",
        help="YAML config file or recipe name (default: RUN/config.yaml, to resume RUN)",
    )
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.lr=0.01 (repeatable)",
    )
    # the name of --quiet before every command had one; scripts may still use it
    parser.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seglab.engine.distributed import from_environment
    from seglab.engine.transcript import transcript
    from seglab.files import check_output_folder

    run_dir = check_output_folder(args.out)
    if not from_environment().main:  # torchrun's other processes: rank 0 prints and logs
        with quiet(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _train(args, run_dir)
    with transcript(run_dir):  # what is printed from here on also goes to RUN/train.log
        return _train(args, run_dir)


def _train(args: argparse.Namespace, run_dir: Path) -> int:
    from seglab.engine.checkpoint import checkpoint_step
    from seglab.engine.config import load_config
    from seglab.engine.trainer import train

    config = load_config(_config_source(args.config, run_dir), args.overrides)
    step = checkpoint_step(run_dir) if run_dir.is_dir() else None
    try:
        metrics = train(config, run_dir, report=print)
    except KeyboardInterrupt:
        print(f"{run_dir}: {_how_to_resume(run_dir, checkpoint_step(run_dir))}", file=sys.stderr)
        raise
    if step is not None and metrics["step"] == step:
        print(
            f"{run_dir}: already finished (train.max_steps or train.max_minutes reached); "
            f"raise them with --set to train longer"
        )
    print(f"{run_dir}: step {metrics.pop('step')}; {_summary(metrics) or 'no validation'}")
    best = run_dir / "best.safetensors"
    print(f"weights: {run_dir / 'model.safetensors'} " + (f"(best: {best})" if best.is_file()
          else "(no val split: no best.safetensors)"))  # fmt: skip
    return 0


def _config_source(config: str | None, run_dir: Path) -> str | Path:
    """CONFIG as given, or the run's own config.yaml to resume it."""
    from seglab.engine.run_dir import CONFIG_NAME

    if config is not None:
        return config
    if not (run_dir / CONFIG_NAME).is_file():
        raise UserError(
            f"{run_dir}: no {CONFIG_NAME} to resume from; give CONFIG (a YAML file or a recipe "
            "such as cnn_shapes) to start a run there"
        )
    return run_dir / CONFIG_NAME


def _how_to_resume(run_dir: Path, step: int | None) -> str:
    if step is None:
        return "stopped before its first checkpoint; rerun the same command to start over"
    return f"stopped; `seglab train --out {run_dir}` resumes it from step {step}"


def _summary(metrics: dict) -> str:
    """The scalar metrics, one level deep (`bbox.AP=0.41`), rounded."""
    parts = []
    for name, value in metrics.items():
        if isinstance(value, dict):
            parts += [f"{name}.{k}={v:.4f}" for k, v in value.items() if isinstance(v, float)]
        elif isinstance(value, float):
            parts.append(f"{name}={value:.4f}")
    return ", ".join(parts)
