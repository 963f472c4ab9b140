"""Method registry (name -> class) and the paper's per-method hyper-parameters.

``METHODS`` is the single list of PEFT methods the spec language knows.
``recommended_hparams`` returns the fine-tuning settings of the paper's
supplementary Table 3 for a model and a spec, for the training engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from petite.peft.methods import Method
from petite.peft.methods.adapter import Adapter
from petite.peft.methods.bitfit import BitFit
from petite.peft.methods.dora import Dora
from petite.peft.methods.layernorm import LayerNormTuning
from petite.peft.methods.lora import Lora
from petite.peft.methods.ssf import SSF
from petite.peft.methods.vpt import VPT

if TYPE_CHECKING:
    from petite.peft.spec import Spec

METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (LayerNormTuning, BitFit, Lora, Dora, Adapter, SSF, VPT)
}

# The additive methods Mix-PEFT combines (paper Sec. 2.2, Tables 6-7).
MIX_METHODS: tuple[str, ...] = ("lora", "adapter", "vpt", "ssf")


def method_class(name: str) -> type[Method]:
    """The method class registered under ``name`` (UserError if unknown)."""
    from petite.errors import UserError

    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"unknown PEFT method {name!r} (methods: {', '.join(METHODS)})") from None


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


def recommended_hparams(model_name: str, spec: Spec) -> dict[str, Any]:
    """Learning rate, weight decay, optimizer, schedule, epochs and batch size from the paper.

    Models other than ``cvtgan`` get UNETR's table (``source`` says so).
    """
    table = _TABLE3.get(model_name)
    source = f"paper supplementary Table 3 ({model_name})"
    if table is None:
        table, source = _TABLE3["unetr"], "paper supplementary Table 3 (unetr values; no entry for this model)"
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
