"""petite: parameter-efficient fine-tuning of 3D medical imaging networks.

``petite.simulate``, ``pretrain``, ``finetune``, ``evaluate``, ``predict`` and
``load_model`` are the Python API (:mod:`petite.api`); they are loaded on first
use, so ``import petite`` itself stays fast (no torch).
"""

from __future__ import annotations

from typing import Any

from petite.version import __version__

_API = ("evaluate", "finetune", "load_model", "predict", "pretrain", "simulate")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    # PEP 562: the API module (and torch with it) is imported only when one of its functions is asked for.
    if name in _API:
        from petite import api

        return getattr(api, name)
    raise AttributeError(f"module 'petite' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
