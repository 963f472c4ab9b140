"""SSF (Lian et al., 2022): learnable scale ``gamma`` (init 1) and shift ``beta`` (init 0)
on the outputs of attention (``attn_out``), MLP (``mlp_out``) and norm layers (``norm``).

SSF goes *after* the norm layers: a per-channel scale placed before an
InstanceNorm without affine parameters is normalised away and does nothing.
The feature axis is the last one for token outputs (Linear, LayerNorm) and axis
1 for ``(B, C, D, H, W)`` outputs (convs, Batch/Instance/GroupNorm).

SSF is linear, so :meth:`SSFWrapper.merge` folds it into the wrapped layer: Linear/Conv
weight and bias, norm affine parameters; a norm without affine parameters is
replaced by the same norm with affine parameters carrying ``gamma`` / ``beta``
(exact: ``gamma * norm(x) + beta`` is what an affine norm computes).  Where the
wrapped layer is another method's (merged) wrapper, SSF folds into the plain layer
under it; :meth:`SSFWrapper.unmerge` divides the fold out again.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from petite.errors import UserError
from petite.models.contract import select_modules
from petite.peft.methods.base import Method, MethodConfig
from petite.peft.methods.layers import (
    NORM_TYPES,
    feature_axis,
    innermost,
    out_features,
    replace_module,
)

SSF_KINDS: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd, *NORM_TYPES)


@dataclasses.dataclass(frozen=True)
class SSFConfig(MethodConfig):
    """Option ``targets``: roles or module-name patterns (default attn_out/mlp_out/norm)."""

    targets: tuple[str, ...] = ("attn_out", "mlp_out", "norm")

    option_kinds: ClassVar[dict[str, str]] = {"targets": "strs"}


class SSFWrapper(nn.Module):
    """``base_layer(x) * gamma + beta`` along the layer's feature axis."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.axis = feature_axis(base_layer)
        width = out_features(base_layer)
        ref = next(base_layer.parameters(), None)
        kw: dict[str, Any] = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
        self.gamma = nn.Parameter(torch.ones(width, **kw))
        self.beta = nn.Parameter(torch.zeros(width, **kw))
        self.merged = False
        self._plain_norm: nn.Module | None = None  # a non-affine norm replaced by an affine copy at merge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base_layer
        if self.merged:
            return base(x)
        # Norms without running statistics: fold gamma/beta into the norm's affine on the fly
        # (exact: gamma * (w * n + b) + beta).  Same output, but no extra full-size activations are
        # stored for backward - on a CNN decoder these are the largest tensors of the network.
        if isinstance(base, (nn.LayerNorm, nn.GroupNorm)) or (
            isinstance(base, nn.modules.instancenorm._InstanceNorm) and not base.track_running_stats
        ):
            weight, bias = self._folded_affine(base.weight, base.bias)
            if isinstance(base, nn.LayerNorm):
                return F.layer_norm(x, base.normalized_shape, weight, bias, base.eps)
            if isinstance(base, nn.GroupNorm):
                return F.group_norm(x, base.num_groups, weight, bias, base.eps)
            return F.instance_norm(x, None, None, weight, bias, True, 0.0, base.eps)
        y = base(x)
        shape = [1] * y.dim()
        shape[self.axis] = -1
        return y * self.gamma.view(shape) + self.beta.view(shape)

    def _folded_affine(
        self, weight: torch.Tensor | None, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.gamma if weight is None else weight.reshape(self.gamma.shape) * self.gamma
        b = self.beta if bias is None else bias.reshape(self.beta.shape) * self.gamma + self.beta
        return (w if weight is None else w.reshape(weight.shape)), (b if bias is None else b.reshape(bias.shape))

    @torch.no_grad()
    def merge(self) -> None:
        """Fold gamma/beta into the wrapped layer's weights (exact); ``forward`` is then the layer's own."""
        if self.merged:
            return
        gamma, beta = self.gamma.detach(), self.beta.detach()
        layer = innermost(self.base_layer)
        if isinstance(layer, NORM_TYPES) and getattr(layer, "weight", None) is None:
            # A norm without affine parameters: an affine copy carries gamma and beta.
            self._plain_norm = self.base_layer
            self.base_layer = _with_affine(layer)
            self.base_layer.weight.copy_(gamma)
            self.base_layer.bias.copy_(beta)
        else:
            weight, bias = _output_affine(layer)
            weight.mul_(gamma.view(_broadcast(weight, layer)))
            if bias is None:
                layer.bias = nn.Parameter(beta.clone(), requires_grad=False)
            else:
                bias.copy_(bias * gamma + beta)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Divide gamma/beta out of the wrapped layer again (to float rounding; gamma must have no zero)."""
        if not self.merged:
            return
        if self._plain_norm is not None:
            self.base_layer, self._plain_norm = self._plain_norm, None
        else:
            gamma, beta = self.gamma.detach(), self.beta.detach()
            if not bool((gamma != 0).all()):
                raise UserError("SSF cannot unmerge a scale with zero entries")
            layer = innermost(self.base_layer)
            weight, bias = _output_affine(layer)
            weight.div_(gamma.view(_broadcast(weight, layer)))
            bias.copy_((bias - beta) / gamma)
        self.merged = False


def _output_affine(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight and bias that scale and shift ``layer``'s output features (UserError if it has none)."""
    if isinstance(layer, nn.modules.conv._ConvTransposeNd) and layer.groups != 1:
        raise UserError("SSF merge into a grouped transposed convolution is not supported")
    if isinstance(layer, (nn.Linear, nn.modules.conv._ConvNd, *NORM_TYPES)):
        return layer.weight, layer.bias
    raise UserError(f"SSF cannot merge into {type(layer).__name__}")


def _broadcast(weight: torch.Tensor, layer: nn.Module) -> list[int]:
    # Output features: dim 1 of a transposed conv's (in, out, k..) weight, dim 0 of everything else.
    shape = [1] * weight.dim()
    shape[1 if isinstance(layer, nn.modules.conv._ConvTransposeNd) else 0] = -1
    return shape


def _with_affine(norm: nn.Module) -> nn.Module:
    """A copy of a non-affine norm layer with affine parameters (buffers and mode kept)."""
    if isinstance(norm, nn.LayerNorm):
        new: nn.Module = type(norm)(norm.normalized_shape, eps=norm.eps, elementwise_affine=True)
    elif isinstance(norm, nn.GroupNorm):
        new = nn.GroupNorm(norm.num_groups, norm.num_channels, eps=norm.eps, affine=True)
    else:  # Batch/InstanceNorm share this constructor.
        new = type(norm)(
            norm.num_features, eps=norm.eps, momentum=norm.momentum, affine=True,
            track_running_stats=norm.track_running_stats,
        )
        for key, buf in norm.named_buffers(recurse=False):
            getattr(new, key).copy_(buf)
    ref = next(iter(norm.buffers()), None)
    if ref is not None:
        new = new.to(device=ref.device)
    new.train(norm.training)
    new.requires_grad_(False)
    return new


class SSF(Method):
    """Scale-and-shift after attention, MLP and norm outputs in scope."""

    name = "ssf"
    config_class = SSFConfig
    additive = True
    identity_init = True
    mergeable = True

    def targets(self, model: nn.Module, module_names: list[str]) -> list[str]:
        """The module names this method wraps within ``module_names``."""
        return select_modules(model, module_names, self.config.targets, SSF_KINDS)  # type: ignore[attr-defined]

    def apply(self, model: nn.Module, module_names: list[str]) -> list[nn.Parameter]:
        names = self.targets(model, module_names)
        if not names:
            raise UserError("ssf: no attn_out, mlp_out or norm layers in scope")
        params: list[nn.Parameter] = []
        self.wrapped = list(names)
        for n in names:
            wrapper = SSFWrapper(model.get_submodule(n))
            replace_module(model, n, wrapper)
            params += [wrapper.gamma, wrapper.beta]
        return params

    def is_wrapper(self, module: nn.Module) -> bool:
        return isinstance(module, SSFWrapper)
