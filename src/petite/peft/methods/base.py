"""The PEFT method interface: a config of options and a :class:`Method` that applies, merges and unmerges itself.

A method is one small module in this package: a frozen config dataclass (its
spec options) and a :class:`Method` subclass.  Subclassing registers the method
under its ``name`` (:data:`METHODS`), so adding a method means adding one file
and importing it in ``petite/peft/methods/__init__.py``; nothing else in petite
names methods.  A method

- :meth:`~Method.apply` attaches itself to the modules of one scope and returns the tensors it trains
  (it never changes ``requires_grad``: :func:`petite.peft.apply.apply_spec` decides the trainable set);
- :meth:`~Method.merge` folds itself into the base weights for inference and :meth:`~Method.unmerge`
  takes it out again (mergeable methods: LoRA, DoRA, SSF); :meth:`~Method.unload` then replaces its
  merged wrappers with the plain layers.

Scopes and roles come from the model contract (:mod:`petite.models.contract`).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn

from petite.atomic import to_jsonable
from petite.errors import UserError
from petite.peft.methods.layers import find_wrapper, replace_module

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
        return {f.name: to_jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


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


# --------------------------------------------------------------------------- method


class Method(ABC):
    """One PEFT method bound to its config.

    Class attributes describe the method for spec validation, accounting and merge:
    ``name`` (its spec name; a subclass with a ``name`` registers itself in
    :data:`METHODS`); ``config_class``; ``additive`` (adds modules or tensors rather
    than selecting existing ones); ``identity_init`` (the model's output is unchanged
    at init); ``mergeable`` (folds into the base weights at inference).

    A method object is bound to one model once applied: :meth:`apply` records the
    modules it wrapped in :attr:`wrapped`, which :meth:`merge`, :meth:`unmerge` and
    :meth:`unload` act on.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]]
    additive: ClassVar[bool] = False
    identity_init: ClassVar[bool] = False
    mergeable: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is not None:
            if name in METHODS and METHODS[name] is not cls:
                raise AssertionError(f"two PEFT methods are called {name!r}")  # programming error
            METHODS[name] = cls

    def __init__(self, config: MethodConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()
        self.wrapped: list[str] = []  # module names this method wrapped (filled by apply)

    @abstractmethod
    def apply(self, model: nn.Module, module_names: list[str]) -> list[nn.Parameter]:
        """Attach the method to the modules named in ``module_names``; return the tensors it trains."""

    def targets(self, model: nn.Module, module_names: list[str]) -> list[str]:
        """The modules within ``module_names`` the method attaches to (methods that wrap layers say which)."""
        return list(module_names)

    def is_feasible(self, model: nn.Module, module_names: list[str]) -> bool:
        """Whether the method has anything to attach to within ``module_names``."""
        return bool(self.targets(model, module_names))

    # ------------------------------------------------------------------ merge
    # Mergeable methods wrap layers in modules with ``merge()``, ``unmerge()``, ``merged`` and
    # ``base_layer`` (peft's LoRA layers and ours); the three hooks below act on those wrappers.

    def wrappers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """``(name, wrapper)`` of every layer this method wrapped that is still wrapped."""
        out = []
        for name in self.wrapped:
            module = find_wrapper(model, name, self.is_wrapper)
            if module is not None:
                out.append((name, module))
        return out

    def is_wrapper(self, module: nn.Module) -> bool:
        """Whether ``module`` is one of this method's wrappers (mergeable methods override)."""
        return False

    def merge(self, model: nn.Module) -> None:
        """Fold the method into the base weights; the output is unchanged (non-mergeable methods: nothing)."""
        for _, wrapper in self.wrappers(model):
            if not wrapper.merged:
                wrapper.merge()

    def unmerge(self, model: nn.Module) -> None:
        """Take the method back out of the base weights (the inverse of :meth:`merge`)."""
        for _, wrapper in self.wrappers(model):
            if wrapper.merged:
                wrapper.unmerge()

    def unload(self, model: nn.Module) -> None:
        """Replace every merged wrapper with its base layer: the plain architecture again."""
        for name, wrapper in self.wrappers(model):
            if not wrapper.merged:
                raise RuntimeError(f"{self.name}: unload of unmerged layer {name}")
            replace_module(model, name, wrapper.base_layer, inner=wrapper)


#: Method name -> class, filled as method classes are defined (``petite/peft/methods/__init__.py``
#: imports every method module).
METHODS: dict[str, type[Method]] = {}


def method_class(name: str) -> type[Method]:
    """The method class registered under ``name`` (UserError if unknown)."""
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"unknown PEFT method {name!r} (methods: {', '.join(METHODS)})") from None
