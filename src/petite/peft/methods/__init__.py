"""The PEFT method interface and the scope helpers every method shares.

A method is one small module in this package: a frozen config dataclass (its
spec options) and a :class:`Method` subclass whose :meth:`Method.apply` attaches
the method to the modules in scope and returns the tensors it trains.  Methods
never change ``requires_grad`` of anything themselves beyond their own new
parameters: :func:`petite.peft.apply.apply_spec` decides the final trainable set.

Scopes and roles follow the "Contract: models" in ``docs/DESIGN.md``:
``model.components`` and ``model.peft_roles`` hold fnmatch patterns over
``model.named_modules()`` names.  The helpers here resolve them without importing
``petite.models`` so the PEFT library works on any module that carries the
contract attributes.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any, ClassVar

import torch
from torch import nn

from petite.errors import UserError

# Module types whose parameters are "normalisation parameters" for LayerNorm tuning
# and whose outputs SSF may scale.
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
)


# --------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Base class of method configs: frozen dataclasses whose fields are spec options.

    ``option_kinds`` maps each option to its parser kind: ``int``, ``float``,
    ``ints`` (``8/32``) or ``strs`` (``query/key``).  Subclasses validate values in
    ``__post_init__`` and raise :class:`UserError` with a one-line message.
    """

    option_kinds: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_options(cls, method: str, options: Mapping[str, str]) -> MethodConfig:
        """Build a config from raw ``key=value`` strings, rejecting unknown keys and bad values."""
        values: dict[str, Any] = {}
        for key, raw in options.items():
            kind = cls.option_kinds.get(key)
            if kind is None:
                known = ", ".join(cls.option_kinds) or "none"
                raise UserError(f"unknown option {key!r} for method {method!r} (options: {known})")
            values[key] = _parse_value(method, key, kind, raw)
        return cls(**values)

    def non_default_options(self) -> dict[str, Any]:
        """Options that differ from the defaults, in field order (the canonical string form)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            if value != default:
                out[f.name] = value
        return out

    def options(self) -> dict[str, Any]:
        """All options (JSON-friendly: tuples become lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def format_value(value: Any) -> str:
    """The spec-string form of an option value (inverse of the parsers)."""
    if isinstance(value, (tuple, list)):
        return "/".join(format_value(v) for v in value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def _parse_value(method: str, key: str, kind: str, raw: Any) -> Any:
    where = f"option {key}={raw!r} of method {method!r}"
    try:
        if kind == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "ints":
            items = raw if isinstance(raw, (list, tuple)) else str(raw).split("/")
            return tuple(int(v) for v in items)
        if kind == "strs":
            items = raw if isinstance(raw, (list, tuple)) else str(raw).split("/")
            out = tuple(str(v).strip() for v in items)
            if not all(out):
                raise ValueError
            return out
    except (TypeError, ValueError):
        raise UserError(f"bad value in {where}: expected {kind}") from None
    raise AssertionError(f"unknown option kind {kind}")


def coerce_options(method: str, config_cls: type[MethodConfig], options: Mapping[str, Any]) -> MethodConfig:
    """Like :meth:`MethodConfig.from_options` but accepts already-typed values (JSON/YAML)."""
    return config_cls.from_options(method, options)


# --------------------------------------------------------------------------- method


class Method(ABC):
    """One PEFT method bound to its config.

    Class attributes describe the method for spec validation, accounting and merge:
    ``name``; ``config_class``; ``additive`` (adds modules or tensors rather than
    selecting existing ones); ``identity_init`` (the model's output is unchanged at
    init); ``mergeable`` (folds into base weights at inference).
    """

    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]]
    additive: ClassVar[bool] = False
    identity_init: ClassVar[bool] = False
    mergeable: ClassVar[bool] = False

    def __init__(self, config: MethodConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()

    @abstractmethod
    def apply(self, model: nn.Module, module_names: list[str]) -> list[nn.Parameter]:
        """Attach the method to the modules named in ``module_names``; return the tensors it trains."""

    def merge(self, model: nn.Module) -> None:  # noqa: B027 - optional hook
        """Fold the method into the base weights (only mergeable methods do anything)."""

    def targets(self, model: nn.Module, module_names: list[str]) -> list[str]:
        """The modules within ``module_names`` the method attaches to (methods that wrap layers say which)."""
        return list(module_names)

    def is_feasible(self, model: nn.Module, module_names: list[str]) -> bool:
        """Whether the method has anything to attach to within ``module_names``."""
        return bool(self.targets(model, module_names))


# --------------------------------------------------------------------------- scopes


def frozen_module_names(model: nn.Module) -> list[str]:
    """Names of every module inside ``model.frozen_components``."""
    names: set[str] = set()
    for comp in getattr(model, "frozen_components", []) or []:
        names.update(component_module_names(model, comp))
    return [n for n, _ in model.named_modules() if n in names]


def component_module_names(model: nn.Module, component: str) -> list[str]:
    """Every module name in ``component``: matching a pattern or under a module that does.

    ``component == "*"`` means the whole model outside ``frozen_components``.
    Names are returned in ``named_modules()`` order.
    """
    all_names = [n for n, _ in model.named_modules()]
    if component == "*":
        frozen = set(frozen_module_names(model))
        return [n for n in all_names if n not in frozen]
    components: dict[str, list[str]] = getattr(model, "components", {}) or {}
    if component not in components:
        known = ", ".join(sorted(components)) or "none"
        raise UserError(f"unknown component {component!r} for this model (components: {known})")
    patterns = components[component]
    roots = [n for n in all_names if n and any(fnmatchcase(n, p) for p in patterns)]
    return [n for n in all_names if any(n == r or n.startswith(r + ".") for r in roots)]


def role_patterns(model: nn.Module, target: str) -> list[str]:
    """A target is a role name from ``model.peft_roles`` or else an fnmatch pattern itself."""
    roles: dict[str, list[str]] = getattr(model, "peft_roles", {}) or {}
    return list(roles[target]) if target in roles else [target]


def select_modules(
    model: nn.Module,
    module_names: Iterable[str],
    targets: Iterable[str],
    kinds: tuple[type[nn.Module], ...] | None = None,
) -> list[str]:
    """Names in ``module_names`` matching any target (role or pattern), optionally of given types."""
    patterns = [p for t in targets for p in role_patterns(model, t)]
    modules = dict(model.named_modules())
    out = []
    for n in module_names:
        if n and any(fnmatchcase(n, p) for p in patterns):
            if kinds is None or isinstance(modules[n], kinds):
                out.append(n)
    return out


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule called ``name`` is."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def out_features(module: nn.Module) -> int:
    """Output feature/channel count of a layer (Linear, Conv, norm) or of a block (its last such layer)."""
    for attr in ("out_features", "out_channels", "num_features", "num_channels"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    if isinstance(module, nn.LayerNorm):
        return int(module.normalized_shape[-1])
    # A block: the last layer registered inside it decides the output width.
    last: int | None = None
    for sub in module.modules():
        if sub is module:
            continue
        if isinstance(sub, (nn.Linear, nn.modules.conv._ConvNd)):
            last = out_features(sub)
    if last is None:
        raise UserError(f"cannot tell the output width of {type(module).__name__}")
    return last


def feature_axis(module: nn.Module) -> int:
    """Axis of the features a layer outputs: last for tokens (Linear, LayerNorm), 1 for (B, C, ...) volumes."""
    if isinstance(module, (nn.Linear, nn.LayerNorm)):
        return -1
    return 1


def init_params(params: Iterable[nn.Parameter], fn: Callable[[torch.Tensor], Any]) -> None:
    """Apply an in-place initialiser without recording autograd history."""
    with torch.no_grad():
        for p in params:
            fn(p)
