"""Layer surgery the methods share: replacing a submodule, finding a wrapper, reading a layer's width."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from petite.errors import UserError

#: Module types whose parameters are "normalisation parameters" for LayerNorm tuning
#: and whose outputs SSF may scale.
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def replace_module(model: nn.Module, name: str, new: nn.Module, inner: nn.Module | None = None) -> None:
    """Put ``new`` where the submodule called ``name`` is.

    With ``inner``, the module to replace is ``inner`` wherever it sits in the chain of
    wrappers at ``name`` (``module.base_layer.base_layer...``): a wrapper inside another
    method's wrapper is replaced in place.
    """
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if inner is not None:
        holder, attr = parent, child
        while getattr(holder, attr) is not inner:
            holder, attr = getattr(holder, attr), "base_layer"
            if not hasattr(holder, attr):
                raise RuntimeError(f"{type(inner).__name__} is not wrapped at {name}")
        parent, child = holder, attr
    setattr(parent, child, new)


def find_wrapper(model: nn.Module, name: str, is_wrapper: Callable[[nn.Module], bool]) -> nn.Module | None:
    """The first module in the chain of wrappers at ``name`` for which ``is_wrapper`` holds, else ``None``."""
    try:
        module: nn.Module | None = model.get_submodule(name)
    except AttributeError:
        return None
    while module is not None:
        if is_wrapper(module):
            return module
        module = getattr(module, "base_layer", None)
    return None


def innermost(module: nn.Module) -> nn.Module:
    """The plain layer under any wrappers (``.base_layer`` followed to the end)."""
    while isinstance(getattr(module, "base_layer", None), nn.Module):
        module = module.base_layer
    return module


def out_features(module: nn.Module) -> int:
    """Output feature/channel count of a layer (Linear, Conv, norm) or of a block (its last such layer)."""
    for attr in ("out_features", "out_channels", "num_features", "num_channels"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    if isinstance(module, nn.LayerNorm):
        return int(module.normalized_shape[-1])
    # A block: the last layer registered inside it decides the output width.
    last: int | None = None
    for sub in module.modules():
        if sub is module:
            continue
        if isinstance(sub, (nn.Linear, nn.modules.conv._ConvNd)):
            last = out_features(sub)
    if last is None:
        raise UserError(f"cannot tell the output width of {type(module).__name__}")
    return last


def feature_axis(module: nn.Module) -> int:
    """Axis of the features a layer outputs: last for tokens (Linear, LayerNorm), 1 for (B, C, ...) volumes."""
    if isinstance(module, (nn.Linear, nn.LayerNorm)):
        return -1
    return 1
