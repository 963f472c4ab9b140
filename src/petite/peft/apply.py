"""Apply a :class:`~petite.peft.spec.Spec` to a model: freeze, attach methods, pick what trains.

:func:`apply_spec` is the one place that sets ``requires_grad``: after it, exactly
the tensors listed in the returned :class:`PeftState` require gradients and every
other parameter (frozen components included) does not.  Because frozen tensors
really have ``requires_grad=False``, autograd prunes the backward pass below the
first trainable tensor (e.g. the frozen patch embedding under VPT prompts).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from petite.errors import UserError
from petite.models.contract import WHOLE_MODEL, component_modules
from petite.peft.methods import Method
from petite.peft.methods.bitfit import BitFit
from petite.peft.spec import Spec
from petite.peft.state import (
    ATTR,
    PeftState,
    base_fingerprint,
    base_parameter_count,
    peft_state,
)


def check_scopes(model: nn.Module, spec: Spec) -> None:
    """UserError if the spec names a component the model lacks or one it keeps frozen."""
    frozen = set(getattr(model, "frozen_components", []) or [])
    for scope in spec.scopes:
        if scope == WHOLE_MODEL:
            continue
        if scope in frozen:
            raise UserError(f"component {scope!r} is frozen in this model and cannot be fine-tuned")
        component_modules(model, scope)  # raises for unknown components


def apply_spec(model: nn.Module, spec: Spec | str, *, fingerprint: bool = True) -> PeftState:
    """Freeze ``model``, apply ``spec`` per component (plus global BitFit) and return what trains.

    The model is modified in place (wrappers replace target layers).  With
    ``fingerprint`` the base state dict is hashed first (needed by
    :func:`petite.peft.io.save_adapter`; skip it for quick parameter counts).

    Raises:
        UserError: PEFT already applied, unknown/frozen component, or a method with
            nothing to attach to in its component.
    """
    spec = Spec.parse(spec)
    if peft_state(model) is not None:
        raise UserError("PEFT is already applied to this model; build a fresh base model")
    check_scopes(model, spec)
    base_fp = base_fingerprint(model) if fingerprint else None
    base_total = base_parameter_count(model)

    model.requires_grad_(False)
    chosen: dict[int, tuple[Any, str]] = {}  # id -> (param, method); first method wins

    def take(params: list[nn.Parameter], label: str) -> None:
        for p in params:
            chosen.setdefault(id(p), (p, label))

    # Resolve every scope on the unmodified model: wrappers rename modules below them.  Global
    # BitFit's biases are picked here too, so it keeps the biases of layers another method wraps.
    scopes = {s: component_modules(model, s) for s in spec.scopes}
    whole = component_modules(model, WHOLE_MODEL)
    biases = BitFit().apply(model, whole) if spec.bitfit else []
    if spec.full:
        whole_set = set(whole)
        take([p for n, m in model.named_modules() if n in whole_set for p in m.parameters(recurse=False)], "full")
    # Selective methods first (they name existing tensors), then additive ones.
    ordered = sorted(spec.methods, key=lambda sm: sm[1].build().additive)
    methods: list[tuple[str, Method]] = []
    for scope, mspec in ordered:
        method = mspec.build()
        if not method.is_feasible(model, scopes[scope]):
            where = "the model" if scope == WHOLE_MODEL else f"component {scope!r}"
            raise UserError(f"method {mspec.name!r} has nothing to attach to in {where}")
        take(method.apply(model, scopes[scope]), mspec.name)
        methods.append((scope, method))
    take(biases, "bitfit")

    for p, _ in chosen.values():
        p.requires_grad_(True)
    trainable: dict[str, str] = {}
    for name, p in model.named_parameters():
        if id(p) in chosen:
            trainable[name] = chosen[id(p)][1]
    assert len(trainable) == len(chosen), "a trained tensor is not registered in the model"
    state = PeftState(spec, trainable, base_total, base_fp, methods)
    model.__dict__[ATTR] = state  # plain attribute: not a submodule, not in state_dict
    return state
