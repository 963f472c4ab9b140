"""The paper's numbers, as data: per-method hyper-parameters (supplementary Table 3) and the
Mix-PEFT combinations of Tables 6-7.

Kept apart from the method registry and the spec grammar: the methods and the
grammar say what *can* be trained; this module says what the PETITE paper
*did* (its learning rates, weight decays, schedules, epochs, and which method
pairs it combined with which options).  :func:`recommended_hparams` is what the
training engine falls back to when a user sets nothing; :func:`combos` lists the
feasible Mix-PEFT specs of a model for ``petite peft combos`` and the study planner.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from petite.errors import UserError
from petite.models.contract import component_modules
from petite.peft.methods.vpt import prompt_sites
from petite.peft.spec import MethodSpec, Spec

# The additive methods Mix-PEFT combines (paper Sec. 2.2, Tables 6-7).
MIX_METHODS: tuple[str, ...] = ("lora", "adapter", "vpt", "ssf")


# Supplementary Table 3. Columns: "full" (No-FT | Full FT), each method, "petite".
# Reading notes: the optimizer row lists "adam adamw" for the CVT-GAN (full FT: adam,
# PEFT: adamw) and the UNETR schedule row "WarmupCosine CosineAnneal" (full FT:
# warm-up cosine, PEFT: cosine annealing).  DoRA is not in the table: LoRA's values.
_TABLE3: dict[str, dict[str, Any]] = {
    "cvtgan": {
        "epochs": 150,
        "lr": {"full": 1e-3, "layernorm": 1e-3, "bitfit": 1e-3, "lora": 1e-3, "adapter": 1e-2, "vpt": 1e-3,
               "ssf": 1e-2, "petite": 1e-3},
        "weight_decay": {"full": 1e-5, "layernorm": 1e-5, "bitfit": 1e-5, "lora": 1e-5, "adapter": 1e-5,
                         "vpt": 1e-5, "ssf": 1e-6, "petite": 1e-5},
        "optimizer": {"full": "adam", "peft": "adamw"},
        "schedule": {"full": "cosine", "peft": "cosine"},
    },
    "unetr": {
        "epochs": 200,
        "lr": {"full": 1e-3, "layernorm": 1e-3, "bitfit": 1e-3, "lora": 1e-3, "adapter": 1e-2, "vpt": 1e-2,
               "ssf": 1e-2, "petite": 1e-3},
        "weight_decay": {"full": 1e-5, "layernorm": 1e-5, "bitfit": 1e-5, "lora": 1e-4, "adapter": 1e-4,
                         "vpt": 1e-5, "ssf": 1e-5, "petite": 1e-5},
        "optimizer": {"full": "adamw", "peft": "adamw"},
        "schedule": {"full": "warmup-cosine", "peft": "cosine"},
    },
}


def table3_column(spec: Spec) -> str:
    """Which Table 3 column a spec falls under: ``full``, a method name, or ``petite`` (Mix-PEFT)."""
    if spec.full or spec.is_empty:
        return "full"
    names = {m.name for _, m in spec.methods}
    if not names:
        return "bitfit"  # global BitFit alone
    if len(names) == 1 and not spec.bitfit:
        name = names.pop()
        return "lora" if name == "dora" else name
    return "petite"


def _table(model_name: str) -> tuple[dict[str, Any], str]:
    """Table 3 of ``model_name`` and a note on its source (models other than ``cvtgan`` get UNETR's)."""
    table = _TABLE3.get(model_name)
    if table is None:
        return _TABLE3["unetr"], "paper supplementary Table 3 (unetr values; no entry for this model)"
    return table, f"paper supplementary Table 3 ({model_name})"


def method_hparams(model_name: str, method: str) -> dict[str, float]:
    """Table 3's learning rate and weight decay for one method's tensors (``full``, ``bitfit``, ``lora``, ...).

    DoRA is not in the table and gets LoRA's values.
    """
    table, _ = _table(model_name)
    column = "lora" if method == "dora" else method
    if column not in table["lr"]:
        raise UserError(f"no paper hyper-parameters for method {method!r}")
    return {"lr": table["lr"][column], "weight_decay": table["weight_decay"][column]}


def recommended_hparams(model_name: str, spec: Spec) -> dict[str, Any]:
    """Learning rate, weight decay, optimizer, schedule, epochs and batch size from the paper.

    ``lr`` and ``weight_decay`` are the single value of the spec's Table 3 column
    (:func:`table3_column`: a Mix-PEFT spec falls in the ``petite`` column); per-method
    values are :func:`method_hparams`.  Models other than ``cvtgan`` get UNETR's table
    (``source`` says so).
    """
    table, source = _table(model_name)
    col = table3_column(spec)
    kind = "full" if col == "full" else "peft"
    return {
        "lr": table["lr"][col],
        "weight_decay": table["weight_decay"][col],
        "optimizer": table["optimizer"][kind],
        "schedule": table["schedule"][kind],
        "epochs": 0 if spec.is_empty else table["epochs"],
        "batch_size": 6,
        "column": col,
        "source": source,
    }


# Options per model as in the paper's Tables 6-7 (keyed by position where they differ).
_COMBO_OPTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "cvtgan": {"lora": {"r": 8}, "adapter": {"rf": 8}, "vpt@encoder": {"tokens": (8, 32)},
               "vpt@decoder": {"tokens": (32, 8)}, "ssf": {}},
    "unetr": {"lora": {"r": 4}, "adapter": {"rf": 4}, "adapter@encoder": {"rf": 16}, "vpt": {"tokens": (50,)},
              "ssf": {}},
}
_ENCODER_ORDER = ("lora", "adapter", "vpt", "ssf")
_DECODER_ORDER = ("lora", "adapter", "ssf", "vpt")
assert set(_ENCODER_ORDER) == set(_DECODER_ORDER) == set(MIX_METHODS)


def _combo_method(model: nn.Module, name: str, position: str, module_names: list[str]) -> MethodSpec | None:
    table = _COMBO_OPTIONS.get((getattr(model, "config", None) or {}).get("name", ""), {})
    options = table.get(f"{name}@{position}", table.get(name, {}))
    spec = MethodSpec.create(name, options)
    method = spec.build()
    if not method.is_feasible(model, module_names):
        return None
    if name == "vpt" and options:
        # Paper token counts only fit if the site count matches; else the model default.
        try:
            method.tokens_per_site(model, prompt_sites(model, module_names))  # type: ignore[attr-defined]
        except UserError:
            spec = MethodSpec.create(name)
    return spec


def combos(model: nn.Module, encoder: str = "encoder", decoder: str = "decoder") -> list[Spec]:
    """Feasible Mix-PEFT combinations (paper Tables 6-7), each with global BitFit.

    Encoder and decoder get different methods from {lora, adapter, vpt, ssf},
    each feasible for its component (VPT needs a prompt site; adapters an MLP or a
    conv block; LoRA query/key or conv layers; SSF attention/MLP/norm outputs).
    """
    enc_names = component_modules(model, encoder)
    dec_names = component_modules(model, decoder)
    out: list[Spec] = []
    for e in _ENCODER_ORDER:
        enc = _combo_method(model, e, "encoder", enc_names)
        if enc is None:
            continue
        for d in _DECODER_ORDER:
            if d == e:
                continue
            dec = _combo_method(model, d, "decoder", dec_names)
            if dec is not None:
                out.append(Spec(((encoder, enc), (decoder, dec)), bitfit=True))
    return out
