"""Training on several processes (PyTorch DDP), started by torchrun.

`torchrun --nproc_per_node N -m seglab train CONFIG --out RUN` starts N copies of the
command; torchrun gives each its `RANK`, `LOCAL_RANK`, `WORLD_SIZE` and the rendezvous
(`MASTER_ADDR`, `MASTER_PORT`), which `torch.distributed` reads. Several machines: the same
command on each, with `--nnodes` and a rendezvous (`--rdzv_backend c10d --rdzv_endpoint
HOST:PORT`, docs/cli/train.md). Nothing here is home-made: the gradients are averaged by
`DistributedDataParallel`, the processes talk through gloo on the CPU and NCCL on GPUs.

What seglab adds is the bookkeeping: `train.batch_size` is per process, so a step takes
`batch_size x N` images, the batch the data order (`engine/data_order.py`) gives a single
process with that batch size, split in N consecutive slices (`RankSlice`); so a run's data
is a function of (seed, step) whatever N, resumes stay exact, and N processes train as one
process with the N-fold batch. Only rank 0 writes files; logged losses are the mean over
processes; each process evaluates a share of the val split and the shares are merged.

Across machines every rank is the global one (`RANK`; `LOCAL_RANK` only picks the GPU):
the slices depend on the rank and N, not on the machine, and the run folder is written
by rank 0 alone, so it exists on rank 0's machine. Rank 0 also reads it when the run
resumes and sends the checkpoint to every process (`from_rank0`): the other machines need
neither a copy of it nor a shared file system.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler

from seglab.errors import UserError

T = TypeVar("T")
JOIN_TIMEOUT_S = 300.0  # how long a process waits for the others to start (SEGLAB_JOIN_TIMEOUT_S)


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the rank on this machine: which GPU it takes

    @property
    def main(self) -> bool:
        """The process that writes the run's files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def from_environment() -> Processes:
    """The processes torchrun started (its environment variables), or one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Processes()
    return Processes(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def start(processes: Processes, device: torch.device) -> torch.device:
    """Join the process group (gloo on the CPU, NCCL on GPUs); return this process's device
    (`cuda:LOCAL_RANK` for a CUDA run)."""
    if device.type == "cuda" and processes.distributed:
        device = torch.device("cuda", processes.local_rank)
        torch.cuda.set_device(device)
    if processes.distributed and not dist.is_initialized():
        wait_for_all(processes, join_timeout_s())
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def join_timeout_s() -> float:
    """`SEGLAB_JOIN_TIMEOUT_S`, or JOIN_TIMEOUT_S; UserError when it is not seconds."""
    text = os.environ.get("SEGLAB_JOIN_TIMEOUT_S", str(JOIN_TIMEOUT_S))
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UserError(f"SEGLAB_JOIN_TIMEOUT_S={text!r}: give a number of seconds, e.g. 600")
    return seconds


def wait_for_all(processes: Processes, timeout_s: float) -> None:
    """Wait until every process has started training, on torchrun's store (`env://`).

    torchrun's rendezvous ends when every node's launcher has come, not its processes: a
    process that stops before training (a file missing on its machine, a mistyped
    command) would leave the others waiting in `init_process_group` for torch's 30
    minutes. This says, after `timeout_s`, which ranks did not come.

    Raises:
        UserError: some process did not come within `timeout_s`.
    """
    rank, world_size = processes.rank, processes.world_size
    try:  # without torchrun's store, rank 0 serves one and waits for the others to connect
        timeout = timedelta(seconds=timeout_s)
        store, _, _ = next(dist.rendezvous("env://", rank, world_size, timeout=timeout))
    except dist.DistError:
        raise UserError(_not_started(processes, "the other ranks", timeout_s)) from None
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # torchrun's restarts
    keys = [f"seglab/attempt{attempt}/rank{other}" for other in range(world_size)]
    store.set(keys[rank], "started")
    deadline = time.monotonic() + timeout_s
    while not store.check(keys) and time.monotonic() < deadline:
        time.sleep(0.1)  # polled: store.wait's timeout logs C++ warnings
    missing = [str(other) for other, key in enumerate(keys) if not store.check([key])]
    if missing:
        raise UserError(_not_started(processes, f"rank(s) {', '.join(missing)}", timeout_s))


def _not_started(processes: Processes, who: str, timeout_s: float) -> str:
    rendezvous = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
    return (f"rank {processes.rank} of {processes.world_size}: {who} did not start training "
            f"within {timeout_s:.0f} s (rendezvous {rendezvous}); the output on their machine "
            "says why; start the same command on every machine, or wait longer with "
            "SEGLAB_JOIN_TIMEOUT_S")  # fmt: skip


def from_rank0(read: Callable[[], T]) -> T:
    """`read()` on rank 0 alone, its answer sent to every process (one process: `read()`).

    For what is in the run folder: it is written by rank 0, so it is where rank 0 runs,
    and the other machines need no copy of it (nor a shared file system) to resume. A
    UserError of rank 0 is raised on every process, so all of them stop with its line
    instead of waiting for rank 0.
    """
    if not dist.is_initialized():
        return read()
    answer: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            answer[0] = (True, read())
        except UserError as error:
            answer[0] = (False, str(error))
    dist.broadcast_object_list(answer, src=0)
    read_fine, value = answer[0]
    if not read_fine:
        raise UserError(value)
    return value


def check_checkpoint_on_rank0(path: Path) -> None:
    """Refuse to start a run over when rank 0's machine has no checkpoint at `path` but
    another process's machine has one (`misplaced_checkpoint`)."""
    line = misplaced_checkpoint(path, gather((socket.gethostname(), path.is_file())))
    if line is not None:
        raise UserError(line)


def misplaced_checkpoint(path: Path, seen: list[tuple[str, bool]]) -> str | None:
    """The line that says the run's checkpoint is on another machine than rank 0, or None.

    Without a shared file system, RUN is on the machine where rank 0 ran; torchrun's c10d
    rendezvous gives rank 0 to the machine whose address (`--local-addr`, by default its
    host name) sorts first, so machines started in another set can put rank 0 on one
    without RUN, where the run would start over.

    Args:
        seen: (host name, whether `path` is a file there) for each process, by rank.
    """
    holders = [rank for rank, (_, found) in enumerate(seen) if found]
    if seen[0][1] or not holders:
        return None
    host = seen[holders[0]][0]
    return (f"{path}: not found where rank 0 runs ({seen[0][0]}), but rank {holders[0]} "
            f"has it (on {host}): start rank 0 on {host} (the c10d rendezvous gives rank 0 "
            "to the machine whose --local-addr, by default its host name, sorts first) or "
            "put RUN on a file system every machine shares")  # fmt: skip


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def mean_over_processes(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The mean of each value over the processes (each process must call it)."""
    if not dist.is_initialized():
        return values
    names = sorted(values)
    stacked = torch.tensor([values[name] for name in names], dtype=torch.float64, device=device)
    dist.all_reduce(stacked)
    stacked /= dist.get_world_size()
    return dict(zip(names, stacked.tolist(), strict=True))


def any_process(flag: bool, device: torch.device) -> bool:
    """True on every process when it is True on one (a stop request reaching one of them)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather(value: Any) -> list[Any]:
    """`value` of every process, in rank order (one process: `[value]`)."""
    if not dist.is_initialized():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


class RankSlice(Sampler[list[tuple[int, int]]]):
    """This process's slice of each global batch: items [rank * B, (rank + 1) * B).

    Args:
        batches: yields each step's global batch (`ResumableBatchSampler` with the global
            batch size B x N).
        processes: this process's rank among N.
    """

    def __init__(self, batches: Sampler, processes: Processes):
        self.batches = batches
        self.rank, self.world_size = processes.rank, processes.world_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches:
            share = len(batch) // self.world_size
            yield batch[self.rank * share : (self.rank + 1) * share]


class _WithLosses(nn.Module):
    """`model.forward_with_losses` as a forward, the call DDP needs to see to average the
    gradients of the backward that follows."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: list[Tensor], targets: list[dict]):
        return self.model.forward_with_losses(images, targets)


def training_forward(
    model: nn.Module, processes: Processes, device: torch.device
) -> Callable[[list[Tensor], list[dict]], tuple[list[dict], dict[str, Tensor]]]:
    """`(images, targets) -> (outputs, losses)` of `model`; across processes through
    `DistributedDataParallel`, which broadcasts rank 0's weights now and averages the
    gradients in every backward."""
    if not processes.distributed:
        return model.forward_with_losses
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(_WithLosses(model), device_ids=device_ids)


def sync_batchnorm(model: nn.Module, processes: Processes, device: torch.device) -> nn.Module:
    """`model` with SyncBatchNorm for BatchNorm (`train.sync_batchnorm`), several processes
    on GPUs only (torch's SyncBatchNorm has no CPU kernel); one process: unchanged."""
    if not processes.distributed:
        return model
    if device.type != "cuda":
        raise UserError(
            "train.sync_batchnorm: SyncBatchNorm runs on GPUs only; on the CPU each process "
            "normalises its own batch: set train.sync_batchnorm=false"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def reduce_record(record: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A training log line over all processes: mean losses and learning rate, summed
    images/s (each process counts its own images)."""
    numbers = {k: v for k, v in record.items() if k not in ("step", "split")}
    if not dist.is_initialized() or not numbers:
        return record
    mean = mean_over_processes(numbers, device)
    mean["images_per_s"] = mean["images_per_s"] * dist.get_world_size()
    return {**record, **mean}


def check_world_size(processes: Processes, batch_size: int, dataset_size: int) -> None:
    """Refuse a global batch (per-process batch x processes) larger than the train split."""
    if processes.world_size * batch_size > dataset_size:
        raise UserError(
            f"train.batch_size={batch_size} x {processes.world_size} processes is more than "
            f"the {dataset_size} training images; lower train.batch_size or start fewer "
            "processes"
        )


def world_size_note(saved: int, processes: Processes, batch_size: int) -> str | None:
    """The line that says a run resumes with another number of processes, or None."""
    if saved == processes.world_size:
        return None
    return (f"the run was trained by {saved} process(es) and resumes with "
            f"{processes.world_size}: each step now takes {batch_size} x "
            f"{processes.world_size} images instead of {batch_size} x {saved}, so the "
            "result differs from an uninterrupted run")  # fmt: skip
