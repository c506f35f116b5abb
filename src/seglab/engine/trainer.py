"""One trainer for every model that implements `forward_with_losses(images, targets)`.

`train(config, run_dir)` builds the datasets and the model, resumes from
`RUN/checkpoint.pt` when there is one, and loops: a step is forward with losses, backward,
optional gradient clipping, optimizer and schedule step. Every `log_every` steps it appends
the mean loss, learning rate and images/s to `metrics.jsonl`; every `eval_every` steps it
evaluates (validation loss and the task's metric, `seglab.evaluation.evaluate`), keeps
`best.safetensors` and redraws `plots/`; every `checkpoint_every` steps it writes
`checkpoint.pt` and `model.safetensors`. It stops at `max_steps` or when `max_minutes` of
wall-clock time are spent (over all sessions of the run), at the step count that a
`cosine_budget` schedule planned for its minutes (`seglab.engine.budget`), or at the
evaluation that finds it converged (`train.patience`, `seglab.engine.convergence`), then
evaluates and saves. Ctrl-C
or SIGTERM stops it after the current step with a checkpoint of that step
(`seglab.engine.interrupt`). Data without a val split trains all the same, with one warning:
no evaluation, no `best.safetensors`.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from seglab import data as seglab_data
from seglab import evaluation
from seglab.data.packing import unpack
from seglab.data.splits import data_name
from seglab.engine import convergence, distributed
from seglab.engine.budget import StepClock, end_reason, needs_plan, plan_steps
from seglab.engine.checkpoint import (
    CHECKPOINT_NAME,
    RunState,
    restore_checkpoint,
    rng_states,
    save_checkpoint,
    saved_world_size,
)
from seglab.engine.config import (
    Config,
    config_to_dict,
    config_warnings,
    save_config,
    with_planned_steps,
)
from seglab.engine.data_order import ResumableBatchSampler, SeededItems, preserved_rng
from seglab.engine.device import resolve_device
from seglab.engine.interrupt import Interrupted, StopRequest, ignore_interrupts
from seglab.engine.logging import METRICS_NAME, MetricsLog, write_plots
from seglab.engine.optim import build_optimizer, build_scheduler
from seglab.engine.resolve import recorded_options, resolve_config
from seglab.engine.run_dir import (
    CONFIG_NAME,
    prepare_run_dir,
    read_resume,
    run_lock,
)
from seglab.engine.tracking import TensorBoardLog
from seglab.errors import SeglabWarning, UserError
from seglab.files import check_output_folder
from seglab.models.backbones.pretrained import load_backbone_weights
from seglab.models.card import ModelCard
from seglab.models.transfer import init_from
from seglab.models.zoo import build_from_card, data_proposals, model_task, save_model
from seglab.ops.precision import autocast, bf16_note
from seglab.progress import progress

_NO_VALIDATION = (
    "no val split (data.val_json, or val.json / val/ under data.root): training runs "
    "without validation, so no evaluation and no best-model selection (no best.safetensors)"
)


@dataclass
class Session:
    """Everything one call of `train` works with."""

    config: Config
    run_dir: Path
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: ResumableBatchSampler
    train_set: Any
    val_set: Any
    state: RunState
    log: MetricsLog
    progress: bool
    report: Callable[[str], None]
    tensorboard: TensorBoardLog | None = None  # train.tensorboard: true
    processes: distributed.Processes = field(default_factory=distributed.Processes)
    forward: Callable | None = None  # (images, targets) -> (outputs, losses), DDP-wrapped


def train(
    config: Config,
    run_dir: str | Path,
    *,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) the run in `run_dir`; return the final evaluation's metrics.

    `report` receives the lines that say where the run's weights came from (a resumed
    checkpoint, `model.backbone_weights`, `train.init`), the planned image size and the
    budget plan; the command line prints them.
    """
    # one process trains into a run folder at a time; under torchrun rank 0 locks it for all
    with run_lock(Path(run_dir), enabled=distributed.from_environment().main):
        session = _open_session(config, Path(run_dir), progress, report or (lambda line: None))
        try:
            if not _finished(session):
                _loop(session)
            return _finish(session)
        finally:
            if session.tensorboard is not None:
                session.tensorboard.close()
            distributed.stop()


def _open_session(
    config: Config, run_dir: Path, progress: bool, report: Callable[[str], None]
) -> Session:
    check_output_folder(run_dir)  # created below, once nothing has refused the run
    for message in config_warnings(config):
        warnings.warn(message, SeglabWarning, stacklevel=3)
    _set_threads(config.train.workers)
    processes = distributed.from_environment()  # torchrun's processes, or this one alone
    # joined before the data is read: a process that stops on its data or config (one
    # machine's files) ends the others' wait at their next exchange instead of a timeout
    device = distributed.start(processes, resolve_device(config.train.device))
    train_set, val_set = _datasets(config)
    # a resume keeps the model options its run planned (RUN/config.yaml, read by rank 0)
    config = distributed.from_rank0(lambda: recorded_options(config, run_dir))
    config = resolve_config(config, train_set, report if processes.main else lambda line: None)
    # RUN is where rank 0 runs: rank 0 reads it for all (other machines need no copy of it)
    distributed.check_checkpoint_on_rank0(run_dir / CHECKPOINT_NAME)
    resume = distributed.from_rank0(lambda: read_resume(run_dir, config))
    if resume.budget_changed:  # a plan made for another budget is made again
        config = with_planned_steps(config, None)
    torch.manual_seed(config.seed)
    distributed.check_world_size(processes, config.train.batch_size, len(train_set))
    if train_set.scale_plan is not None and processes.main:
        report(train_set.scale_plan.reason)
    if bf16_note(config.train.precision, device) and processes.main:
        report(bf16_note(config.train.precision, device))
    model = _build_model(config, train_set, device)
    if config.train.sync_batchnorm:
        model = distributed.sync_batchnorm(model, processes, device)
    if resume.checkpoint is None:  # a resumed run's weights: its checkpoint's
        _initial_weights(model, config, report)
    optimizer = build_optimizer(model, config.train)
    state = RunState(planned_steps=config.train.planned_steps)
    # the closure reads `state` as it is at each step: the one loaded below on a resume
    scheduler = build_scheduler(optimizer, config.train, lambda: state.planned_steps)
    log = MetricsLog(run_dir / METRICS_NAME)
    if resume.checkpoint is not None:
        note = distributed.world_size_note(saved_world_size(resume.checkpoint),
                                           processes, config.train.batch_size)  # fmt: skip
        if note is not None and processes.main:
            warnings.warn(f"{run_dir}: {note}", SeglabWarning, stacklevel=3)
        state = restore_checkpoint(
            resume.checkpoint, run_dir / CHECKPOINT_NAME, model=model, optimizer=optimizer,
            scheduler=scheduler, rank=processes.rank, world_size=processes.world_size,
        )  # fmt: skip
        config = _resumed_plan(config, state, resume.budget_changed)
        _refresh_lr(scheduler)  # the budget (max_steps, max_minutes) may have changed
        if processes.main:  # said once everything has accepted the resume
            report(f"resuming {run_dir} from {run_dir / CHECKPOINT_NAME} (step {state.step})")
    if processes.main:  # only rank 0 writes; the others wait for the folder
        prepare_run_dir(run_dir, config)
    distributed.barrier()
    if log.path.is_file() and processes.main:
        log.truncate_after(state.step)  # lines of an interrupted session after its checkpoint
    return Session(
        config=config, run_dir=run_dir, device=device, model=model, optimizer=optimizer,
        scheduler=scheduler, train_set=train_set, val_set=val_set, state=state, log=log,
        sampler=ResumableBatchSampler(  # the global batch: batch_size per process
            len(train_set), config.train.batch_size * processes.world_size, seed=config.seed,
            start_step=state.step,
        ),
        progress=progress and processes.main, report=report, processes=processes,
        tensorboard=TensorBoardLog(run_dir, state.step)
        if config.train.tensorboard and processes.main else None,
        forward=distributed.training_forward(model, processes, device),
    )  # fmt: skip


def _datasets(config: Config) -> tuple[Any, Any]:
    """The run's train and val datasets (val None without a val split, with a warning):
    every file checked before step 1, the images' channels against the model's."""
    train_set, val_set = seglab_data.build_training_datasets(
        config.data,
        task=model_task(config.model.name),
        in_channels=int(config.model.args.get("in_channels", 3)),
        proposals=data_proposals(config.model.name, config.model.args),
    )
    if len(train_set) == 0:
        raise UserError(f"{data_name(config.data)}: the train split has no images")
    if val_set is None:
        unused = "; train.patience is unused: the run uses its budget"
        message = _NO_VALIDATION + (unused if config.train.patience is not None else "")
        warnings.warn(message, SeglabWarning, stacklevel=4)
    return train_set, val_set


def _resumed_plan(config: Config, state: RunState, replan: bool) -> Config:
    """The config of a resumed run with its checkpoint's budget plan written in (the recipe
    and --set do not give it); no plan when the budget changed: it is made again."""
    if replan:
        state.planned_steps = None
    elif state.planned_steps is not None and config.train.planned_steps is None:
        return with_planned_steps(config, state.planned_steps)
    return config


def _build_model(config: Config, train_set: Any, device: torch.device) -> nn.Module:
    """The model of the recipe, with a card that names the data's classes and the recipe."""
    category_ids = getattr(train_set, "category_ids", None)  # COCO data only
    card = ModelCard(
        arch=config.model.name,
        arch_args={"num_classes": config.model.num_classes, **config.model.args},
        task=model_task(config.model.name),
        class_names=tuple(train_set.class_names),
        category_ids=None if category_ids is None else tuple(category_ids),
        config=config_to_dict(config),
    )
    return build_from_card(card).to(device).train()


def _initial_weights(model: nn.Module, config: Config, report: Callable[[str], None]) -> None:
    """ImageNet weights into the ResNet backbone, then every tensor of a whole model file
    that fits (`train.init`, which therefore wins where both give a tensor)."""
    lines = []
    if config.model.backbone_weights is not None:
        lines += load_backbone_weights(model, config.model.backbone_weights)
    if config.train.init is not None:
        lines += init_from(model, config.train.init).lines()
    for line in lines:
        report(line)


def _set_threads(workers: int) -> None:
    """Respect OMP_NUM_THREADS; otherwise leave one core to each data-loading worker."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))


def _refresh_lr(scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Set each group's lr from the schedule at the loaded step, not the checkpoint's value
    (which the old budget gave)."""
    for group, base_lr, factor in zip(
        scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base_lr * factor(scheduler.last_epoch)


def _last_step(session: Session) -> int:
    """max_steps, or the budget plan when it is shorter."""
    cfg = session.config.train
    planned = cfg.planned_steps or session.state.planned_steps
    if cfg.schedule != "cosine_budget" or planned is None:
        return cfg.max_steps
    return min(cfg.max_steps, planned)


def _finished(session: Session) -> bool:
    cfg, state = session.config.train, session.state
    over_budget = cfg.max_minutes is not None and state.elapsed_s >= 60 * cfg.max_minutes
    return state.step >= _last_step(session) or over_budget or convergence.converged(cfg, state)


def _loop(session: Session) -> None:
    cfg, state = session.config.train, session.state
    batches = iter(_train_loader(session))
    window = _LossWindow()
    started, elapsed_before = time.monotonic(), state.elapsed_s
    clock = StepClock(cfg, state.step) if needs_plan(cfg) and not state.planned_steps else None
    bar = progress(desc="train", total=_last_step(session), initial=state.step, unit="step",
                   enabled=session.progress)  # fmt: skip
    with bar, StopRequest() as stop:
        try:
            while not _finished(session):
                batch = unpack(next(batches))  # packed by a worker: seglab.data.packing
                losses = _train_step(session, batch)
                state.step += 1
                state.elapsed_s = elapsed_before + time.monotonic() - started
                step_s = clock and clock.observe(state.step, state.elapsed_s)
                if step_s:  # the end of the measured steps: before the cosine needs the plan
                    _plan_budget(session, step_s)
                    bar.total = _last_step(session)
                session.scheduler.step()
                window.add(losses, len(batch[0]))
                bar.update(1)
                _periodic(session, window, bar)
                stopping = distributed.any_process(stop.signal_number is not None, session.device)
                if stopping and not _finished(session):
                    _stop(session, stop.signal_number or signal.SIGTERM)
        finally:
            del batches  # stop the loader's worker processes now, also when interrupted


def _plan_budget(session: Session, step_s: float) -> None:
    """Fix the steps of a `cosine_budget` run from its measured step and evaluation times,
    the same on every process; record the plan in RUN/config.yaml and say it."""
    cfg, state = session.config.train, session.state
    eval_s = 0.0
    if session.val_set is not None:
        with preserved_rng(cuda=session.device.type == "cuda"):
            eval_s = evaluation.seconds_per_pass(
                session.model, session.val_set, batch_size=cfg.batch_size,
                device=session.device,
                shard=(session.processes.rank, session.processes.world_size),
            )  # fmt: skip
    measured = distributed.mean_over_processes(
        {"step_s": step_s, "eval_s": eval_s, "elapsed_s": state.elapsed_s}, session.device
    )
    plan = plan_steps(cfg, step=state.step, **measured)
    state.planned_steps = plan.steps
    session.config = with_planned_steps(session.config, plan.steps)
    if session.processes.main:
        save_config(session.config, session.run_dir / CONFIG_NAME)
        session.report(plan.describe(cfg))


def _periodic(session: Session, window: _LossWindow, bar: Any) -> None:
    """Logging, evaluation and checkpointing due after the step just taken."""
    cfg, step = session.config.train, session.state.step
    last = _finished(session)
    logged = step % cfg.log_every == 0 or last
    if logged:
        _log_window(session, window, bar)
    if (step % cfg.eval_every == 0 or last) and session.val_set is None:
        if session.processes.main:
            write_plots(session.log.read(), session.run_dir / "plots")
    elif step % cfg.eval_every == 0 or last:
        _evaluate(session)
    if not last and _finished(session):  # converged at this evaluation: its step is the last
        last = True
        if not logged:
            _log_window(session, window, bar)
    if step % cfg.checkpoint_every == 0 or last:
        _save(session)


def _log_window(session: Session, window: _LossWindow, bar: Any) -> None:
    """The mean losses since the last log line: into metrics.jsonl, TensorBoard and the bar."""
    cfg, state = session.config.train, session.state
    record = window.flush(state.step, session.optimizer.param_groups[0]["lr"])
    record = distributed.reduce_record(record, session.device)  # over the processes
    record["elapsed_s"] = round(state.elapsed_s, 3)
    if session.processes.main:
        session.log.append(record)
    if session.tensorboard is not None:
        session.tensorboard.train(record)
    shown = {"loss": f"{record['loss']:.4f}", "img_s": f"{record['images_per_s']:.1f}"}
    if cfg.max_minutes is not None:  # the time used of the budget (the bar's ETA: steps)
        shown["budget"] = f"{state.elapsed_s / 60:.1f}/{cfg.max_minutes:.3g} min"
    bar.set_postfix(**shown)


def _stop(session: Session, signal_number: int) -> None:
    """Ctrl-C or SIGTERM: checkpoint the step just finished (unless `_periodic` did), stop."""
    step = session.state.step
    if step % session.config.train.checkpoint_every:
        _save(session)
    raise Interrupted(signal_number, step)


def _train_loader(session: Session) -> DataLoader:
    cfg = session.config.train
    sampler = session.sampler
    if session.processes.distributed:
        sampler = distributed.RankSlice(sampler, session.processes)  # this process's share
    return DataLoader(
        SeededItems(session.train_set, session.config.seed),
        batch_sampler=sampler,
        num_workers=cfg.workers,
        collate_fn=seglab_data.packed_collate,  # unpacked in _loop
        worker_init_fn=ignore_interrupts,
        pin_memory=session.device.type == "cuda",
        generator=torch.Generator().manual_seed(session.config.seed),
    )


def _train_step(session: Session, batch: tuple[list[Tensor], list[dict]]) -> dict[str, float]:
    cfg, model, optimizer = session.config.train, session.model, session.optimizer
    images, targets = seglab_data.batch_to_device(batch, session.device)
    with autocast(cfg.precision, session.device):  # losses and master weights stay float32
        _, losses = session.forward(images, targets)
    loss = sum(losses.values())
    if not torch.isfinite(loss):
        raise UserError(
            f"{session.run_dir}: the loss became {loss.item()} at step {session.state.step + 1}; "
            f"lower train.lr or set train.grad_clip"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return {"loss": loss.item(), **{name: value.item() for name, value in losses.items()}}


class _LossWindow:
    """Mean losses and throughput over the steps since the last log line."""

    def __init__(self):
        self._start()

    def _start(self):
        self.sums: dict[str, float] = {}
        self.steps = self.images = 0
        self.since = time.monotonic()

    def add(self, losses: dict[str, float], images: int) -> None:
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.steps += 1
        self.images += images

    def flush(self, step: int, lr: float) -> dict[str, Any]:
        seconds = max(time.monotonic() - self.since, 1e-9)
        record = {"step": step, "split": "train"}
        record.update({name: total / self.steps for name, total in self.sums.items()})
        record.update(lr=lr, images_per_s=self.images / seconds)
        self._start()
        return record


def _evaluate(session: Session) -> dict[str, Any]:
    """Validation loss + task metric; keeps best.safetensors. Leaves the RNG untouched, so
    evaluating does not change what training does next (exact resume)."""
    cfg, state = session.config.train, session.state
    started = time.monotonic()
    with preserved_rng(cuda=session.device.type == "cuda"):
        metrics = evaluation.evaluate(
            session.model, session.val_set, batch_size=cfg.batch_size, device=session.device,
            shard=(session.processes.rank, session.processes.world_size),
        )  # fmt: skip
    session.model.train()
    # when (the run's seconds before it) and how long: curves of the metric against the
    # training time leave the evaluations out (bench/lineage.py)
    timing = {
        "elapsed_s": round(state.elapsed_s, 3),
        "eval_s": round(time.monotonic() - started, 3),
    }
    name, value = evaluation.primary_metric(metrics, session.model.task)
    state.last_metrics, state.last_eval_step = metrics, state.step
    convergence.observe(state, cfg, value)  # on every process: they all stop at one step
    if not session.processes.main:  # the same metrics on every process; rank 0 writes
        state.best_value = max(value, state.best_value or value)
        return metrics
    session.log.append({"step": state.step, "split": "val", "primary": name, **timing, **metrics})
    if session.tensorboard is not None:
        session.tensorboard.validation(state.step, metrics)
        with preserved_rng(cuda=session.device.type == "cuda"):
            session.tensorboard.overlays(state.step, session.model, session.val_set)
    if state.best_value is None or value > state.best_value:
        state.best_value = value
        _save_model(session, session.run_dir / "best.safetensors")
    write_plots(session.log.read(), session.run_dir / "plots")
    return metrics


def _save(session: Session) -> None:
    rng_per_rank = distributed.gather(rng_states())  # every process's generators: exact resume
    if not session.processes.main:
        return
    _save_model(session, session.run_dir / "model.safetensors")
    save_checkpoint(
        session.run_dir / CHECKPOINT_NAME,
        model=session.model,
        optimizer=session.optimizer,
        scheduler=session.scheduler,
        state=session.state,
        data_order=_data_order(session),
        rng_per_rank=rng_per_rank if session.processes.distributed else None,
    )


def _save_model(session: Session, path: Path) -> None:
    save_model(session.model, path)


def _data_order(session: Session) -> dict[str, int]:
    epoch, position = session.sampler.epoch_and_position(session.state.step)
    return {"seed": session.config.seed, "epoch": epoch, "position": position,
            "world_size": session.processes.world_size}  # fmt: skip


def _finish(session: Session) -> dict[str, Any]:
    """A run that was already finished: make sure the final evaluation and files exist."""
    state = session.state
    if session.val_set is not None and state.last_eval_step != state.step:
        _evaluate(session)
        _save(session)
    cfg = session.config.train
    planned = cfg.planned_steps or state.planned_steps
    plateau = None
    if convergence.converged(cfg, state):
        name, _ = evaluation.primary_metric(state.last_metrics, session.model.task)
        plateau = convergence.plateau(state, name)
    ended = end_reason(cfg, step=state.step, elapsed_s=state.elapsed_s, planned=planned,
                       plateau=plateau)  # fmt: skip
    return {"step": state.step, **state.last_metrics, "ended": ended}
