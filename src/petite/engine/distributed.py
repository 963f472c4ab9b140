"""Data-parallel training under ``torchrun``: each process takes its share of every batch.

Gradients are averaged across processes after each backward, which equals
single-process training on the same global batch (tested against one process).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn as nn


def process_group() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def average_gradients(params: list[nn.Parameter], world: int) -> None:
    """Replace each gradient by its mean over the ``world`` processes (a missing one counts as zero)."""
    if world == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world


def global_mean(value: torch.Tensor, world: int) -> float:
    """A loss averaged over processes (each holds an equal share of the batch)."""
    value = value.detach().float()
    if world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= world
    return float(value)


def barrier(world: int) -> None:
    """Wait for every process (a no-op in a single process)."""
    if world > 1:
        dist.barrier()
