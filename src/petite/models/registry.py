"""Model registry: build a model by name and preset; query its components and PEFT roles.

Every model petite builds carries the plain-data contract of ``docs/DESIGN.md``
("Contract: models"): ``config``, ``components``, ``frozen_components``,
``peft_roles`` and prompt sites with ``prompt_width`` / ``prompts``.  The helpers
here are the only code that interprets the fnmatch patterns of that contract, so
the PEFT library, the CLI and the reports all agree on what "the encoder" or
"the query projections" are.

Pattern semantics (used by :func:`component_modules` and :func:`role_modules`):

- names are those of ``model.named_modules()`` (the root module, named ``""``,
  never matches);
- ``fnmatch.fnmatchcase`` is used, so ``*`` also matches dots
  (``"vit.blocks.*.attn.to_q"`` matches every block);
- a module belongs to a *component* if its own name matches one of the
  component's patterns **or** it sits under a module that does;
- a module plays a *role* only if its own name matches one of the role's
  patterns (roles name individual layers; their children are not included).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
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

#: Preset names every model provides.
PRESET_NAMES: tuple[str, ...] = ("paper", "small", "tiny")


def _builders() -> dict[str, tuple[Callable[..., nn.Module], dict[str, dict[str, Any]]]]:
    # Imported lazily so `petite.models.registry` stays importable from the model modules.
    from petite.models.cvtgan import CVTGAN_PRESETS, CvTGAN
    from petite.models.swin import SWIN_PRESETS, SwinUNETR
    from petite.models.unetr import UNETR, UNETR_PRESETS

    return {
        "unetr": (UNETR, UNETR_PRESETS),
        "cvtgan": (CvTGAN, CVTGAN_PRESETS),
        "swin_unetr": (SwinUNETR, SWIN_PRESETS),
    }


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return list(_builders())


def list_presets(name: str) -> dict[str, dict[str, Any]]:
    """The preset table of model ``name``: preset name -> constructor arguments (a copy)."""
    builders = _builders()
    if name not in builders:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(builders)}")
    return {preset: dict(args) for preset, args in builders[name][1].items()}


def build_model(name: str, preset: str = "small", **overrides: Any) -> nn.Module:
    """Build model ``name`` (``unetr``, ``cvtgan``, ``swin_unetr``) from ``preset``.

    ``overrides`` replace individual constructor arguments of the preset (e.g.
    ``img_size=(64, 64, 32)``).  The returned model's ``config`` holds ``name``,
    ``preset`` and every constructor argument, so ``build_model(**config)``-style
    rebuilding (see :func:`petite.models.checkpoint.load_model`) gives the same
    architecture.  Build under ``with torch.device("meta"):`` to count the
    parameters of a large preset without allocating memory.

    Raises:
        UserError: unknown model, preset or argument, or an invalid argument value.
    """
    presets = list_presets(name)
    if preset not in presets:
        raise UserError(f"unknown preset {preset!r} for model {name!r}; choose one of {', '.join(presets)}")
    cls = _builders()[name][0]
    args = presets[preset]
    unknown = sorted(set(overrides) - set(args))
    if unknown:
        raise UserError(f"unknown argument(s) {', '.join(unknown)} for model {name!r}; known: {', '.join(sorted(args))}")
    args.update(overrides)
    try:
        model = cls(**args)
    except (ValueError, TypeError) as err:
        raise UserError(f"invalid arguments for model {name!r} preset {preset!r}: {err}") from err
    model.config["preset"] = preset
    return model


def _matches(name: str, patterns: list[str]) -> bool:
    return bool(name) and any(fnmatch.fnmatchcase(name, p) for p in patterns)


def component_modules(model: nn.Module, component: str) -> list[str]:
    """Names of every module in ``component`` (matching a pattern or under a match), in module order.

    Raises:
        UserError: the model declares no such component.
    """
    components: dict[str, list[str]] = model.components  # type: ignore[assignment]
    if component not in components:
        raise UserError(f"model has no component {component!r}; it has {', '.join(components) or 'none'}")
    patterns = components[component]
    roots: list[str] = []
    names: list[str] = []
    for name, _ in model.named_modules():
        # named_modules() is depth-first, so a matched root precedes everything under it.
        if _matches(name, patterns) or any(name.startswith(r + ".") for r in roots):
            if _matches(name, patterns):
                roots.append(name)
            names.append(name)
    return names


def role_modules(model: nn.Module, role: str, component: str | None = None) -> list[str]:
    """Names of modules whose own name matches a ``role`` pattern, in module order.

    With ``component``, only modules inside that component are returned.  A role
    the model declares with no patterns (e.g. ``prompt_site`` on Swin UNETR)
    gives an empty list.

    Raises:
        UserError: unknown role, or unknown component.
    """
    roles: dict[str, list[str]] = model.peft_roles  # type: ignore[assignment]
    if role not in roles:
        raise UserError(f"model has no PEFT role {role!r}; it has {', '.join(roles)}")
    names = [name for name, _ in model.named_modules() if _matches(name, roles[role])]
    if component is not None:
        inside = set(component_modules(model, component))
        names = [n for n in names if n in inside]
    return names


def module_component(model: nn.Module, module_name: str) -> str | None:
    """The component holding module ``module_name``, or ``None`` (stem, bottleneck, ...)."""
    components: dict[str, list[str]] = model.components  # type: ignore[assignment]
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
    per_component = {c: 0 for c in model.components}  # type: ignore[union-attr]
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


def init_contract(
    model: nn.Module,
    config: dict[str, Any],
    components: dict[str, list[str]],
    peft_roles: dict[str, list[str]],
    frozen_components: list[str] | None = None,
) -> None:
    """Attach the model contract attributes (used by the model constructors)."""
    missing = [r for r in ROLES if r not in peft_roles]
    if missing:
        raise AssertionError(f"peft_roles lacks {missing}")  # programming error in a model class
    model.config = config
    model.components = components
    model.frozen_components = list(frozen_components or [])
    model.peft_roles = peft_roles


def mark_prompt_site(module: nn.Module, width: int, default_tokens: int = 8) -> None:
    """Make ``module`` a VPT prompt site: ``prompt_width = width``, ``prompts = None``.

    ``default_tokens`` is the paper's number of prompt tokens at this site, used
    when a VPT spec does not give one.
    """
    module.prompt_width = int(width)
    module.prompt_default_tokens = int(default_tokens)
    module.prompts = None
