"""`seglab train CONFIG --out RUN [--set key=value ...]`: train, or resume a run.

`seglab train --out RUN [--set ...]` resumes RUN from its own `config.yaml`;
`seglab train --list` describes the shipped recipes. Everything that can be checked
without tensors (the config, its files, RUN) is checked before torch is imported.
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

CONFIG_NAME = "config.yaml"  # seglab.engine.run_dir's, without importing torch for it


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
        help="YAML config file or recipe name (default: RUN/config.yaml, to resume RUN); "
        "--list shows the recipes",
    )
    parser.add_argument("--out", metavar="RUN", help="run folder (required to train)")
    parser.add_argument(
        "--list",
        action="store_true",
        help="list the shipped recipes, one line each (model, data, budget, measured result) "
        "and exit",
    )
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
    from seglab.engine.config import check_model_args, check_paths_exist, load_config
    from seglab.files import check_output_folder

    if args.list:
        from seglab.engine.recipes import recipe_lines

        print("\n".join(recipe_lines()))
        return 0
    if args.out is None:
        raise UserError("--out RUN is required: the run folder to train into (or resume)")
    run_dir = check_output_folder(args.out)
    source = _config_source(args.config, run_dir)
    # no torch up to check_model_args: these mistakes answer at once
    config = load_config(source, args.overrides, model_args=False)
    if args.config is not None:
        _check_resumed_paths(run_dir, config)
    check_paths_exist(config, str(source), args.overrides)
    check_model_args(config, str(source), args.overrides)
    return _train_with_log(args, run_dir, config)


def _train_with_log(args: argparse.Namespace, run_dir: Path, config) -> int:
    from seglab.engine.distributed import from_environment
    from seglab.engine.transcript import transcript

    if not from_environment().main:  # torchrun's other processes: rank 0 prints and logs
        with quiet(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _train(run_dir, config)
    with transcript(run_dir):  # what is printed from here on also goes to RUN/train.log
        return _train(run_dir, config)


def _train(run_dir: Path, config) -> int:
    from seglab.engine.checkpoint import checkpoint_step
    from seglab.engine.trainer import train

    step = checkpoint_step(run_dir) if run_dir.is_dir() else None
    try:
        metrics = train(config, run_dir, report=print)
    except KeyboardInterrupt:
        print(f"{run_dir}: {_how_to_resume(run_dir, checkpoint_step(run_dir))}", file=sys.stderr)
        raise
    ended = metrics.pop("ended", None)
    if step is not None and metrics["step"] == step:
        print(f"{run_dir}: already finished ({_how_to_train_longer(ended)})")
    print(f"{run_dir}: step {metrics.pop('step')}; {_summary(metrics) or 'no validation'}")
    best = run_dir / "best.safetensors"
    print(f"weights: {run_dir / 'model.safetensors'} " + (f"(best: {best})" if best.is_file()
          else "(no val split: no best.safetensors)"))  # fmt: skip
    if ended is not None:
        print(ended)  # the last line: what ended the run (engine/budget.end_reason)
    return 0


def _how_to_train_longer(ended: str | None) -> str:
    """What a finished run resumed again needs: a larger budget, or no convergence stop."""
    if ended is not None and ended.startswith("ended: converged"):
        return ("converged; --set train.patience=null, or a larger one, trains it on within "
                "its budget")  # fmt: skip
    return "train.max_steps or train.max_minutes reached; raise them with --set to train longer"


def _config_source(config: str | None, run_dir: Path) -> str | Path:
    """CONFIG as given, or the run's own config.yaml to resume it."""
    if config is not None:
        return config
    if not (run_dir / CONFIG_NAME).is_file():
        raise UserError(
            f"{run_dir}: no {CONFIG_NAME} to resume from; give CONFIG (a YAML file or a recipe "
            "such as cnn_shapes) to start a run there"
        )
    return run_dir / CONFIG_NAME


def _check_resumed_paths(run_dir: Path, config) -> None:
    """A run resumed with CONFIG must read the files it was started with.

    Checked here, before the data is opened: a recipe given again without the run's
    `--set data.root=...` would otherwise fail on its default data root, a message that
    does not say the run knows where its data is. (The trainer compares the other keys.)
    """
    import yaml

    from seglab.engine.config import PATH_KEYS, config_to_dict

    saved_path = run_dir / CONFIG_NAME
    if not saved_path.is_file():
        return
    saved, given = (
        yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {},
        config_to_dict(config),
    )
    for dotted in PATH_KEYS:
        section, key = dotted.split(".")
        before, now = (saved.get(section) or {}).get(key), given[section].get(key)
        if before != now and (before is None or now is None or _resolved(before) != _resolved(now)):
            raise UserError(
                f"{run_dir}: this run was started with {dotted}={before} (now {now}); resume "
                f"it with `seglab train --out {run_dir}`, which reads {saved_path}, or give "
                f"--set {dotted}={before} again"
            )


def _resolved(path: str) -> Path:
    return Path(path).resolve()


def _how_to_resume(run_dir: Path, step: int | None) -> str:
    if step is None:
        return "stopped before its first checkpoint; rerun the same command to start over"
    return f"stopped; `seglab train --out {run_dir}` resumes it from step {step}"


def _summary(metrics: dict) -> str:
    """The scalar metrics, one level deep (`bbox.AP=0.41`), rounded; an undefined one
    (COCO's -1: no object of that size) `n/a`, as `seglab eval`'s table prints it."""
    from seglab.cli.eval import metric_text

    parts = []
    for name, value in metrics.items():
        if isinstance(value, dict):
            parts += [f"{name}.{k}={metric_text(v)}" for k, v in value.items()
                      if isinstance(v, float)]  # fmt: skip
        elif isinstance(value, float):
            parts.append(f"{name}={metric_text(value)}")
    return ", ".join(parts)
