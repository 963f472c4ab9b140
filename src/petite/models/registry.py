"""Model registry: build a model by name and preset.

``build_model(name, preset, **overrides)`` is the one way petite makes a
network; every model it returns carries the plain-data contract read by
:mod:`petite.models.contract`.  Presets are data (dicts of constructor
arguments) kept beside each architecture: ``paper`` (the reference setting),
``small`` and ``tiny`` (CPU-sized).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

from petite.errors import UserError
from petite.models.cvtgan import CVTGAN_PRESETS, CvTGAN
from petite.models.swin import SWIN_PRESETS, SwinUNETR
from petite.models.unetr import UNETR, UNETR_PRESETS

#: Preset names every model provides.
PRESET_NAMES: tuple[str, ...] = ("paper", "small", "tiny")


#: Model name -> (class, preset table).
MODELS: dict[str, tuple[Callable[..., nn.Module], dict[str, dict[str, Any]]]] = {
    "unetr": (UNETR, UNETR_PRESETS),
    "cvtgan": (CvTGAN, CVTGAN_PRESETS),
    "swin_unetr": (SwinUNETR, SWIN_PRESETS),
}


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return list(MODELS)


def list_presets(name: str) -> dict[str, dict[str, Any]]:
    """The preset table of model ``name``: preset name -> constructor arguments (a copy)."""
    builders = MODELS
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
    cls = MODELS[name][0]
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
