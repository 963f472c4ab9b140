"""BitFit (selective): train every bias in scope (Ben Zaken et al., 2022).

A bias is any parameter registered under the attribute name ``bias``; norm
biases count (they are bias terms of the network).  Biases of the ``key`` role are
skipped: a key bias adds ``q . b_k`` to every attention logit of a query, the same
for all keys, which the softmax removes, so it never gets a gradient (honest
accounting: it would be a dead "trainable" tensor).
"""

from __future__ import annotations

import dataclasses

from torch import nn

from petite.models.contract import select_modules
from petite.peft.methods.base import Method, MethodConfig


@dataclasses.dataclass(frozen=True)
class BitFitConfig(MethodConfig):
    """BitFit has no options."""


class BitFit(Method):
    """Train the biases of the modules in scope."""

    name = "bitfit"
    config_class = BitFitConfig
    identity_init = True

    def apply(self, model: nn.Module, module_names: list[str]) -> list[nn.Parameter]:
        keys = set(select_modules(model, module_names, ("key",))) if "key" in getattr(model, "peft_roles", {}) else set()
        scope = set(module_names) - keys
        out: list[nn.Parameter] = []
        for name, module in model.named_modules():
            if name in scope:
                bias = module._parameters.get("bias")
                if isinstance(bias, nn.Parameter):
                    out.append(bias)
        return out

    def is_feasible(self, model: nn.Module, module_names: list[str]) -> bool:
        return bool(self.apply(model, module_names))
