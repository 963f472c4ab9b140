"""LoRA (Hu et al., 2022): a low-rank update ``W + (alpha / r) B A`` on chosen layers.

Targets default to the ``query`` and ``key`` roles (the paper tunes only those);
where a model fuses them into one ``qkv`` layer (Swin UNETR) the default is that
layer; where a scope has no attention at all (a CNN decoder such as UNETR's) the
default falls back to the ``conv`` role.  ``targets=`` takes role names or
fnmatch patterns over module names, ``/``-separated.

``nn.Linear`` targets are wrapped by HF ``peft`` (``inject_adapter_in_model``
with the exact module names).  Convolutions use :class:`LoraConv` below, built on
the factorisation peft uses for convolutions (A carries the kernel, B is 1x1x1),
because peft 0.21.2 fails us there: it has no transposed-convolution layer (the
up-sampling convs of UNETR's decoder), and ``merge()`` of its Conv3d layer
crashes for 1x1x1 kernels (measured: "The size of tensor a (8) must match the
size of tensor b (4)" for Conv3d(8, 8, 1), r=4; UNETR's output conv is 1x1x1).

B starts at zero, so the model is unchanged at init; as in every LoRA, A's
gradient is zero at the very first step (it is multiplied by B) and non-zero from
the second on: A is connected to the loss, which is what accounting checks.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from petite.errors import UserError
from petite.models.contract import select_modules
from petite.peft.methods.base import Method, MethodConfig
from petite.peft.methods.layers import replace_module

LORA_KINDS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv3d, nn.ConvTranspose3d)


@dataclasses.dataclass(frozen=True)
class LoraConfig(MethodConfig):
    """Options: rank ``r``, scale numerator ``alpha`` (scale = alpha / r), ``dropout`` on the LoRA
    input, ``targets`` (roles or module-name patterns; empty = query/key, else conv)."""

    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ()

    option_kinds: ClassVar[dict[str, str]] = {"r": "int", "alpha": "float", "dropout": "float", "targets": "strs"}

    def __post_init__(self) -> None:
        if self.r < 1:
            raise UserError(f"LoRA rank r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise UserError(f"LoRA alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"LoRA dropout must be in [0, 1), got {self.dropout}")


class LoraConv(nn.Module):
    """LoRA / DoRA around an ``nn.Conv3d`` or ``nn.ConvTranspose3d``.

    ``lora_A`` is a (transposed) conv ``in -> r`` with the base kernel, stride and
    padding; ``lora_B`` a 1x1x1 conv ``r -> out`` initialised to zero, so the delta
    weight ``dW[o, i] = sum_r B[o, r] A[r, i]`` has rank <= r (peft's factorisation
    for convolutions).  With ``dora`` the weight is re-normalised per output channel
    and scaled by a learned magnitude initialised to the base weight's norms.
    """

    def __init__(self, base_layer: nn.Conv3d | nn.ConvTranspose3d, r: int, alpha: float, dropout: float,
                 dora: bool) -> None:
        super().__init__()
        if base_layer.groups != 1:
            raise UserError("LoRA on a grouped convolution is not supported")
        self.base_layer = base_layer
        self.transposed = isinstance(base_layer, nn.ConvTranspose3d)
        self.scaling = alpha / r
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        w = base_layer.weight
        kw = {"device": w.device, "dtype": w.dtype}
        if self.transposed:
            self.lora_A: nn.Module = nn.ConvTranspose3d(
                base_layer.in_channels, r, base_layer.kernel_size, base_layer.stride, base_layer.padding,
                base_layer.output_padding, 1, False, base_layer.dilation, **kw,
            )
        else:
            self.lora_A = nn.Conv3d(
                base_layer.in_channels, r, base_layer.kernel_size, base_layer.stride, base_layer.padding,
                base_layer.dilation, 1, False, base_layer.padding_mode, **kw,
            )
        self.lora_B = nn.Conv3d(r, base_layer.out_channels, 1, bias=False, **kw)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self._merge_scale: torch.Tensor | None = None
        self.lora_magnitude: nn.Parameter | None = None
        if dora:
            self.lora_magnitude = nn.Parameter(self._column_norm(w.detach()))

    def _column_norm(self, weight: torch.Tensor) -> torch.Tensor:
        # One norm per output channel (dim 1 of a transposed conv's (in, out, k..) weight, dim 0 of a
        # conv's (out, in, k..)), kept as a broadcastable shape.
        dims = (0, 2, 3, 4) if self.transposed else (1, 2, 3, 4)
        return weight.pow(2).sum(dim=dims, keepdim=True).sqrt()

    def delta_weight(self) -> torch.Tensor:
        """``scaling * dW`` in the base layer's weight layout."""
        a = self.lora_A.weight  # conv: (r, in, k..); transposed: (in, r, k..)
        b = self.lora_B.weight[:, :, 0, 0, 0]  # (out, r)
        eq = "irxyz,or->ioxyz" if self.transposed else "rixyz,or->oixyz"
        return torch.einsum(eq, a, b) * self.scaling

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        base = self.base_layer
        if self.transposed:
            return F.conv_transpose3d(x, weight, bias, base.stride, base.padding, base.output_padding, 1,
                                      base.dilation)
        return base._conv_forward(x, weight, bias)  # type: ignore[union-attr]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base_layer
        if self.merged:
            return base(x)
        if self.lora_magnitude is None:
            return base(x) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling
        delta = self.delta_weight()
        # The norm is a constant for backward, as in peft's DoRA (Liu et al. 2024, section 4.3: it saves
        # memory and changes little); the forward value is exact.
        scale = self.lora_magnitude / self._column_norm(base.weight + delta).detach()
        # Split like peft's DoRA so that dropout only touches the low-rank path.
        return self._conv(x, base.weight * scale, base.bias) + self._conv(self.lora_dropout(x), delta * scale, None)

    @property
    def merged(self) -> bool:
        """Whether the update is folded into ``base_layer.weight`` (then ``forward`` is the base layer's)."""
        return self._merge_scale is not None

    @torch.no_grad()
    def merge(self, safe_merge: bool = False) -> None:
        """Fold the update into the base weight: ``W0 + dW`` (LoRA) or ``m (W0 + dW) / ||W0 + dW||`` (DoRA).

        ``safe_merge`` refuses a non-finite result (as peft's ``merge(safe_merge=True)`` does).
        """
        if self.merged:
            return
        weight = self.base_layer.weight
        updated = weight + self.delta_weight()
        scale = torch.ones((), dtype=weight.dtype, device=weight.device)
        if self.lora_magnitude is not None:
            scale = self.lora_magnitude / self._column_norm(updated)
        if safe_merge and not torch.isfinite(updated * scale).all():
            raise ValueError("NaNs or Infs in the merged LoRA weight")
        weight.copy_(updated * scale)
        self._merge_scale = scale  # kept to undo the DoRA normalisation exactly in unmerge

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update out of the base weight again (inverse of :meth:`merge`, to float rounding)."""
        if not self.merged:
            return
        weight = self.base_layer.weight
        weight.copy_(weight / self._merge_scale - self.delta_weight())
        self._merge_scale = None


class Lora(Method):
    """LoRA on the target layers of a scope (HF peft for Linear/Conv3d, our own for ConvTranspose3d)."""

    name = "lora"
    config_class = LoraConfig
    additive = True
    identity_init = True
    mergeable = True
    use_dora: ClassVar[bool] = False

    def targets(self, model: nn.Module, module_names: list[str]) -> list[str]:
        """The module names this method wraps within ``module_names``."""
        cfg: Any = self.config
        if cfg.targets:
            return select_modules(model, module_names, cfg.targets, LORA_KINDS)
        found = select_modules(model, module_names, ("query", "key"), LORA_KINDS)
        if found:
            return found
        if "qkv" in getattr(model, "peft_roles", {}):
            # Fused q/k/v projections (Swin UNETR): the update adapts query and key, and value with them.
            found = select_modules(model, module_names, ("qkv",), LORA_KINDS)
            if found:
                return found
        # The conv fallback skips layers of full rank <= r: such an update is not low-rank, and the
        # case that occurs (UNETR's residual 1x1x1 conv from the single image channel, followed by
        # InstanceNorm) is dead: each output channel is w_o * x, which the norm rescales away, so
        # the update would only get round-off gradient.
        convs = select_modules(model, module_names, ("conv",), LORA_KINDS)
        return [n for n in convs if _full_rank(model.get_submodule(n)) > cfg.r]

    def apply(self, model: nn.Module, module_names: list[str]) -> list[nn.Parameter]:
        cfg: Any = self.config
        names = self.targets(model, module_names)
        if not names:
            raise UserError(f"{self.name}: no target layers in scope (targets: {', '.join(cfg.targets) or 'query/key or conv'})")
        modules = dict(model.named_modules())
        convs = [n for n in names if isinstance(modules[n], nn.modules.conv._ConvNd)]
        peft_names = [n for n in names if n not in convs]
        params: list[nn.Parameter] = []
        self.wrapped = list(names)
        for n in convs:
            wrapper = LoraConv(modules[n], cfg.r, cfg.alpha, cfg.dropout, self.use_dora)
            replace_module(model, n, wrapper)
            params.extend(p for pn, p in wrapper.named_parameters() if not pn.startswith("base_layer."))
        if peft_names:
            params.extend(self._inject_peft(model, peft_names))
        return params

    def _inject_peft(self, model: nn.Module, names: list[str]) -> list[nn.Parameter]:
        # Imported here: peft pulls in transformers (seconds), only needed for LoRA/DoRA.
        from peft import LoraConfig as HFLoraConfig
        from peft import inject_adapter_in_model

        cfg: Any = self.config
        # A regex string is full-matched by peft: exact names, no suffix surprises.
        pattern = "|".join(re.escape(n) for n in names)
        adapter = "petite"  # one name: peft makes the adapter of its latest injection the active one everywhere
        hf = HFLoraConfig(
            r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=f"(?:{pattern})",
            use_dora=self.use_dora, bias="none",
        )
        before = {id(p) for p in model.parameters()}
        with warnings.catch_warnings():
            # A second component's injection is intended (same adapter name, disjoint layers).
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            inject_adapter_in_model(hf, model, adapter_name=adapter)
        new = [p for p in model.parameters() if id(p) not in before]
        wrapped = {n for n, m in model.named_modules() if is_peft_lora(m)}
        missing = [n for n in names if n not in wrapped]
        if missing:
            raise UserError(f"{self.name}: peft did not wrap {', '.join(missing)}")
        return new

    def is_wrapper(self, module: nn.Module) -> bool:
        return isinstance(module, LoraConv) or is_peft_lora(module)

    def merge(self, model: nn.Module) -> None:
        for _, wrapper in self.wrappers(model):
            if not wrapper.merged:
                wrapper.merge(safe_merge=True)


def _full_rank(layer: nn.Module) -> int:
    """Maximum rank of a layer's weight seen as (out, in * kernel) matrix."""
    w = layer.weight
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        return min(w.shape[1], w.shape[0] * math.prod(w.shape[2:]))
    return min(w.shape[0], math.prod(w.shape[1:]))


def is_peft_lora(module: nn.Module) -> bool:
    """Whether ``module`` is one of HF peft's LoRA/DoRA layers."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(module, LoraLayer)
