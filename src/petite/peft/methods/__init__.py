"""PEFT methods, one module each; importing this package registers them all in :data:`METHODS`.

| module | method | kind |
|---|---|---|
| ``layernorm`` | LayerNorm tuning: normalisation parameters | selective |
| ``bitfit`` | BitFit: biases | selective |
| ``lora`` | LoRA on query/key (Linear) or convolutions | additive, mergeable |
| ``dora`` | DoRA: LoRA with a learned per-output magnitude | additive, mergeable |
| ``adapter`` | Pfeiffer bottleneck adapters after the MLP / conv blocks | additive |
| ``ssf`` | SSF: scale and shift after attention, MLP and norm outputs | additive, mergeable |
| ``vpt`` | VPT-shallow: prompt tokens at the prompt sites | additive |

The interface is :class:`petite.peft.methods.base.Method`.
"""

# isort: off  (the import order is the order of METHODS, as listed in the paper's Table 1)
from petite.peft.methods import adapter, bitfit, dora, layernorm, lora, ssf, vpt  # noqa: F401  (registers them)

# isort: on
from petite.peft.methods.base import (
    METHODS,
    Method,
    MethodConfig,
    format_value,
    method_class,
)

__all__ = ["METHODS", "Method", "MethodConfig", "format_value", "method_class"]
