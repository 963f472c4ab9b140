"""Pre-flight check of a PEFT spec on a pre-trained model: how much gradient each method's tensors get.

A method can be wired correctly and still be unable to move a model: LoRA on
the query and key of a ViT whose attention is uniform (the softmax is flat, so
its derivative with respect to the logits is almost zero) receives ~1e-10 of
the gradient and trains nothing at any learning rate.  :func:`probe` measures,
on a few real training crops and the training loss:

- per method and component: the trained tensors, their parameter count, the norm
  of their gradient as a share of the whole model's (every parameter outside the
  frozen components, as if fine-tuned in full), the same per parameter
  (``grad_rms_ratio``: RMS of the method's gradient over RMS of the model's), and
  ``step_gain``: the relative loss decrease one optimiser step at the method's
  learning rate gives to first order (Adam moves each tensor by about ``lr`` along
  the sign of its gradient, so the loss drops by ``lr * ||g||_1``; divided by the loss);
- per transformer block: the mean attention entropy against its maximum
  (uniform attention over the keys), from the query/key projections;
- a plain warning for every method that is effectively inert
  (``step_gain`` < :data:`INERT_STEP_GAIN`: a thousand steps would change the loss
  by less than 1 %) and for nearly uniform attention.

Measured on a tiny UNETR trained for 150 steps (``tests/peft/test_learning.py``):
``step_gain`` 2e-9 for LoRA on query/key (uniform attention; 20 steps change the
loss by 0.00 %), 6e-3 for BitFit (20 steps: -12 %), 1e-1 for SSF (-69 %).

LoRA's ``A`` gets no gradient while ``B`` is zero (by construction, at step one),
so a LoRA group's gradient is its ``B``'s; that is enough to tell whether the
method can move the output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from petite.models.contract import WHOLE_MODEL, component_modules, module_component
from petite.peft.state import PeftState

#: A method whose first-order loss decrease per optimiser step is below this fraction of the loss is inert.
INERT_STEP_GAIN = 1e-5
#: Attention whose mean entropy is above this fraction of the uniform maximum is reported as nearly uniform.
UNIFORM_ATTENTION = 0.99


def _attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that compute softmax attention from separate ``to_q``/``to_k`` projections (UNETR, CvT)."""
    return [(n, m) for n, m in model.named_modules()
            if hasattr(m, "to_q") and hasattr(m, "to_k") and isinstance(getattr(m, "num_heads", None), int)]


def _entropy(q: torch.Tensor, k: torch.Tensor, heads: int) -> tuple[float, float]:
    """Mean entropy of ``softmax(q k^T / sqrt(d))`` per head and query, and its maximum ``log(keys)``."""
    b, n_q, c = q.shape
    d = c // heads
    q = q.reshape(b, n_q, heads, d).transpose(1, 2)
    k = k.reshape(b, k.shape[1], heads, d).transpose(1, 2)
    p = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(-1).mean()
    return float(entropy), math.log(k.shape[2])


def attention_entropy(model: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """Per attention module: mean attention entropy, the uniform maximum and their ratio, on input ``x``."""
    captured: dict[str, dict[str, torch.Tensor]] = {}
    handles = []
    for name, module in _attention_modules(model):
        for role in ("to_q", "to_k"):
            def hook(_m: nn.Module, _i: Any, out: torch.Tensor, name: str = name, role: str = role) -> None:
                captured.setdefault(name, {})[role] = out.detach()
            handles.append(getattr(module, role).register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    out = []
    modules = dict(model.named_modules())
    for name, qk in captured.items():
        entropy, maximum = _entropy(qk["to_q"].float(), qk["to_k"].float(), modules[name].num_heads)
        out.append({"block": name, "entropy": entropy, "uniform": maximum,
                    "ratio": entropy / maximum if maximum > 0 else 1.0})
    return out


def _component(model: nn.Module, param_name: str) -> str:
    return module_component(model, param_name.rpartition(".")[0]) or "other"


def probe(model: nn.Module, state: PeftState, short: torch.Tensor, long: torch.Tensor,
          lrs: Mapping[str, float], loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
          ) -> dict[str, Any]:
    """Gradient shares per method and component, attention entropies and warnings (module docstring).

    ``short``/``long``: a batch of training crops ``(B, C, D, H, W)``; ``lrs``: the learning
    rate of each method's tensors (method name -> lr).  ``loss_fn(pred, target)``
    defaults to L1 (the GAN's reconstruction term).  The model is left as it came: same
    ``requires_grad`` flags, train/eval mode and buffers (BatchNorm statistics), no ``.grad`` touched.
    """
    loss_fn = loss_fn or nn.functional.l1_loss
    was_training = model.training
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}  # BatchNorm statistics move in train mode
    scope = set(component_modules(model, WHOLE_MODEL))
    named = [(n, p) for n, p in model.named_parameters() if n.rpartition(".")[0] in scope or n in state.trainable]
    try:
        model.train()
        for _, p in named:
            p.requires_grad_(True)
        loss = loss_fn(model(short), long)
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])
        model.train(was_training)
    squares = {n: 0.0 if g is None else float(g.double().pow(2).sum()) for (n, _), g in zip(named, grads)}
    absolute = {n: 0.0 if g is None else float(g.double().abs().sum()) for (n, _), g in zip(named, grads)}
    loss_value = float(loss.detach())
    sizes = {n: p.numel() for n, p in named}
    total_sq, total_n = sum(squares.values()), sum(sizes.values())
    rms_all = math.sqrt(total_sq / total_n) if total_n else 0.0

    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for name, method in state.trainable.items():
        key = (method, _component(model, name))
        group = groups.setdefault(key, {"method": method, "component": key[1], "tensors": 0, "parameters": 0,
                                        "lr": float(lrs[method]), "_sq": 0.0, "_abs": 0.0})
        group["tensors"] += 1
        group["parameters"] += sizes.get(name, 0)
        group["_sq"] += squares.get(name, 0.0)
        group["_abs"] += absolute.get(name, 0.0)
    rows = []
    for group in groups.values():
        sq, l1 = group.pop("_sq"), group.pop("_abs")
        group["grad_share"] = math.sqrt(sq / total_sq) if total_sq > 0 else 0.0
        rms = math.sqrt(sq / group["parameters"]) if group["parameters"] else 0.0
        group["grad_rms_ratio"] = rms / rms_all if rms_all > 0 else 0.0
        group["step_gain"] = group["lr"] * l1 / loss_value if loss_value > 0 else 0.0
        group["inert"] = group["step_gain"] < INERT_STEP_GAIN
        rows.append(group)

    with torch.no_grad():
        model_mode = model.training
        model.eval()
        attention = attention_entropy(model, short)
        model.train(model_mode)
    warnings = [
        f"{g['method']} on the {g['component']} is effectively inert: one step at lr {g['lr']:g} lowers the loss "
        f"by {g['step_gain']:.1e} of itself (its tensors get {g['grad_rms_ratio']:.1e} of the model's gradient "
        f"per parameter); it cannot move this model"
        for g in rows if g["inert"]
    ]
    uniform = [a["block"] for a in attention if a["ratio"] > UNIFORM_ATTENTION]
    if uniform:
        warnings.append(f"attention is nearly uniform (entropy > {UNIFORM_ATTENTION:.0%} of the maximum) in "
                        f"{len(uniform)} of {len(attention)} blocks: LoRA on query/key gets almost no gradient there")
    return {"loss": loss_value, "groups": rows, "attention": attention, "warnings": warnings}


def format_probe(result: dict[str, Any]) -> str:
    """The probe as aligned text tables plus its warnings."""
    from petite.tables import render_table

    lines = []
    header = ("method", "component", "tensors", "parameters", "lr", "grad share", "grad/param vs model",
              "loss drop per step", "status")
    rows = [[g["method"], g["component"], str(g["tensors"]), f"{g['parameters']:,}", f"{g['lr']:g}",
             f"{g['grad_share']:.2e}", f"{g['grad_rms_ratio']:.2e}", f"{g['step_gain']:.2e}",
             "INERT" if g["inert"] else "ok"] for g in result["groups"]]
    lines.append(render_table(header, rows)[0])
    if result["attention"]:
        rows = [[a["block"], f"{a['entropy']:.3f}", f"{a['uniform']:.3f}", f"{a['ratio']:.3f}"]
                for a in result["attention"]]
        lines += ["", render_table(("attention block", "entropy", "uniform max", "ratio"), rows)[0]]
    lines += [f"warning: {w}" for w in result["warnings"]]
    return "\n".join(lines)
