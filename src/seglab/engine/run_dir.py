"""The run folder: created once a run is accepted, and its `config.yaml` guarded on resume.

A run resumes only with the config it was started with (`seglab train --out RUN` alone
reads it back from `RUN/config.yaml`). Keys that set the budget or the bookkeeping (how
long, how often to log/evaluate/save, where to compute) may change between sessions; any
other difference is refused, since the weights would no longer come from one recipe. A
value given again unchanged is no difference, nor is a path spelled another way.

A run folder is locked while a process trains into it (`run_lock`): a second `seglab train`
on the same RUN is refused with the first one's pid, instead of both writing into it.
"""

from __future__ import annotations

import fcntl
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from seglab.engine.checkpoint import CHECKPOINT_NAME, checkpoint_step, read_checkpoint
from seglab.engine.config import (
    PATH_KEYS,
    Config,
    config_to_dict,
    renamed_train_keys,
    save_config,
)
from seglab.engine.logging import METRICS_NAME, MetricsLog
from seglab.errors import UserError
from seglab.files import check_output_folder
from seglab.models.zoo import read_card

CONFIG_NAME = "config.yaml"
LOCK_NAME = ".lock"
CHANGEABLE_ON_RESUME = (
    "train.max_steps",
    "train.max_minutes",
    "train.planned_steps",  # recorded by the run itself (engine/budget.py)
    "train.eval_every",
    "train.checkpoint_every",
    "train.log_every",
    "train.workers",
    "train.device",
    "train.tensorboard",
    "train.sync_batchnorm",
    "train.patience",  # when to stop (engine/convergence.py): the steps taken are the same
    "train.min_delta",
)
BUDGET_KEYS = ("train.max_steps", "train.max_minutes")


def prepare_run_dir(run_dir: Path, config: Config) -> Path:
    """Create the run folder and write its `config.yaml`: called once everything that may
    refuse the run (config, data, model) has been checked, so a refused run leaves nothing."""
    check_output_folder(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if run_dir.resolve() in _LOCKS:  # a new folder: locked now, before anything is written
        _LOCKS[run_dir.resolve()].acquire()
    save_config(config, run_dir / CONFIG_NAME)
    return run_dir


class RunLock:
    """The lock on one run folder: the kernel's `flock` on `RUN/.lock`, which holds the pid
    of the process that has it (for the refusal's message).

    The kernel releases a flock when its process ends, however it ends (exit, crash,
    SIGKILL): a `.lock` left by a dead process names a pid but locks nothing.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / LOCK_NAME
        self._descriptor: int | None = None

    def acquire(self) -> None:
        """Take the lock (again: nothing), or raise UserError naming the process holding it."""
        if self._descriptor is not None:
            return
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
            os.close(descriptor)
            raise UserError(
                f"{self.run_dir}: another process (pid {holder or 'unknown'}) is training into "
                f"this run folder; wait for it to end, or use another --out"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        self._descriptor = descriptor

    def release(self) -> None:
        if self._descriptor is not None:
            os.ftruncate(self._descriptor, 0)  # no pid: nobody holds it
            os.close(self._descriptor)  # closing releases the flock
            self._descriptor = None


_LOCKS: dict[Path, RunLock] = {}  # the folders this process locks, by resolved path


@contextmanager
def run_lock(run_dir: Path, *, enabled: bool = True) -> Iterator[None]:
    """Hold `run_dir`'s lock while the block runs: taken at once when the folder exists,
    else by `prepare_run_dir` when it creates it (a refused run leaves no folder).

    Args:
        enabled: False for the other processes of a torchrun run (rank 0 holds the lock).

    Raises:
        UserError: another process holds the lock.
    """
    if not enabled:
        yield
        return
    check_output_folder(run_dir)  # one line for a folder that cannot be written
    lock = RunLock(run_dir)
    key = run_dir.resolve()
    if run_dir.is_dir():
        lock.acquire()
    _LOCKS[key] = lock
    try:
        yield
    finally:
        _LOCKS.pop(key, None)
        lock.release()


def check_resume(run_dir: Path, config: Config) -> None:
    """Refuse to resume a run with a config that differs beyond the changeable keys."""
    saved_path, saved = run_dir / CONFIG_NAME, _saved_config(run_dir)
    if saved is None:
        return
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


@dataclass(frozen=True)
class Resume:
    """What a run folder says before training starts (rank 0 reads it for every process).

    Attributes:
        checkpoint: `RUN/checkpoint.pt` as read (`read_checkpoint`), or None: a new run.
        budget_changed: the budget differs from `RUN/config.yaml`'s (`budget_changed`).
    """

    checkpoint: dict[str, Any] | None
    budget_changed: bool


def read_resume(run_dir: Path, config: Config) -> Resume:
    """Refuse a resume with another config (`check_resume`), then read what the run resumes
    from: the checkpoint, and whether a budget plan must be made again."""
    check_resume(run_dir, config)
    path = run_dir / CHECKPOINT_NAME
    checkpoint = read_checkpoint(path) if path.is_file() else None
    return Resume(checkpoint, budget_changed(run_dir, config))


def budget_changed(run_dir: Path, config: Config) -> bool:
    """Whether a resume gives another budget (`max_steps`, `max_minutes`) than the run's
    config.yaml: a `cosine_budget` plan made for the old budget is then made again."""
    saved, given = _saved_config(run_dir), _flatten(config_to_dict(config))
    return saved is not None and any(saved.get(key) != given.get(key) for key in BUDGET_KEYS)


def _saved_config(run_dir: Path) -> dict | None:
    """The flattened `RUN/config.yaml` of a run that has a checkpoint to resume, else None."""
    saved_path = run_dir / CONFIG_NAME
    if not ((run_dir / CHECKPOINT_NAME).is_file() and saved_path.is_file()):
        return None
    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    if isinstance(saved.get("train"), dict):  # earlier spellings as today's (said on load)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            saved["train"] = renamed_train_keys(saved["train"], str(saved_path))
    return _flatten(saved)


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


def run_evaluation(
    model_path: str | Path, data_dir: str | None, split: str, precision: str
) -> dict[str, Any] | None:
    """The record of the run's own last evaluation (`metrics.jsonl`: metrics, `step`,
    `split`, `primary`) when it scored exactly what is asked: RUN/model.safetensors (written
    with the run's checkpoint) at the checkpoint's step, on the val split of the data it was
    trained on (`data_dir` None or that folder), at the same `precision`; else None."""
    model = Path(model_path)
    run_dir = model.parent
    log = MetricsLog(run_dir / METRICS_NAME)
    if model.name != "model.safetensors" or split != "val" or not log.path.is_file():
        return None
    card = read_card(model)
    trained_on, train = card.data.get("root"), (card.config or {}).get("train", {})
    if data_dir is not None and (
        trained_on is None or Path(data_dir).resolve() != Path(trained_on).resolve()
    ):
        return None
    saved = train.get("precision") or {"none": "fp32"}.get(train.get("amp"), train.get("amp"))
    if (saved or "fp32") != precision:  # `amp`: the older name of train.precision
        return None
    evaluations = [record for record in log.read() if record.get("split") == "val"]
    if not evaluations or evaluations[-1]["step"] != checkpoint_step(run_dir):
        return None
    return evaluations[-1]
