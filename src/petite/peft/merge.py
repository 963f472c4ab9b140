"""Merge for inference: every mergeable method folds itself into the base weights; unmerge undoes it.

This module only iterates over the methods a spec applied (each
:class:`~petite.peft.methods.base.Method` merges, unmerges and unloads itself),
in application order for merging and in reverse for unmerging and unloading,
so a wrapper inside another method's wrapper is handled from the inside out.

After ``merge(model)`` (with ``unload``, the default) no LoRA/DoRA/SSF wrapper
is left: the model is the plain architecture with updated weights, and (in eval
mode) its output equals the unmerged model's to float rounding.  With
``unload=False`` the wrappers stay, merged, so :func:`unmerge` can take the
update out again.  VPT prompts and adapters are not linear in the weights and
stay as they are.
"""

from __future__ import annotations

from torch import nn

from petite.errors import UserError
from petite.peft.state import PeftState, peft_state


def _state(model: nn.Module) -> PeftState:
    state = peft_state(model)
    if state is None:
        raise UserError("PEFT has not been applied to this model; nothing to merge")
    return state


def merge(model: nn.Module, *, unload: bool = True) -> nn.Module:
    """Fold every mergeable method into its base layers, in place; returns ``model``.

    With ``unload`` the merged wrappers are replaced by their base layers (the plain
    architecture; no :func:`unmerge` afterwards) and every parameter is frozen: a
    merged model is for inference.
    """
    state = _state(model)
    mergeable = [method for _, method in state.methods if method.mergeable and method.wrapped]
    if not mergeable:
        return model  # nothing folds (e.g. VPT or adapters only): the model stays trainable and savable
    for method in mergeable:
        method.merge(model)
    if unload:
        for method in reversed(mergeable):
            method.unload(model)
        live = dict(model.named_parameters())
        state.trainable = {n: m for n, m in state.trainable.items() if n in live}
        model.requires_grad_(False)
    state.merged = True
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Take every merged method back out of the base weights (after ``merge(model, unload=False)``)."""
    state = _state(model)
    for _, method in reversed(state.methods):
        if method.mergeable and not method.wrappers(model) and method.wrapped:
            raise UserError(f"{method.name} was unloaded by merge(); it cannot be unmerged")
        method.unmerge(model)
    state.merged = False
    return model


def is_merged(model: nn.Module) -> bool:
    """True when every mergeable method of the model's spec is folded into the base weights."""
    state = _state(model)
    return all(getattr(w, "merged", False) for _, m in state.methods for _, w in m.wrappers(model))


__all__ = ["is_merged", "merge", "unmerge"]
