"""Exporting a petite adapter as an HF peft adapter (``petite peft export --format peft``).

The folder written is what ``peft.PeftModel.from_pretrained(base_model, folder)`` reads:
``adapter_config.json`` (a ``LoraConfig``: ``peft_type``, ``r``, ``lora_alpha``, ``target_modules``,
``use_dora``, ``rank_pattern``/``alpha_pattern`` when components differ) and
``adapter_model.safetensors`` with peft's key names (``base_model.model.<module>.lora_A.weight``,
without the adapter name), plus ``petite_export.json`` saying where it came from (peft ignores it).

Only what peft represents exactly is exported: LoRA and DoRA on ``nn.Linear`` layers, which petite
already trains through peft's own layers (:mod:`petite.peft.methods.lora`), so the exported model
computes the same function.  Everything else is refused in one line naming the part, before
anything is written: SSF, VPT, bottleneck adapters, LayerNorm tuning and full fine-tuning (peft has
no such tuners for these models), BitFit (peft's LoRA keeps biases frozen unless ``bias`` training,
which it does not export separately per layer), LoRA/DoRA on convolutions (petite's own
``LoraConv``: peft has no ``ConvTranspose3d`` layer and its 1x1x1 ``Conv3d`` merge fails), and
BatchNorm statistics that fine-tuning changed (a peft adapter holds no buffers).

The tensors are written by peft itself: the base model is wrapped with ``peft.get_peft_model``
under the same config, the trained values are copied in, and ``save_pretrained`` names and writes
them, so the file follows whatever key convention the installed peft uses.
"""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from petite.atomic import staged_folder, to_jsonable, write_json
from petite.errors import UserError
from petite.peft.io import running_stat_buffers
from petite.peft.methods.lora import LoraConv
from petite.peft.state import peft_state

#: The adapter name petite gives peft's layers (:meth:`petite.peft.methods.lora.Lora._inject_peft`).
PETITE_ADAPTER = "petite"
EXPORTABLE = ("lora", "dora")
WHY_NOT = {
    "ssf": "SSF has no peft equivalent",
    "vpt": "VPT prompts have no peft equivalent for these models",
    "adapter": "bottleneck adapters have no peft equivalent",
    "layernorm": "LayerNorm tuning has no peft equivalent",
}


def _scope(scope: str, name: str) -> str:
    return name if scope == "*" else f"{scope}={name}"


def export_plan(model: nn.Module) -> list[tuple[str, Any, list[str]]]:
    """``(method name, config, wrapped Linear names)`` per LoRA/DoRA method of an adapted ``model``.

    Raises:
        UserError: one line naming every part of the spec peft cannot represent.
    """
    state = peft_state(model)
    if state is None:
        raise UserError("the model carries no PEFT adapter; nothing to export")
    problems: list[str] = []
    if state.spec.full:
        problems.append("full (full fine-tuning changes every weight; export the model instead)")
    if state.spec.bitfit:
        problems.append("bitfit (BitFit's trained biases have no place in a peft LoRA adapter)")
    plan = []
    for scope, method in state.methods:
        part = _scope(scope, method.name)
        if method.name not in EXPORTABLE:
            problems.append(f"{part} ({WHY_NOT.get(method.name, 'no peft equivalent')})")
            continue
        convs = [n for n, w in method.wrappers(model) if isinstance(w, LoraConv)]
        if convs:
            problems.append(f"{part} on convolutions ({convs[0]}{' and more' if len(convs) > 1 else ''}: "
                            "peft represents LoRA/DoRA on linear layers only here)")
            continue
        plan.append((method.name, method.config, list(method.wrapped)))
    if len({name for name, _, _ in plan}) > 1:
        problems.append("lora and dora together (one peft config has one use_dora)")
    if problems:
        raise UserError(f"cannot export to peft format: {'; '.join(problems)}")
    if not plan:
        raise UserError("the adapter trains nothing peft can hold (no LoRA/DoRA); nothing to export")
    return plan


def _lora_config(plan: list[tuple[str, Any, list[str]]]) -> Any:
    from peft import LoraConfig

    names = [n for _, _, wrapped in plan for n in wrapped]
    first = plan[0][1]
    if len({cfg.dropout for _, cfg, _ in plan}) > 1:
        raise UserError("cannot export to peft format: components with different LoRA dropout "
                        "(one peft config has one lora_dropout)")
    # Components with other ranks or scales: peft's per-module patterns, keyed by the exact module names.
    rank_pattern = {rf"^{re.escape(n)}$": cfg.r for _, cfg, wrapped in plan for n in wrapped if cfg.r != first.r}
    alpha_pattern = {rf"^{re.escape(n)}$": cfg.alpha for _, cfg, wrapped in plan for n in wrapped
                     if cfg.alpha != first.alpha}
    return LoraConfig(
        r=first.r, lora_alpha=first.alpha, lora_dropout=first.dropout, use_dora=plan[0][0] == "dora",
        # A regex is full-matched by peft: exactly these modules (petite injects them the same way).
        target_modules="(?:" + "|".join(re.escape(n) for n in names) + ")", bias="none",
        rank_pattern=rank_pattern, alpha_pattern=alpha_pattern,
    )


def check_buffers(model: nn.Module, base: nn.Module) -> None:
    """Refuse an adapted model whose BatchNorm running statistics differ from the base's (peft keeps none)."""
    live, plain = dict(model.named_buffers()), dict(base.named_buffers())
    for name in running_stat_buffers(model):
        base_name = name.replace(".base_layer.", ".")
        if base_name in plain and not torch.equal(live[name].cpu(), plain[base_name].cpu()):
            raise UserError(f"cannot export to peft format: fine-tuning changed BatchNorm statistics ({name}), "
                            "which a peft adapter cannot hold")


def export_peft(model: nn.Module, base: nn.Module, out: str | Path, *, source: dict[str, Any] | None = None,
                overwrite: bool = False) -> Path:
    """Write ``model``'s LoRA/DoRA adapter into folder ``out`` in HF peft's format; returns ``out``.

    ``model`` carries a petite adapter (unmerged); ``base`` is the plain base model it was applied to
    (not modified: peft wraps a copy).  ``source`` is recorded in ``petite_export.json``.
    Everything is checked first and the folder is written in one rename, so a refusal writes nothing.

    Raises:
        UserError: a part of the spec peft cannot represent, changed BatchNorm statistics, a merged
            model, or an output folder that exists (unless ``overwrite``).
    """
    from peft import get_peft_model

    state = peft_state(model)
    plan = export_plan(model)
    if state is not None and state.merged:
        raise UserError("cannot export a merged model; load the adapter without merging")
    check_buffers(model, base)
    config = _lora_config(plan)
    trained = {n: p for n, p in model.named_parameters() if f".{PETITE_ADAPTER}." in n}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft warns about custom (non-transformers) models; expected here
        wrapped = get_peft_model(copy.deepcopy(base).cpu().eval(), config)
    params = dict(wrapped.named_parameters())
    copied = set()
    with torch.no_grad():
        for name, value in trained.items():
            target = "base_model.model." + name.replace(f".{PETITE_ADAPTER}.", ".default.")
            if target not in params or params[target].shape != value.shape:
                raise UserError(f"peft lays out {name} differently (installed peft too old or too new?)")
            params[target].copy_(value.detach().cpu())
            copied.add(target)
    left = [n for n in params if ".default." in n and n not in copied]
    if left:
        raise UserError(f"peft's adapter has tensors petite's lacks (e.g. {left[0]})")
    out = Path(out)
    with staged_folder(out, overwrite) as staging:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wrapped.save_pretrained(str(staging))
        (staging / "README.md").unlink(missing_ok=True)  # peft's model-card template, empty for our models
        write_json(staging / "petite_export.json", {
            "format": "petite-peft-export/1", "spec": state.spec.to_string() if state else None,
            "model": to_jsonable(getattr(model, "config", {})), "base_fingerprint": state and state.base_fingerprint,
            "modules": [n for _, _, names in plan for n in names], **(source or {}),
        })
    return out


__all__ = ["export_peft", "export_plan"]
