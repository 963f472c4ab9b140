"""Honest parameter accounting: a tensor counts as trainable only if it reaches the loss.

The reference code counted dead parameters (LoRA on layers the forward never
used) as trainable.  :func:`count_trainable` with a ``loss`` counts only tensors
connected to it in the autograd graph; :func:`check_gradients` runs a backward
pass and lists the trainable tensors that got no gradient.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from petite.models.contract import component_modules
from petite.peft.state import PeftState, peft_state


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` for every parameter with ``requires_grad``."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def count_trainable(model: nn.Module, loss: torch.Tensor | None = None) -> int:
    """Number of trainable scalars; with ``loss``, only of tensors connected to it.

    Connection is tested with ``torch.autograd.grad(..., allow_unused=True)``
    (graph retained, ``.grad`` untouched).
    """
    params = trainable_parameters(model)
    if loss is None:
        return sum(p.numel() for _, p in params)
    grads = torch.autograd.grad(loss, [p for _, p in params], retain_graph=True, allow_unused=True)
    return sum(p.numel() for (_, p), g in zip(params, grads) if g is not None)


def check_gradients(model: nn.Module, loss: torch.Tensor | None = None, nonzero: bool = False) -> list[str]:
    """Names of trainable tensors that got no gradient (``nonzero``: or an all-zero one).

    With ``loss``, gradients are zeroed and ``loss.backward()`` is run first;
    without, the existing ``.grad`` values are inspected.
    """
    params = trainable_parameters(model)
    if loss is not None:
        for _, p in params:
            p.grad = None
        loss.backward()
    bad = []
    for name, p in params:
        if p.grad is None or (nonzero and not bool(p.grad.detach().abs().sum() > 0)):
            bad.append(name)
    return bad


def dead_parameters(
    model: nn.Module,
    inputs: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    rtol: float = 1e-10,
) -> list[str]:
    """Trainable tensors whose gradient is zero up to round-off (connected to the loss, yet dead).

    Graph connection is not enough: a key-projection bias, a scale that a following
    normalisation removes, or a conv bias before BatchNorm reach the loss but get
    exactly zero gradient mathematically; in float32 they get round-off noise
    (~1e-11) that an optimizer like Adam happily amplifies.  This probe runs one
    forward/backward of a float64 copy of ``model`` in training mode and flags
    tensors whose largest gradient entry is below ``rtol`` times the largest of all.
    ``loss_fn`` maps the output to a scalar (default: a fixed random projection).
    LoRA's B is zero at init, which zeroes A's gradient by construction (not dead: it
    moves once B does), so the probe gives an all-zero ``lora_B`` small random values
    in its copy first.
    """
    probe = copy.deepcopy(model).double()
    probe.train()  # the mode training runs in, whatever mode the model arrives in (BatchNorm differs)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in probe.named_parameters():
            if "lora_B" in name and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 1e-2)
    named = [(n, p) for n, p in probe.named_parameters() if p.requires_grad]
    if not named:
        return []
    out = probe(inputs.double())
    if loss_fn is None:
        loss = (out * torch.randn(out.shape, generator=gen, dtype=out.dtype).to(out.device)).sum()
    else:
        loss = loss_fn(out)
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    sizes = [0.0 if g is None else float(g.abs().max()) for g in grads]
    scale = max(sizes, default=0.0)
    return [n for (n, _), size in zip(named, sizes) if size <= rtol * scale]


def prune_dead(model: nn.Module, inputs: torch.Tensor, state: PeftState | None = None) -> list[str]:
    """Freeze the tensors :func:`dead_parameters` finds and drop them from the PEFT state.

    For the training engine: call once with a sample batch after :func:`apply_spec`,
    so optimisers and "% trainable" see only tensors that can learn.  Returns the names.
    """
    state = state or peft_state(model)
    dead = dead_parameters(model, inputs)
    if state is not None:
        state.freeze(model, dead)  # recorded in state.pruned; adapter files carry the list
    else:
        params = dict(model.named_parameters())
        for name in dead:
            params[name].requires_grad_(False)
    return dead


def _component_of(name: str, components: dict[str, set[str]]) -> str:
    module = name.rpartition(".")[0]
    for comp, names in components.items():
        if module in names:
            return comp
    return "other"


def summary(model: nn.Module, state: PeftState | None = None) -> dict[str, Any]:
    """Trainable scalars in total, per component and per method, and % of the base model.

    ``percent`` = trainable / base * 100, base = parameters outside the frozen
    components before PEFT modules were added.  Parameters in no component (e.g.
    the GAN's stem) are reported under ``"other"``.
    """
    state = state or peft_state(model)
    if state is None:
        raise ValueError("PEFT has not been applied to this model")
    params = dict(model.named_parameters())
    comp_names = {c: set(component_modules(model, c)) for c in getattr(model, "components", {})}
    per_component: dict[str, int] = {c: 0 for c in comp_names if c not in getattr(model, "frozen_components", [])}
    per_method: dict[str, int] = {}
    total = 0
    for name, method in state.trainable.items():
        n = params[name].numel()
        total += n
        comp = _component_of(name, comp_names)
        per_component[comp] = per_component.get(comp, 0) + n
        per_method[method] = per_method.get(method, 0) + n
    return {
        "spec": state.spec.to_string(),
        "trainable": total,
        "total": state.base_parameters,
        "percent": 100.0 * total / state.base_parameters if state.base_parameters else 0.0,
        "per_component": per_component,
        "per_method": per_method,
    }
