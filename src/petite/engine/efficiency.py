"""Memory and time savers for fine-tuning: lean backward, activation checkpointing, mixed precision.

In 3D networks the activations kept for backward dominate memory; PEFT inside the backbone
saves gradients and optimiser state only.  This module holds what the training engine calls
to keep fewer activations (measured per module by :func:`saved_tensor_bytes`):

* **No graph where no gradient is needed** is PyTorch's own behaviour: an op none of whose
  inputs requires grad records nothing, so everything before the first trainable tensor
  (the frozen patch embedding under VPT, a frozen encoder under a decoder-only spec, the
  blocks before a LoRA that starts late) already keeps no activation.  Wrapping that prefix
  in ``torch.no_grad`` would save nothing more; :func:`autograd_profile` shows it per module.
  PyTorch also keeps no input of a frozen ``nn.Linear`` (its backward needs only the weight).
* **Frozen convolutions** are where PyTorch keeps what backward does not need: a convolution
  whose weight is frozen saves its *input* anyway (``ConvolutionBackward0`` saves input and
  weight whatever needs a gradient).  :func:`enable_lean_backward` routes such convolutions
  through an autograd function that keeps only the weight: the input gradient needs the
  input's shape, the bias gradient only the output gradient.  It also gives ReLU/LeakyReLU a
  1-byte sign mask for backward instead of a float copy of their input or result.  Same
  gradients, fewer bytes kept (numbers in ``benchmarks/results/README.md``).
* **Activation checkpointing** (:func:`enable_checkpointing`): the blocks a model lists in
  its contract (``model.checkpoint_blocks``, :func:`petite.models.contract.checkpoint_blocks`)
  are recomputed in backward instead of storing their insides; ``frozen`` only blocks whose
  parameters are all frozen, ``all`` every listed block.
* **Mixed precision** (:func:`autocast`, :func:`grad_scaler`): ``bf16`` autocast on CPU or
  CUDA, ``fp16`` on CUDA only with a gradient scaler; ``auto`` picks bf16 where the hardware
  runs it natively (:func:`has_fast_bf16`) and float32 (CPU) or fp16 (older GPUs) elsewhere.

Every function acts on the model in place and can be undone; none touches ``state_dict``.

Engine wiring: once the trainable set is final (after ``apply_spec``, pruning and ``make_step``),
``apply_memory_options(model, cfg.checkpoint or default_checkpoint(spec), lean=cfg.lean)``; each
step enters ``autocast(device, precision)`` around forward and loss and scales with
``grad_scaler(device, precision)``, ``precision = resolve_precision(cfg.precision, cfg.amp, device)``.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from petite.errors import UserError
from petite.models.contract import checkpoint_blocks
from petite.peft.spec import Spec

CHECKPOINT_MODES: tuple[str, ...] = ("none", "frozen", "all")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
#: What a user may ask for: a precision, or ``auto`` (:func:`resolve_precision`).
PRECISION_CHOICES: tuple[str, ...] = ("auto", *PRECISIONS)
CPUINFO = Path("/proc/cpuinfo")  # where Linux lists the CPU's instruction-set flags

_CKPT_ATTR = "_petite_checkpointed"  # on a block: its own forward, before checkpointing wrapped it
_LEAN_ATTR = "_petite_lean"  # on a layer: marks the lean forward installed by enable_lean_backward


# --------------------------------------------------------------------------- lean backward


class _FrozenWeightConv(torch.autograd.Function):
    """``torch.convolution`` that keeps only the weight for backward (the weight gets no gradient).

    ``grad_input`` = transposed convolution of ``grad`` with the weight: it needs the input's
    shape, not its values (as :func:`torch.nn.grad.conv3d_input`); ``grad_bias`` = ``grad``
    summed over batch and space.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                conv: tuple[Any, ...]) -> torch.Tensor:
        ctx.conv = conv
        ctx.input_shape = x.shape
        ctx.save_for_backward(weight)  # a parameter (or its autocast copy): no activation is kept
        return torch.convolution(x, weight, bias, *conv)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, torch.Tensor | None, None]:
        (weight,) = ctx.saved_tensors
        stride, padding, dilation, transposed, output_padding, groups = ctx.conv
        grad_input = grad_bias = None
        if ctx.needs_input_grad[0]:
            shape_only = grad.new_empty(1).expand(ctx.input_shape)  # convolution_backward reads its shape only
            grad_input = torch.ops.aten.convolution_backward(
                grad, shape_only, weight, None, stride, padding, dilation, transposed, output_padding, groups,
                (True, False, False),
            )[0]
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=[0, *range(2, grad.dim())])
        return grad_input, None, grad_bias, None


def _lean_applies(conv: nn.modules.conv._ConvNd, x: torch.Tensor) -> bool:
    """Whether this call can skip saving the input: a graph is recorded, the weight is frozen, plain padding."""
    return (
        torch.is_grad_enabled()
        and not conv.weight.requires_grad
        and (x.requires_grad or (conv.bias is not None and conv.bias.requires_grad))
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


def _lean_conv_forward(conv: nn.modules.conv._ConvNd, x: torch.Tensor,
                       output_size: list[int] | None = None) -> torch.Tensor:
    """The forward :func:`enable_lean_backward` installs on convolutions (bound, so deep copies rebind)."""
    native = type(conv).forward
    if not _lean_applies(conv, x) or output_size is not None:
        return native(conv, x) if output_size is None else native(conv, x, output_size)
    weight, bias = conv.weight, conv.bias
    device = x.device.type
    if torch.is_autocast_enabled(device):
        # Cast as autocast would (convolutions run in the low-precision dtype), then run the
        # function with autocast off so its forward and backward see one dtype.
        dtype = torch.get_autocast_dtype(device)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    transposed = isinstance(conv, nn.modules.conv._ConvTransposeNd)
    output_padding = list(conv.output_padding) if transposed else [0] * len(conv.stride)
    params = (list(conv.stride), list(conv.padding), list(conv.dilation), transposed, output_padding, conv.groups)
    with torch.autocast(device, enabled=False):
        return _FrozenWeightConv.apply(x, weight, bias, params)


def enable_lean_backward(model: nn.Module) -> list[str]:
    """Keep less for backward where PyTorch keeps what backward does not need; returns the layers' names.

    * A convolution whose weight is frozen keeps no input (its input gradient needs the input's
      shape only, its bias gradient the output gradient only).  Decided at each call: a
      convolution whose weight trains, or any call without a graph, runs PyTorch's own path, so
      it stays right when tensors are frozen or unfrozen later.
    * ReLU and LeakyReLU keep a 1-byte sign mask instead of their float input or result.

    Gradients equal PyTorch's: input gradients and activations bit for bit, a convolution's
    bias gradient to float rounding (a sum taken in another order); tested.  Installed as
    instance ``forward`` attributes (state_dict and classes untouched; bound methods, so
    ``copy.deepcopy`` rebinds them to the copy).
    """
    names = []
    for name, module in model.named_modules():
        if getattr(module, _LEAN_ATTR, False):
            continue
        if isinstance(module, nn.modules.conv._ConvNd):
            module.forward = types.MethodType(_lean_conv_forward, module)
        elif type(module) in (nn.ReLU, nn.LeakyReLU):  # exact types: a subclass may compute something else
            module.forward = types.MethodType(_lean_activation_forward, module)
        else:
            continue
        setattr(module, _LEAN_ATTR, True)
        names.append(name)
    return names


def disable_lean_backward(model: nn.Module) -> None:
    """Undo :func:`enable_lean_backward`."""
    for module in model.modules():
        if getattr(module, _LEAN_ATTR, False):
            del module.forward
            delattr(module, _LEAN_ATTR)


class _MaskedLeakyReLU(torch.autograd.Function):
    """LeakyReLU (ReLU: slope 0) that keeps a 1-byte sign mask for backward instead of a float tensor.

    Its derivative is 1 where the input is positive and ``slope`` elsewhere: the sign is all
    backward needs.  PyTorch keeps the whole input (or, in place, the result): 4 bytes a voxel
    in float32 against 1.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, slope: float, inplace: bool) -> torch.Tensor:
        positive = x > 0
        ctx.slope = slope
        ctx.save_for_backward(positive)
        if inplace:
            ctx.mark_dirty(x)
            return F.leaky_relu_(x, slope) if slope else F.relu_(x)
        return F.leaky_relu(x, slope) if slope else F.relu(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (positive,) = ctx.saved_tensors
        # PyTorch's leaky_relu_backward: grad where the input was > 0, else grad * slope.
        return torch.where(positive, grad, grad * ctx.slope), None, None


def _lean_activation_forward(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The forward :func:`enable_lean_backward` installs on ReLU / LeakyReLU modules."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return type(act).forward(act, x)
    slope = float(getattr(act, "negative_slope", 0.0))
    return _MaskedLeakyReLU.apply(x, slope, bool(act.inplace))


# --------------------------------------------------------------------------- activation checkpointing


def is_frozen(module: nn.Module) -> bool:
    """Whether no parameter of ``module`` (its submodules included) requires a gradient."""
    return not any(p.requires_grad for p in module.parameters())


@contextlib.contextmanager
def _running_stats_kept(block: nn.Module) -> Iterator[None]:
    """Restore the block's BatchNorm running statistics after a recomputation.

    A norm in training mode updates ``running_mean``/``running_var``/``num_batches_tracked`` on
    every forward; the recomputation in backward would apply the same batch a second time.  Its
    output does not depend on those buffers (training mode normalises by the batch), so
    restoring them leaves the recomputed activations exact and the statistics as without
    checkpointing.
    """
    norms = [m for m in block.modules()
             if isinstance(m, nn.modules.batchnorm._NormBase) and m.training and m.track_running_stats]
    saved = [(m, {k: b.clone() for k, b in m.named_buffers(recurse=False) if b is not None}) for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, buffers in saved:
                for key, value in buffers.items():
                    getattr(module, key).copy_(value)


def _checkpointed_call(block: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """The forward :func:`enable_checkpointing` installs: the block's own forward under ``checkpoint``."""
    own = getattr(block, _CKPT_ATTR)
    if not torch.is_grad_enabled():
        return own(*args, **kwargs)  # inference: nothing to store, nothing to recompute
    # Non-reentrant: parameters used inside get their gradients, RNG (dropout) is replayed,
    # autocast is restored for the recomputation, and inputs need not require grad.
    return torch_checkpoint(
        own, *args, use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), _running_stats_kept(block)), **kwargs,
    )


def checkpoint_candidates(model: nn.Module, mode: str) -> list[str]:
    """The blocks ``mode`` checkpoints: none, the contract's frozen blocks, or all of them."""
    if mode not in CHECKPOINT_MODES:
        raise UserError(f"checkpoint must be one of {', '.join(CHECKPOINT_MODES)}, got {mode!r}")
    if mode == "none":
        return []
    blocks = checkpoint_blocks(model)
    if mode == "all":
        return blocks
    return [name for name in blocks if is_frozen(model.get_submodule(name))]


def enable_checkpointing(model: nn.Module, mode: str) -> list[str]:
    """Recompute blocks in backward instead of storing their activations; returns the blocks' names.

    ``mode``: ``none``; ``frozen`` (blocks whose parameters are all frozen *now*: call after
    :func:`petite.peft.apply_spec` and any pruning); ``all`` (every block of
    ``model.checkpoint_blocks``).  Only while gradients are enabled: inference runs the blocks
    as they are.  Gradients equal the unchecked step's (tested); BatchNorm running statistics
    are updated once per step, as without checkpointing.  Calling it again first undoes the
    previous call.
    """
    names = checkpoint_candidates(model, mode)
    disable_checkpointing(model)
    for name in names:
        block = model.get_submodule(name)
        own = block.forward  # the class's forward (or another installed wrapper), bound to the block
        setattr(block, _CKPT_ATTR, own)
        block.forward = types.MethodType(_checkpointed_call, block)  # bound: deep copies rebind
    return names


def checkpointed(model: nn.Module) -> list[str]:
    """Names of the blocks currently checkpointed."""
    return [n for n, m in model.named_modules() if getattr(m, _CKPT_ATTR, None) is not None]


def disable_checkpointing(model: nn.Module) -> None:
    """Undo :func:`enable_checkpointing`."""
    for module in model.modules():
        own = getattr(module, _CKPT_ATTR, None)
        if own is not None:
            if getattr(own, "__self__", None) is module and getattr(own, "__func__", None) is type(module).forward:
                del module.forward  # back to the class's forward
            else:
                module.forward = own
            delattr(module, _CKPT_ATTR)


def default_checkpoint(spec: Spec | str) -> str:
    """The checkpoint mode a spec trains with unless told otherwise.

    ``full`` and ``none``: ``none`` (no block is frozen; full fine-tuning is the reference
    cost).  Any PEFT spec: ``frozen``: frozen blocks that gradients pass through are
    recomputed (e.g. a frozen decoder under encoder-only LoRA); frozen blocks before the first
    trainable tensor keep nothing anyway and cost almost nothing to wrap.  ``all`` trades
    one more forward of every block for the most memory: ask for it when a run does not fit.
    """
    spec = Spec.parse(spec)
    return "none" if spec.full or spec.is_empty else "frozen"


def apply_memory_options(model: nn.Module, checkpoint: str, lean: bool = True) -> dict[str, list[str]]:
    """What the training engine calls once the trainable set is final: lean backward and checkpointing.

    Returns ``{"checkpointed": [...], "lean": [...]}`` (module names) for the run's log.
    """
    lean_layers = enable_lean_backward(model) if lean else []
    return {"checkpointed": enable_checkpointing(model, checkpoint), "lean": lean_layers}


# --------------------------------------------------------------------------- mixed precision


def check_precision(device: torch.device | str, precision: str) -> None:
    """UserError if ``precision`` cannot run on ``device`` (fp16 needs CUDA; bf16 a GPU that has it)."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise UserError("precision fp16 needs a CUDA device (with a gradient scaler); use bf16 on the CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("this GPU has no bf16 support; use fp16")


def has_fast_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 natively: a GPU with bf16, or a CPU with AMX-BF16 or AVX-512 BF16.

    On a CPU without those units bf16 autocast is emulated and *slower* than float32, so ``auto``
    must not pick it there.  The CPU flags are read from ``/proc/cpuinfo`` (Linux); elsewhere the
    answer is False (float32, the portable choice).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        flags = CPUINFO.read_text(errors="replace").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str | None, amp: bool, device: torch.device | str) -> str:
    """The precision a run uses: ``precision`` if a concrete one; ``auto``: bf16 where the device has
    it natively (:func:`has_fast_bf16`), else fp16 on CUDA and fp32 on the CPU; None: what the
    engine's older ``amp`` flag meant (fp16 on CUDA, fp32 elsewhere)."""
    device = torch.device(device)
    if precision is None:
        precision = "fp16" if amp and device.type == "cuda" else "fp32"
    elif precision == "auto":
        precision = "bf16" if has_fast_bf16(device) else ("fp16" if device.type == "cuda" else "fp32")
    check_precision(device, precision)
    return precision


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of a training or inference step: nothing for fp32, else ``torch.autocast``.

    ``bf16``: convolutions, linears and matmuls in bfloat16 on the CPU (oneDNN; AMX where the
    CPU has it) or on CUDA; norms, softmax and losses stay in float32 as autocast decides.
    ``fp16``: CUDA only; pair it with :func:`grad_scaler`.
    """
    device = torch.device(device)
    check_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def grad_scaler(device: torch.device | str, precision: str) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for fp16 only (bf16 has float32's exponent range and needs none)."""
    device = torch.device(device)
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


# --------------------------------------------------------------------------- measuring what backward keeps


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    return (t.device.type, t.untyped_storage().data_ptr())


def saved_tensor_bytes(model: nn.Module, run: Callable[[], Any], depth: int = 1) -> dict[str, int]:
    """Bytes autograd keeps for backward while ``run()`` executes, per module of ``model``.

    Each saved tensor's storage counts once (views and tensors saved by several ops share
    it), parameters and buffers not at all (they exist anyway), and the bytes go to the
    innermost module at most ``depth`` dots deep that was running when it was saved
    (``"<model>"`` outside every module).  Tensors saved inside checkpointed blocks are held by
    the checkpoint (not stored) and do not count.  ``run`` typically computes the loss; this
    function does not call backward.
    """
    own = {_storage_key(t) for t in [*model.parameters(), *model.buffers()]}
    stack = ["<model>"]

    def enter(module: nn.Module, args: Any, name: str) -> None:
        stack.append(name)

    def leave(module: nn.Module, args: Any, out: Any) -> None:
        stack.pop()  # (a forward hook that returned a value would replace the module's output)

    handles = []
    for name, module in model.named_modules():
        if name and name.count(".") < depth:
            handles.append(module.register_forward_pre_hook(functools.partial(enter, name=name)))
            handles.append(module.register_forward_hook(leave))
    seen: set[tuple[str, int]] = set()
    per_module: dict[str, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in own and key not in seen:
            seen.add(key)
            per_module[stack[-1]] = per_module.get(stack[-1], 0) + t.untyped_storage().nbytes()
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run()
    finally:
        for h in handles:
            h.remove()
    return per_module


def autograd_profile(model: nn.Module, run: Callable[[], Any], depth: int = 3) -> dict[str, Any]:
    """Where autograd keeps activations while ``run()`` executes, and where its graph starts.

    Returns ``{"saved_bytes": total, "graph_from": name, "modules": rows}``.  ``rows`` lists the
    modules at most ``depth`` dots deep that ran (their first call), in the order they finished
    (children before parents): ``{"module", "saved_bytes", "graph", "trainable"}``, where
    ``saved_bytes`` includes the module's descendants and ``graph`` is True when a tensor it
    received or produced requires grad.  ``graph_from`` is the first module to finish with a
    graph: the modules before it saved nothing, which is PyTorch's own pruning (no
    ``torch.no_grad`` prefix is needed to get it).
    """
    order: list[str] = []
    graph: dict[str, bool] = {}

    def any_grad(values: Any) -> bool:
        items = values if isinstance(values, (tuple, list)) else [values]
        return any(isinstance(v, torch.Tensor) and v.requires_grad for v in items)

    def post(module: nn.Module, args: Any, out: Any, name: str) -> None:
        if name not in graph:
            order.append(name)
            graph[name] = any_grad(args) or any_grad(out)

    handles = [module.register_forward_hook(functools.partial(post, name=name))
               for name, module in model.named_modules() if name and name.count(".") < depth]
    try:
        saved = saved_tensor_bytes(model, run, depth=depth)
    finally:
        for h in handles:
            h.remove()
    modules = dict(model.named_modules())
    rows = [
        {"module": n, "saved_bytes": sum(b for m, b in saved.items() if m == n or m.startswith(n + ".")),
         "graph": graph[n], "trainable": any(p.requires_grad for p in modules[n].parameters())}
        for n in order
    ]
    return {"saved_bytes": sum(saved.values()), "graph_from": next((r["module"] for r in rows if r["graph"]), None),
            "modules": rows}


__all__ = [
    "CHECKPOINT_MODES",
    "PRECISIONS",
    "PRECISION_CHOICES",
    "has_fast_bf16",
    "apply_memory_options",
    "autocast",
    "autograd_profile",
    "check_precision",
    "checkpoint_candidates",
    "checkpointed",
    "default_checkpoint",
    "disable_checkpointing",
    "disable_lean_backward",
    "enable_checkpointing",
    "enable_lean_backward",
    "grad_scaler",
    "is_frozen",
    "resolve_precision",
    "saved_tensor_bytes",
]
