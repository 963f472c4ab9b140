"""Optimizers and learning-rate schedules (stepped once per optimisation step)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def build_optimizer(
    params: Iterable[torch.nn.Parameter], name: str, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.Optimizer:
    """Adam or AdamW over ``params`` (the tensors the run trains)."""
    params = list(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=betas)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)
    raise ValueError(f"unknown optimizer {name!r}")


def lr_factor(step: int, total_steps: int, schedule: str, warmup_steps: int = 0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total_steps``.

    ``cosine`` anneals from 1 to 0; ``warmup-cosine`` rises linearly over
    ``warmup_steps`` first; ``constant`` stays at 1.
    """
    if schedule == "constant" or total_steps <= 0:
        return 1.0
    if schedule == "warmup-cosine" and step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    start = warmup_steps if schedule == "warmup-cosine" else 0
    progress = min(max(step - start, 0) / max(total_steps - start, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule; its position is saved and restored with the training state."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, schedule, warmup_steps)
    )
