"""Training on several processes (PyTorch DDP), started by torchrun.

`torchrun --nproc_per_node N -m seglab train CONFIG --out RUN` starts N copies of the
command; torchrun gives each its `RANK`, `LOCAL_RANK`, `WORLD_SIZE` and the rendezvous
(`MASTER_ADDR`, `MASTER_PORT`), which `torch.distributed` reads. Several machines: the same
command on each, with `--nnodes`, `--node_rank` and `--rdzv_endpoint` (README). Nothing
here is home-made: the gradients are averaged by `DistributedDataParallel`, the processes
talk through gloo on the CPU and NCCL on GPUs.

What seglab adds is the bookkeeping: `train.batch_size` is per process, so a step takes
`batch_size x N` images, the batch the data order (`engine/data_order.py`) gives a single
process with that batch size, split in N consecutive slices (`RankSlice`); so a run's data
is a function of (seed, step) whatever N, resumes stay exact, and N processes train as one
process with the N-fold batch. Only rank 0 writes files; logged losses are the mean over
processes; each process evaluates a share of the val split and the shares are merged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler

from seglab.errors import UserError


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
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


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
