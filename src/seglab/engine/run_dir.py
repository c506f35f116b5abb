"""The run folder: created on first use, and its `config.yaml` guarded on resume.

A run resumes only with the config it was started with. Keys that set the budget or the
bookkeeping (how long, how often to log/evaluate/save, where to compute) may change between
sessions; any other difference is refused, since the weights would no longer come from
one recipe.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from seglab.engine.checkpoint import CHECKPOINT_NAME
from seglab.engine.config import Config, config_to_dict, save_config
from seglab.engine.io import check_output_folder
from seglab.errors import UserError

CONFIG_NAME = "config.yaml"
CHANGEABLE_ON_RESUME = (
    "train.max_steps",
    "train.max_minutes",
    "train.eval_every",
    "train.checkpoint_every",
    "train.log_every",
    "train.workers",
    "train.device",
)


def prepare_run_dir(run_dir: Path) -> Path:
    check_output_folder(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def reconcile_config(run_dir: Path, config: Config) -> Config:
    """Refuse a resume whose config differs beyond the changeable keys; save the config."""
    saved_path = run_dir / CONFIG_NAME
    if (run_dir / CHECKPOINT_NAME).is_file() and saved_path.is_file():
        saved = _flatten(yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {})
        given = _flatten(config_to_dict(config))
        changed = sorted(
            key
            for key in saved.keys() | given.keys()
            if saved.get(key) != given.get(key) and key not in CHANGEABLE_ON_RESUME
        )
        if changed:
            key = changed[0]
            raise UserError(
                f"{saved_path}: the run was started with {key}={saved.get(key)!r}, now "
                f"{given.get(key)!r} ({len(changed)} key(s) differ: {', '.join(changed)}); "
                f"resume with the same config, or use a new --out folder"
            )
    save_config(config, saved_path)
    return config


def _flatten(mapping: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and prefix.count(".") < 1:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
