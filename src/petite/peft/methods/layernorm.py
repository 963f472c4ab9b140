"""LayerNorm tuning (selective): train the affine parameters of normalisation layers in scope.

"Normalisation layer" means LayerNorm, GroupNorm, BatchNorm and InstanceNorm
modules (by type, so a norm missing from the model's ``norm`` role still counts);
norms without affine parameters contribute nothing.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from petite.peft.methods.base import Method, MethodConfig
from petite.peft.methods.layers import NORM_TYPES


@dataclasses.dataclass(frozen=True)
class LayerNormConfig(MethodConfig):
    """LayerNorm tuning has no options."""


class LayerNormTuning(Method):
    """Train every normalisation layer's weight and bias within the scope."""

    name = "layernorm"
    config_class = LayerNormConfig
    identity_init = True

    def apply(self, model: nn.Module, module_names: list[str]) -> list[nn.Parameter]:
        scope = set(module_names)
        out: list[nn.Parameter] = []
        for name, module in model.named_modules():
            if name in scope and isinstance(module, NORM_TYPES):
                out.extend(module.parameters(recurse=False))
        return out

    def is_feasible(self, model: nn.Module, module_names: list[str]) -> bool:
        return bool(self.apply(model, module_names))
