"""Networks for PET-to-PET restoration (UNETR, 3D CVT-GAN) and segmentation (Swin UNETR).

``build_model(name, preset, **overrides)`` is the entry point; every model it
returns carries the plain-data contract of :mod:`petite.models.contract`
(components, PEFT roles, prompt sites), read by :func:`component_modules` and
:func:`role_modules`.
"""

from petite.models.checkpoint import fingerprint, load_model, save_model
from petite.models.contract import (
    ROLES,
    component_modules,
    count_parameters,
    module_component,
    role_modules,
)
from petite.models.registry import PRESET_NAMES, build_model, list_models, list_presets

__all__ = [
    "PRESET_NAMES",
    "ROLES",
    "build_model",
    "component_modules",
    "count_parameters",
    "fingerprint",
    "list_models",
    "list_presets",
    "load_model",
    "module_component",
    "role_modules",
    "save_model",
]
