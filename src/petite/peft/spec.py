"""Mix-PEFT as data: which method trains which component, as one validated value.

Grammar (comma-separated items; options ``:``-separated, list values ``/``-separated)::

    encoder=vpt:tokens=8/32,decoder=lora:r=8,bitfit
    lora:r=4            a bare method: the whole model (every module outside
                        ``model.frozen_components``), alone or with ``bitfit``
    bitfit              global BitFit: every bias outside the frozen components
    petite-unetr | petite-cvtgan | full | none        presets (the whole string)

``full`` trains everything outside the frozen components; ``none`` trains
nothing (No-FT).  A :class:`Spec` is frozen and canonical: options are resolved
against the method's defaults, so ``encoder=lora`` and ``encoder=lora:r=8``
compare equal, and :meth:`Spec.to_string` writes one form (components in a fixed
order, default options omitted).  Component names are checked against the model
when the spec is applied (:func:`petite.peft.apply.apply_spec`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from petite.atomic import write_text
from petite.documents import read_yaml
from petite.errors import UserError
from petite.models.contract import WHOLE_MODEL
from petite.peft.methods import Method, MethodConfig, format_value, method_class

PRESETS: dict[str, str] = {
    "petite-unetr": "encoder=lora:r=4,decoder=ssf,bitfit",
    "petite-cvtgan": "encoder=vpt:tokens=8/32,decoder=lora:r=8,bitfit",
    "full": "full",
    "none": "none",
}

_COMPONENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCOPE_ORDER = {WHOLE_MODEL: 0, "encoder": 1, "decoder": 2}


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One method with its resolved options."""

    name: str
    config: MethodConfig

    @classmethod
    def create(cls, name: str, options: Mapping[str, Any] | None = None) -> MethodSpec:
        """Validate ``name`` and ``options`` (strings or typed values) into a method spec."""
        config_cls = method_class(name).config_class
        return cls(name, config_cls.from_options(name, dict(options or {})))

    def build(self) -> Method:
        """A fresh method object for this spec."""
        return method_class(self.name)(self.config)

    def to_string(self) -> str:
        """``name[:key=value...]`` with only non-default options."""
        opts = self.config.non_default_options()
        return ":".join([self.name, *(f"{k}={format_value(v)}" for k, v in opts.items())])


@dataclasses.dataclass(frozen=True)
class Spec:
    """A validated Mix-PEFT specification.

    ``methods``: ``(scope, MethodSpec)`` pairs in canonical order, scope a component
    name or ``"*"`` (whole model); ``bitfit``: global BitFit; ``full``: full fine-tuning.
    """

    methods: tuple[tuple[str, MethodSpec], ...] = ()
    bitfit: bool = False
    full: bool = False

    def __post_init__(self) -> None:
        scopes = [s for s, _ in self.methods]
        if len(set(scopes)) != len(scopes):
            raise UserError(f"a component is given twice in the PEFT spec: {', '.join(scopes)}")
        if WHOLE_MODEL in scopes and len(scopes) > 1:
            raise UserError("a bare method applies to the whole model and cannot be combined with component=method")
        if self.full and (self.methods or self.bitfit):
            raise UserError("'full' trains everything and cannot be combined with other methods")
        for s in scopes:
            if s != WHOLE_MODEL and not _COMPONENT_RE.match(s):
                raise UserError(f"bad component name {s!r} in PEFT spec")
        # Canonical order, so equal specs compare (and hash) equal.
        ordered = tuple(sorted(self.methods, key=lambda sm: (_SCOPE_ORDER.get(sm[0], 3), sm[0])))
        object.__setattr__(self, "methods", ordered)

    # ------------------------------------------------------------------ parsing

    @classmethod
    def parse(cls, text: str | Spec) -> Spec:
        """Parse a spec string or preset name (UserError with a one-line message if invalid)."""
        if isinstance(text, Spec):
            return text
        text = str(text).strip()
        if text in PRESETS and PRESETS[text] != text:
            return cls.parse(PRESETS[text])
        if text == "none":
            return cls()
        if text == "full":
            return cls(full=True)
        if not text:
            raise UserError("empty PEFT spec (use 'none' for no fine-tuning)")
        methods: list[tuple[str, MethodSpec]] = []
        bitfit = False
        for item in (part.strip() for part in text.split(",")):
            if not item:
                raise UserError(f"empty item in PEFT spec {text!r}")
            if item in PRESETS:
                raise UserError(f"preset {item!r} must be the whole PEFT spec, not one item of {text!r}")
            head, *opt_items = item.split(":")
            if "=" in head:
                scope, name = (s.strip() for s in head.split("=", 1))
            elif head == "bitfit" and not opt_items:
                if bitfit:
                    raise UserError(f"'bitfit' given twice in PEFT spec {text!r}")
                bitfit = True
                continue
            else:
                scope, name = WHOLE_MODEL, head.strip()
            options: dict[str, str] = {}
            for opt in opt_items:
                key, eq, value = opt.partition("=")
                key = key.strip()
                if not eq or not key or not value.strip():
                    raise UserError(f"bad option {opt!r} in {item!r}: expected key=value")
                if key in options:
                    raise UserError(f"option {key!r} given twice in {item!r}")
                options[key] = value.strip()
            methods.append((scope, MethodSpec.create(name, options)))
        return cls(tuple(methods), bitfit=bitfit)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Spec:
        """Inverse of :meth:`to_dict` (options may be typed or strings)."""
        if not isinstance(data, Mapping):
            raise UserError("a PEFT spec mapping must be a dict")
        unknown = set(data) - {"methods", "bitfit", "full"}
        if unknown:
            raise UserError(f"unknown keys in PEFT spec: {', '.join(sorted(unknown))}")
        methods_in = data.get("methods") or {}
        if not isinstance(methods_in, Mapping):
            raise UserError("'methods' in a PEFT spec must map component -> {method, options}")
        methods = []
        for scope, entry in methods_in.items():
            if not isinstance(entry, Mapping) or "method" not in entry:
                raise UserError(f"PEFT spec entry for {scope!r} needs a 'method'")
            extra = set(entry) - {"method", "options"}
            if extra:
                raise UserError(f"unknown keys for {scope!r} in PEFT spec: {', '.join(sorted(extra))}")
            methods.append((str(scope), MethodSpec.create(str(entry["method"]), entry.get("options") or {})))
        for flag in ("bitfit", "full"):
            if not isinstance(data.get(flag, False), bool):
                raise UserError(f"'{flag}' in a PEFT spec must be true or false")
        return cls(tuple(methods), bitfit=bool(data.get("bitfit", False)), full=bool(data.get("full", False)))

    @classmethod
    def from_yaml(cls, path: str | Path) -> Spec:
        """Read a spec from YAML: a spec string, ``{spec: "..."}``, the :meth:`to_dict` mapping, or both
        (as :meth:`to_yaml` writes; they must agree)."""
        path = Path(path)
        data = read_yaml(path, "spec file")
        try:
            if isinstance(data, str):
                return cls.parse(data)
            if isinstance(data, Mapping) and set(data) == {"spec"}:
                return cls.parse(str(data["spec"]))
            if isinstance(data, Mapping) and "spec" in data:
                # What to_yaml writes: the string for people, the explicit mapping for programs.
                rest = cls.from_dict({k: v for k, v in data.items() if k != "spec"})
                if cls.parse(str(data["spec"])) != rest:
                    raise UserError(f"'spec: {data['spec']}' disagrees with the methods listed beside it")
                return rest
            return cls.from_dict(data)
        except UserError as err:
            raise UserError(str(err), path) from None

    # ------------------------------------------------------------------ output

    def to_string(self) -> str:
        """The canonical spec string (``Spec.parse(s.to_string()) == s``)."""
        if self.full:
            return "full"
        if self.is_empty:
            return "none"
        items = [m.to_string() if s == WHOLE_MODEL else f"{s}={m.to_string()}" for s, m in self.methods]
        if self.bitfit:
            items.append("bitfit")
        return ",".join(items)

    def __str__(self) -> str:
        return self.to_string()

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-friendly form with every option explicit."""
        return {
            "methods": {s: {"method": m.name, "options": m.config.options()} for s, m in self.methods},
            "bitfit": self.bitfit,
            "full": self.full,
        }

    def to_yaml(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as YAML (atomically)."""
        write_text(path, yaml.safe_dump({"spec": self.to_string(), **self.to_dict()}, sort_keys=False))

    # ------------------------------------------------------------------ queries

    @property
    def is_empty(self) -> bool:
        """True for ``none`` (No-FT): nothing trains."""
        return not (self.methods or self.bitfit or self.full)

    @property
    def scopes(self) -> tuple[str, ...]:
        """The component names (or ``"*"``) that carry a method."""
        return tuple(s for s, _ in self.methods)

    def method_for(self, scope: str) -> MethodSpec | None:
        """The method applied to ``scope``, if any."""
        return dict(self.methods).get(scope)


def as_spec(spec: str | Spec) -> Spec:
    """Accept a spec string, preset name or :class:`Spec`."""
    return Spec.parse(spec)
