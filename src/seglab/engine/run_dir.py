"""The run folder: created once a run is accepted, and its `config.yaml` guarded on resume.

A run resumes only with the config it was started with (`seglab train --out RUN` alone
reads it back from `RUN/config.yaml`). Keys that set the budget or the bookkeeping (how
long, how often to log/evaluate/save, where to compute) may change between sessions; any
other difference is refused, since the weights would no longer come from one recipe. A
value given again unchanged is no difference, nor is a path spelled another way.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from seglab.engine.checkpoint import CHECKPOINT_NAME
from seglab.engine.config import Config, config_to_dict, save_config
from seglab.errors import UserError
from seglab.files import check_output_folder

CONFIG_NAME = "config.yaml"
CHANGEABLE_ON_RESUME = (
    "train.max_steps",
    "train.max_minutes",
    "train.eval_every",
    "train.checkpoint_every",
    "train.log_every",
    "train.workers",
    "train.device",
    "train.tensorboard",
    "train.sync_batchnorm",
)
PATH_KEYS = (  # `/tmp/x/`, `/tmp/x` and `x` from /tmp are one folder
    "data.root",
    "data.train_json",
    "data.train_images",
    "data.val_json",
    "data.val_images",
    "model.backbone_weights",
    "train.init",
)


def prepare_run_dir(run_dir: Path, config: Config) -> Path:
    """Create the run folder and write its `config.yaml`: called once everything that may
    refuse the run (config, data, model) has been checked, so a refused run leaves nothing."""
    check_output_folder(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / CONFIG_NAME)
    return run_dir


def check_resume(run_dir: Path, config: Config) -> None:
    """Refuse to resume a run with a config that differs beyond the changeable keys."""
    saved_path = run_dir / CONFIG_NAME
    if not ((run_dir / CHECKPOINT_NAME).is_file() and saved_path.is_file()):
        return
    saved = _flatten(yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {})
    given = _flatten(config_to_dict(config))
    changed = sorted(
        key
        for key in saved.keys() | given.keys()
        if key not in CHANGEABLE_ON_RESUME and not _same(key, saved.get(key), given.get(key))
    )
    if changed:
        key = changed[0]
        raise UserError(
            f"{saved_path}: the run was started with {key}={saved.get(key)!r}, now "
            f"{given.get(key)!r} ({len(changed)} key(s) differ: {', '.join(changed)}); "
            f"resume with `seglab train --out {run_dir}` alone (it reads this config), or "
            f"use a new --out folder"
        )


def _same(key: str, saved, given) -> bool:
    """Equal values; paths are equal when they name the same file or folder."""
    if key in PATH_KEYS and isinstance(saved, str) and isinstance(given, str):
        return Path(saved).resolve() == Path(given).resolve()
    return saved == given


def _flatten(mapping: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and prefix.count(".") < 1:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
