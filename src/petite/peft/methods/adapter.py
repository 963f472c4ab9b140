"""Pfeiffer bottleneck adapters: ``y + up(GELU(down(y)))`` after the feed-forward output.

Placed after the module of the ``mlp`` role (Pfeiffer et al., 2021: after the
FFN only), or after a ``conv_block`` (outputs ``(B, C, D, H, W)``) where a scope
has no MLP - there the projections are 1x1x1 convolutions.  Width
``hidden = max(1, C // rf)``.

Initialisation (why not the usual zero-init): an adapter must start as the
identity, and zero-initialising *both* projections (the reference code) leaves
every weight with zero gradient forever - only the up bias ever learns.  The
common fix "down random, up zero" is identity too, but at step one ``down`` gets
no gradient (it is multiplied by ``up = 0``).  We instead use

* ``down.weight = 0`` and ``down.bias ~ U(0.5, 1.5)``: the hidden activation
  ``h = GELU(down.bias)`` is a non-zero constant, independent of the input;
* ``up.weight`` random (PyTorch's default Linear/Conv init) and
  ``up.bias = -up.weight @ h``: the adapter output ``up(h) = 0`` (bit-exactly in
  float32 too, by the evaluation order in :meth:`Bottleneck.forward`).

So the block is the identity at init, and after one backward every tensor has a
non-zero gradient: ``d/d up.weight = sum(g) h^T`` (h != 0), ``d/d up.bias = sum(g)``,
``d/d down.bias = GELU'(b) * up.weight^T g`` (GELU' > 0 on [0.5, 1.5]) and
``d/d down.weight = (GELU'(b) * up.weight^T g) y^T``.  ``down.weight`` leaves zero at
the first step, after which the adapter depends on its input; no symmetry or
invariant constrains it (the hidden units differ through ``up`` and ``down.bias``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from petite.errors import UserError
from petite.models.contract import role_patterns, select_modules
from petite.peft.methods.base import Method, MethodConfig
from petite.peft.methods.layers import out_features, replace_module


@dataclasses.dataclass(frozen=True)
class AdapterConfig(MethodConfig):
    """Options: reduction factor ``rf`` (hidden = width // rf) and ``targets`` (roles or
    module-name patterns; empty = the ``mlp`` role, else ``conv_block``)."""

    rf: int = 8
    targets: tuple[str, ...] = ()

    option_kinds: ClassVar[dict[str, str]] = {"rf": "int", "targets": "strs"}

    def __post_init__(self) -> None:
        if self.rf < 1:
            raise UserError(f"adapter reduction factor rf must be >= 1, got {self.rf}")


class Bottleneck(nn.Module):
    """``down -> GELU -> up`` on the last axis (tokens) or on axis 1 with 1x1x1 convs (volumes)."""

    def __init__(self, width: int, hidden: int, conv: bool, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.conv = conv
        if conv:
            self.down: nn.Module = nn.Conv3d(width, hidden, 1, **kw)
            self.up: nn.Module = nn.Conv3d(hidden, width, 1, **kw)
        else:
            self.down = nn.Linear(width, hidden, **kw)
            self.up = nn.Linear(hidden, width, **kw)
        self.reset_identity()

    @torch.no_grad()
    def reset_identity(self) -> None:
        """The init described in the module docstring: output exactly 0, all gradients non-zero."""
        down, up = self.down, self.up
        nn.init.zeros_(down.weight)
        nn.init.uniform_(down.bias, 0.5, 1.5)
        up.reset_parameters()
        up.bias.copy_(-self._offset_without_bias())

    def _up_matrix(self) -> torch.Tensor:
        return self.up.weight.reshape(self.up.weight.shape[0], -1)  # (width, hidden) for both kinds

    def _offset_without_bias(self) -> torch.Tensor:
        return F.linear(F.gelu(self.down.bias), self._up_matrix())

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        # Mathematically up(GELU(down(y))), evaluated as up_w (h - h_b) + (up_w h_b + up_b) with
        # h_b = GELU(down_b).  At init (down_w = 0) h == h_b bit for bit, because h_b is computed
        # on a tensor of the same shape and memory layout as h (elementwise kernels may round
        # differently by layout/position), and the second term is z + (-z) for the very same z:
        # the output is exactly 0, not 0 up to rounding.
        a = self.down(y)
        b = self.down.bias.view(1, -1, 1, 1, 1) if self.conv else self.down.bias
        h_b = F.gelu(torch.empty_like(a).copy_(b.expand_as(a)))
        offset = self._offset_without_bias() + self.up.bias
        if self.conv:
            return F.conv3d(F.gelu(a) - h_b, self.up.weight) + offset.view(1, -1, 1, 1, 1)
        return F.linear(F.gelu(a) - h_b, self.up.weight) + offset


class AdapterWrapper(nn.Module):
    """Runs the wrapped module, then adds the bottleneck of its output (residual)."""

    def __init__(self, base_layer: nn.Module, width: int, hidden: int, conv: bool) -> None:
        super().__init__()
        ref = next(base_layer.parameters(), None)
        self.base_layer = base_layer
        self.adapter = Bottleneck(
            width, hidden, conv, device=None if ref is None else ref.device, dtype=None if ref is None else ref.dtype
        )
        self.axis = 1 if conv else -1
        self.width = width

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        y = self.base_layer(*args, **kwargs)
        if y.shape[self.axis] != self.width:
            raise RuntimeError(f"adapter expects {self.width} features on axis {self.axis}, got shape {tuple(y.shape)}")
        return y + self.adapter(y)


class Adapter(Method):
    """Pfeiffer adapters after the MLP (transformer) or conv block (CNN) outputs in scope."""

    name = "adapter"
    config_class = AdapterConfig
    additive = True
    identity_init = True

    def targets(self, model: nn.Module, module_names: list[str]) -> list[str]:
        """The module names this method wraps within ``module_names``."""
        cfg: Any = self.config
        if cfg.targets:
            return select_modules(model, module_names, cfg.targets)
        return select_modules(model, module_names, ("mlp",)) or select_modules(model, module_names, ("conv_block",))

    def apply(self, model: nn.Module, module_names: list[str]) -> list[nn.Parameter]:
        cfg: Any = self.config
        names = self.targets(model, module_names)
        if not names:
            raise UserError("adapter: no mlp or conv_block modules in scope")
        conv_block = role_patterns(model, "conv_block")
        conv_names = set(select_modules(model, names, conv_block)) if "conv_block" in getattr(model, "peft_roles", {}) else set()
        params: list[nn.Parameter] = []
        for n in names:
            module = model.get_submodule(n)
            conv = n in conv_names or _ends_in_conv(module)
            width = out_features(module)
            wrapper = AdapterWrapper(module, width, max(1, width // cfg.rf), conv)
            replace_module(model, n, wrapper)
            params.extend(wrapper.adapter.parameters())
        return params


def _ends_in_conv(module: nn.Module) -> bool:
    last: nn.Module | None = None
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.modules.conv._ConvNd)):
            last = sub
    return isinstance(last, nn.modules.conv._ConvNd)
