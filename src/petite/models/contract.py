"""The model contract: what every petite model declares, and the one reading of it.

Every model :func:`petite.models.build_model` returns carries plain data
(``docs/DESIGN.md``, "Contract: models"), attached by :func:`init_contract`:

- ``config``: everything needed to rebuild it (``name``, ``preset``, constructor arguments);
- ``components``: component name -> fnmatch patterns over ``named_modules()`` names
  (UNETR: ``encoder`` = the ViT, ``decoder`` = the CNN path);
- ``frozen_components``: components PEFT never touches (the GAN's discriminator);
- ``peft_roles``: role name -> patterns naming the layers a PEFT method attaches to
  (:data:`ROLES`);
- prompt sites (:func:`mark_prompt_site`): modules that accept VPT prompt tokens;
- ``checkpoint_blocks`` (optional, default none): patterns naming the blocks that may be
  recomputed in backward (activation checkpointing, :mod:`petite.engine.efficiency`): transformer
  blocks and CNN stages whose forward is a function of its arguments, parameters and buffers
  only (no state kept between calls but BatchNorm statistics), whose outputs are not changed
  in place by the caller.

This module is the only code that interprets those patterns, so the model
registry, the PEFT library, the CLI and the reports agree on what "the
encoder" or "the query projections" are.  Pattern semantics:

- names are those of ``model.named_modules()``; the root module (``""``) never matches;
- ``fnmatch.fnmatchcase`` is used, so ``*`` also matches dots
  (``"vit.blocks.*.attn.to_q"`` matches every block);
- a module belongs to a *component* if its own name matches one of the
  component's patterns **or** it sits under a module that does;
- a module plays a *role* only if its own name matches one of the role's
  patterns (roles name individual layers; their children are not included);
- where a method takes ``targets``, each target is a role name or else an
  fnmatch pattern itself (:func:`select_modules`).

It imports nothing from the rest of petite but :mod:`petite.errors`, so the
PEFT library works on any ``nn.Module`` that carries these attributes.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

import torch.nn as nn

from petite.errors import UserError

#: The roles every model declares in ``model.peft_roles`` (possibly with an empty list).
ROLES: tuple[str, ...] = (
    "query",
    "key",
    "value",
    "attn_out",
    "mlp",
    "mlp_out",
    "norm",
    "conv",
    "conv_block",
    "prompt_site",
)

#: The scope name meaning "the whole model outside ``frozen_components``".
WHOLE_MODEL = "*"


def init_contract(
    model: nn.Module,
    config: dict[str, Any],
    components: dict[str, list[str]],
    peft_roles: dict[str, list[str]],
    frozen_components: list[str] | None = None,
    checkpoint_blocks: list[str] | None = None,
) -> None:
    """Attach the contract attributes (called by the model constructors)."""
    missing = [r for r in ROLES if r not in peft_roles]
    if missing:
        raise AssertionError(f"peft_roles lacks {missing}")  # programming error in a model class
    model.config = config
    model.components = components
    model.frozen_components = list(frozen_components or [])
    model.peft_roles = peft_roles
    model.checkpoint_blocks = list(checkpoint_blocks or [])


def mark_prompt_site(module: nn.Module, width: int, default_tokens: int = 8) -> None:
    """Make ``module`` a VPT prompt site: ``prompt_width = width``, ``prompts = None``.

    ``default_tokens`` is the paper's number of prompt tokens at this site, used
    when a VPT spec does not give one.
    """
    module.prompt_width = int(width)
    module.prompt_default_tokens = int(default_tokens)
    module.prompts = None


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return bool(name) and any(fnmatchcase(name, p) for p in patterns)


def _under(name: str, roots: Iterable[str]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def frozen_module_names(model: nn.Module) -> list[str]:
    """Names of every module inside ``model.frozen_components``, in module order."""
    frozen: set[str] = set()
    for component in getattr(model, "frozen_components", []) or []:
        frozen.update(component_modules(model, component))
    return [n for n, _ in model.named_modules() if n in frozen]


def checkpoint_blocks(model: nn.Module) -> list[str]:
    """Names of the blocks ``model.checkpoint_blocks`` names, in module order; a block inside another is dropped.

    Blocks do not nest, so each activation is recomputed at most once.  A model without the
    attribute has none.
    """
    patterns: list[str] = list(getattr(model, "checkpoint_blocks", []) or [])
    names: list[str] = []
    for name, _ in model.named_modules():
        if _matches(name, patterns) and not _under(name, names):
            names.append(name)
    return names


def component_modules(model: nn.Module, component: str) -> list[str]:
    """Every module name in ``component`` (matching a pattern or under a module that does), in module order.

    ``component == "*"`` (:data:`WHOLE_MODEL`) means every module outside ``frozen_components``.

    Raises:
        UserError: the model declares no such component.
    """
    names = [n for n, _ in model.named_modules()]
    if component == WHOLE_MODEL:
        frozen = set(frozen_module_names(model))
        return [n for n in names if n not in frozen]
    components: dict[str, list[str]] = getattr(model, "components", {}) or {}
    if component not in components:
        known = ", ".join(sorted(components)) or "none"
        raise UserError(f"unknown component {component!r} for this model (components: {known})")
    roots = [n for n in names if _matches(n, components[component])]
    return [n for n in names if _under(n, roots)]


def role_patterns(model: nn.Module, target: str) -> list[str]:
    """The patterns of role ``target`` in ``model.peft_roles``; a target that is no role is a pattern itself."""
    roles: dict[str, list[str]] = getattr(model, "peft_roles", {}) or {}
    return list(roles[target]) if target in roles else [target]


def select_modules(
    model: nn.Module,
    module_names: Iterable[str],
    targets: Iterable[str],
    kinds: tuple[type[nn.Module], ...] | None = None,
) -> list[str]:
    """Names in ``module_names`` matching any target (role or pattern), optionally of given types, in that order."""
    patterns = [p for t in targets for p in role_patterns(model, t)]
    modules = dict(model.named_modules())
    return [n for n in module_names if _matches(n, patterns) and (kinds is None or isinstance(modules[n], kinds))]


def role_modules(model: nn.Module, role: str, component: str | None = None) -> list[str]:
    """Names of modules playing ``role``, in module order; with ``component``, only those inside it.

    A role the model declares with no patterns (e.g. ``prompt_site`` on Swin UNETR)
    gives an empty list.

    Raises:
        UserError: unknown role, or unknown component.
    """
    roles: dict[str, list[str]] = getattr(model, "peft_roles", {}) or {}
    if role not in roles:
        raise UserError(f"model has no PEFT role {role!r}; it has {', '.join(roles)}")
    scope = component_modules(model, component) if component is not None else [n for n, _ in model.named_modules()]
    return select_modules(model, scope, [role])


def module_component(model: nn.Module, module_name: str) -> str | None:
    """The component holding module ``module_name``, or ``None`` (stem, bottleneck, ...)."""
    components: dict[str, list[str]] = getattr(model, "components", {}) or {}
    parts = module_name.split(".")
    prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))] if module_name else []
    for component, patterns in components.items():
        if any(_matches(p, patterns) for p in prefixes):
            return component
    return None


def count_parameters(model: nn.Module) -> dict[str, Any]:
    """Parameter counts: ``{"total": n, "components": {name: n, ...}, "other": n}``.

    ``total`` counts every parameter of the model (the GAN's discriminator
    included); ``other`` is what lies in no component (e.g. the GAN's stem,
    bottleneck and output convolutions).  Shared parameters count once.
    Works on models built on the ``meta`` device.
    """
    seen: set[int] = set()
    per_component = {c: 0 for c in getattr(model, "components", {})}
    total = other = 0
    for module_name, module in model.named_modules():
        owner = module_component(model, module_name)
        for param in module.parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            total += param.numel()
            if owner is None:
                other += param.numel()
            else:
                per_component[owner] += param.numel()
    return {"total": total, "components": per_component, "other": other}


def scope_parameter_count(model: nn.Module, component: str = WHOLE_MODEL) -> int:
    """Parameters of the modules in ``component`` (default: outside the frozen components), shared ones once."""
    scope = set(component_modules(model, component))
    seen: set[int] = set()
    total = 0
    for name, module in model.named_modules():
        if name in scope:
            for p in module.parameters(recurse=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
    return total


__all__ = [
    "ROLES",
    "WHOLE_MODEL",
    "checkpoint_blocks",
    "component_modules",
    "count_parameters",
    "frozen_module_names",
    "init_contract",
    "mark_prompt_site",
    "module_component",
    "role_modules",
    "role_patterns",
    "scope_parameter_count",
    "select_modules",
]
