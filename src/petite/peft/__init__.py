"""Parameter-efficient fine-tuning: specs, methods, application, accounting, merge, adapter files.

Typical use::

    from petite.peft import Spec, apply_spec, merge, save_adapter, load_adapter
    state = apply_spec(model, Spec.parse("petite-unetr"))   # freezes, wraps, picks what trains
    ...train the tensors with requires_grad...
    save_adapter(model, state, "runs/x/adapter")
    merge(model)                                           # fold LoRA/DoRA/SSF for inference

Modules: ``spec`` (the Mix-PEFT grammar), ``methods/`` (one file per method, the
extension point), ``paper`` (the paper's hyper-parameters and combinations),
``state`` (what applying a spec did), ``apply``, ``accounting`` (honest counts),
``merge`` (merge/unmerge), ``io`` (adapter files).
"""

from __future__ import annotations

from petite.peft.accounting import check_gradients, count_trainable, dead_parameters, prune_dead, summary, trainable_parameters
from petite.peft.apply import apply_spec
from petite.peft.io import load_adapter, read_adapter_meta, save_adapter
from petite.peft.merge import is_merged, merge, unmerge
from petite.peft.methods import METHODS, method_class
from petite.peft.paper import MIX_METHODS, combos, recommended_hparams
from petite.peft.spec import PRESETS, MethodSpec, Spec
from petite.peft.state import PeftState, base_fingerprint, base_parameter_count, peft_state

__all__ = [
    "METHODS",
    "MIX_METHODS",
    "PRESETS",
    "MethodSpec",
    "PeftState",
    "Spec",
    "apply_spec",
    "base_fingerprint",
    "base_parameter_count",
    "check_gradients",
    "combos",
    "count_trainable",
    "dead_parameters",
    "is_merged",
    "load_adapter",
    "merge",
    "method_class",
    "peft_state",
    "prune_dead",
    "read_adapter_meta",
    "recommended_hparams",
    "save_adapter",
    "summary",
    "trainable_parameters",
    "unmerge",
]
