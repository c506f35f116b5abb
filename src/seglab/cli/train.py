"""`seglab train CONFIG --out RUN [--set key=value ...]`: train, or resume a run."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model from a YAML config or a shipped recipe (resumes a run)",
        description="Train the model of CONFIG (a YAML file, or the name of a recipe in "
        "configs/ such as cnn_shapes) into RUN. If RUN has a checkpoint, training resumes "
        "from it with the same config (only budget and bookkeeping keys may change: "
        "train.max_steps, max_minutes, eval_every, checkpoint_every, log_every, workers, "
        "device).",
    )
    parser.add_argument("config", metavar="CONFIG", help="YAML config file or recipe name")
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
    from seglab.engine.checkpoint import checkpoint_step
    from seglab.engine.config import load_config
    from seglab.engine.io import check_output_folder
    from seglab.engine.trainer import train

    config = load_config(args.config, args.overrides)
    run_dir = check_output_folder(args.out)
    step = checkpoint_step(run_dir) if run_dir.is_dir() else None
    if step is not None:
        print(f"resuming {run_dir} from {run_dir / 'checkpoint.pt'} (step {step})")
    try:
        metrics = train(config, run_dir)
    except KeyboardInterrupt:
        step = checkpoint_step(run_dir)
        start = f"step {step}" if step is not None else "the start (no checkpoint yet)"
        print(f"{run_dir}: rerun the same command to resume from {start}", file=sys.stderr)
        raise
    if step is not None and metrics["step"] == step:
        print(
            f"{run_dir}: already finished (train.max_steps or train.max_minutes reached); "
            f"raise them with --set to train longer"
        )
    print(f"{run_dir}: step {metrics.pop('step')}; {_summary(metrics)}")
    print(f"weights: {run_dir / 'model.safetensors'} (best: {run_dir / 'best.safetensors'})")
    return 0


def _summary(metrics: dict) -> str:
    """The scalar metrics, one level deep (`bbox.AP=0.41`), rounded."""
    parts = []
    for name, value in metrics.items():
        if isinstance(value, dict):
            parts += [f"{name}.{k}={v:.4f}" for k, v in value.items() if isinstance(v, float)]
        elif isinstance(value, float):
            parts.append(f"{name}={value:.4f}")
    return ", ".join(parts)
