"""Apply a :class:`~petite.peft.spec.Spec` to a model: freeze, attach methods, pick what trains.

:func:`apply_spec` is the one place that sets ``requires_grad``: after it, exactly
the tensors listed in the returned :class:`PeftState` require gradients and every
other parameter (frozen components included) does not.  Because frozen tensors
really have ``requires_grad=False``, autograd prunes the backward pass below the
first trainable tensor (e.g. the frozen patch embedding under VPT prompts).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from petite.errors import UserError
from petite.peft.methods import Method, component_module_names
from petite.peft.methods.bitfit import BitFit
from petite.peft.spec import WHOLE_MODEL, Spec

ATTR = "petite_peft"  # the model attribute holding the PeftState


@dataclasses.dataclass
class PeftState:
    """What :func:`apply_spec` did to a model.

    ``trainable``: parameter name -> the method that trains it (``"bitfit"`` for the
    global flag, ``"full"`` for full fine-tuning), in ``named_parameters`` order.
    ``base_parameters``: parameters outside the frozen components before PEFT (the
    denominator of "% trainable").  ``base_fingerprint``: hash of the base state
    dict at apply time (``None`` if not computed), written into adapter files.
    """

    spec: Spec
    trainable: dict[str, str]
    base_parameters: int
    base_fingerprint: str | None = None
    methods: list[tuple[str, Method]] = dataclasses.field(default_factory=list)
    merged: bool = False
    pruned: list[str] = dataclasses.field(default_factory=list)  # dead tensors frozen by prune_dead

    def freeze(self, model: nn.Module, names: list[str]) -> None:
        """Stop training ``names`` (dead tensors): ``requires_grad=False``, out of ``trainable``."""
        params = dict(model.named_parameters())
        for name in names:
            params[name].requires_grad_(False)
            if self.trainable.pop(name, None) is not None and name not in self.pruned:
                self.pruned.append(name)

    @property
    def trainable_names(self) -> list[str]:
        """Names of the trained tensors."""
        return list(self.trainable)


def peft_state(model: nn.Module) -> PeftState | None:
    """The :class:`PeftState` of a model PEFT was applied to, else ``None``."""
    return model.__dict__.get(ATTR)


def base_parameter_count(model: nn.Module) -> int:
    """Parameters outside ``model.frozen_components`` (shared tensors once)."""
    scope = set(component_module_names(model, WHOLE_MODEL))
    seen: set[int] = set()
    total = 0
    for name, module in model.named_modules():
        if name in scope:
            for p in module.parameters(recurse=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
    return total


def check_scopes(model: nn.Module, spec: Spec) -> None:
    """UserError if the spec names a component the model lacks or one it keeps frozen."""
    frozen = set(getattr(model, "frozen_components", []) or [])
    for scope in spec.scopes:
        if scope == WHOLE_MODEL:
            continue
        if scope in frozen:
            raise UserError(f"component {scope!r} is frozen in this model and cannot be fine-tuned")
        component_module_names(model, scope)  # raises for unknown components


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
    base_fp = None
    if fingerprint:
        from petite.peft.io import base_fingerprint

        base_fp = base_fingerprint(model)
    base_total = base_parameter_count(model)

    model.requires_grad_(False)
    chosen: dict[int, tuple[Any, str]] = {}  # id -> (param, method); first method wins

    def take(params: list[nn.Parameter], label: str) -> None:
        for p in params:
            chosen.setdefault(id(p), (p, label))

    # Resolve every scope on the unmodified model: wrappers rename modules below them.
    scopes = {s: component_module_names(model, s) for s in spec.scopes}
    whole = component_module_names(model, WHOLE_MODEL)
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
    if spec.bitfit:
        take(BitFit().apply(model, whole), "bitfit")

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
