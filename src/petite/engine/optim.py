"""Optimizers, their parameter groups, and learning-rate schedules (stepped once per optimisation step).

Each PEFT method's tensors form their own parameter group with their own
learning rate and weight decay (paper supplementary Table 3 per method, so
``ssf,bitfit`` trains SSF at SSF's rate and the biases at BitFit's).  The paper
itself used one value for a whole Mix-PEFT spec (its "PETITE" column); that is
``lr_policy: paper``.  A learning rate or weight decay the user sets applies to
every group.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from petite.peft.paper import method_hparams

#: ``per-method``: each method's tensors at that method's Table 3 values; ``paper``: the spec's one column.
LR_POLICIES = ("per-method", "paper")


def parameter_groups(
    model: nn.Module,
    labels: Mapping[str, str],
    model_name: str,
    *,
    policy: str = "per-method",
    column: Mapping[str, float] | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
) -> list[dict[str, Any]]:
    """Optimiser parameter groups: one per method label, in the order labels first appear.

    ``labels`` maps each trained parameter's name to the method that trains it
    (:attr:`petite.peft.PeftState.trainable`, or ``"full"`` for every tensor).  A group's
    ``lr``/``weight_decay`` is the user's value when given, else the spec's Table 3 column
    (``column``) under the ``paper`` policy, else the method's own Table 3 value.  Each group
    also carries ``method``, ``tensors`` and ``parameters`` (kept by torch in ``param_groups``).
    """
    if policy not in LR_POLICIES:
        raise ValueError(f"unknown lr policy {policy!r}")
    params = dict(model.named_parameters())
    by_method: dict[str, list[nn.Parameter]] = {}
    for name, method in labels.items():
        by_method.setdefault(method, []).append(params[name])
    groups = []
    for method, tensors in by_method.items():
        values = dict(column) if policy == "paper" and column is not None else method_hparams(model_name, method)
        groups.append({
            "params": tensors,
            "lr": lr if lr is not None else values["lr"],
            "weight_decay": weight_decay if weight_decay is not None else values["weight_decay"],
            "method": method,
            "tensors": len(tensors),
            "parameters": sum(p.numel() for p in tensors),
        })
    return groups


def describe_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The settings of each parameter group, for run folders: its base learning rate (``lr``, before the
    schedule scales it), weight decay, method and sizes."""
    keys = ("method", "tensors", "parameters", "weight_decay")
    return [{"lr": group.get("initial_lr", group["lr"]), **{k: group[k] for k in keys if k in group}}
            for group in groups]


def build_optimizer(
    params: Iterable[torch.nn.Parameter] | list[dict[str, Any]], name: str, lr: float, weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """Adam or AdamW over ``params`` (tensors, or parameter groups with their own ``lr``/``weight_decay``)."""
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
