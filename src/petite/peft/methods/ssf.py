"""SSF (Lian et al., 2022): learnable scale ``gamma`` (init 1) and shift ``beta`` (init 0)
on the outputs of attention (``attn_out``), MLP (``mlp_out``) and norm layers (``norm``).

SSF goes *after* the norm layers: a per-channel scale placed before an
InstanceNorm without affine parameters is normalised away and does nothing.
The feature axis is the last one for token outputs (Linear, LayerNorm) and axis
1 for ``(B, C, D, H, W)`` outputs (convs, Batch/Instance/GroupNorm).

SSF is linear, so :meth:`SSF.merge` folds it into the wrapped layer: Linear/Conv
weight and bias, norm affine parameters; a norm without affine parameters is
replaced by the same norm with affine parameters carrying ``gamma`` / ``beta``
(exact: ``gamma * norm(x) + beta`` is what an affine norm computes).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from petite.errors import UserError
from petite.peft.methods import NORM_TYPES, Method, MethodConfig, feature_axis, out_features, replace_module, select_modules

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base_layer
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
    def merged_layer(self) -> nn.Module:
        """The base layer with gamma/beta folded in (exact)."""
        base = self.base_layer
        gamma, beta = self.gamma.detach(), self.beta.detach()
        if isinstance(base, (nn.Linear, nn.modules.conv._ConvNd)):
            out_dim = 1 if isinstance(base, nn.modules.conv._ConvTransposeNd) else 0
            if out_dim == 1 and base.groups != 1:
                raise UserError("SSF merge into a grouped transposed convolution is not supported")
            shape = [1] * base.weight.dim()
            shape[out_dim] = -1
            base.weight.mul_(gamma.view(shape))
            if base.bias is None:
                base.bias = nn.Parameter(beta.clone(), requires_grad=False)
            else:
                base.bias.copy_(base.bias * gamma + beta)
            return base
        if isinstance(base, NORM_TYPES):
            if getattr(base, "weight", None) is None:
                base = _with_affine(base)
                base.weight.copy_(gamma)
                base.bias.copy_(beta)
                return base
            base.weight.mul_(gamma)
            base.bias.copy_(base.bias * gamma + beta)
            return base
        raise UserError(f"SSF cannot merge into {type(base).__name__}")


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
        for n in names:
            wrapper = SSFWrapper(model.get_submodule(n))
            replace_module(model, n, wrapper)
            params += [wrapper.gamma, wrapper.beta]
        return params

    def merge(self, model: nn.Module) -> None:
        merge_ssf_layers(model)


def merge_ssf_layers(model: nn.Module) -> int:
    """Fold every SSF wrapper into its base layer and unwrap it; returns the count."""
    count = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, SSFWrapper):
            replace_module(model, name, module.merged_layer())
            count += 1
    return count
