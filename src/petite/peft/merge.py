"""Merge for inference: fold LoRA, DoRA and SSF into the base weights.

After :func:`merge` no LoRA/DoRA/SSF wrapper is left: the model is the plain
architecture with updated weights, and (in eval mode) its output equals the
unmerged model's to float rounding.  VPT prompts and adapters are not linear in
the weights and stay as they are.
"""

from __future__ import annotations

from torch import nn

from petite.peft.apply import peft_state
from petite.peft.methods.lora import merge_lora_layers
from petite.peft.methods.ssf import merge_ssf_layers


def merge(model: nn.Module) -> nn.Module:
    """Fold every mergeable PEFT wrapper into its base layer, in place; returns ``model``.

    LoRA first: an SSF wrapper around a LoRA layer then folds into the merged layer.
    A merged model is for inference: every parameter is frozen afterwards.
    """
    merged = merge_lora_layers(model) + merge_ssf_layers(model)
    state = peft_state(model)
    if state is not None and merged:
        state.merged = True
        live = dict(model.named_parameters())
        state.trainable = {n: m for n, m in state.trainable.items() if n in live}
        model.requires_grad_(False)
    return model


def is_merged(model: nn.Module) -> bool:
    """True if no LoRA/DoRA/SSF wrapper remains in the model."""
    from petite.peft.methods.lora import LoraConv, _is_peft_lora
    from petite.peft.methods.ssf import SSFWrapper

    return not any(isinstance(m, (SSFWrapper, LoraConv)) or _is_peft_lora(m) for m in model.modules())
