"""DoRA (Liu et al., 2024; used by PEMMA): weight-decomposed LoRA.

``W' = m * (W0 + s B A) / ||W0 + s B A||_col`` with a learned per-output-channel
magnitude ``m`` initialised to ``||W0||_col``: identity at init, like LoRA.  Same
options and targets as :mod:`petite.peft.methods.lora` (peft's ``use_dora=True`` for
Linear/Conv3d, our :class:`~petite.peft.methods.lora.LoraConvTranspose3d` otherwise).
"""

from __future__ import annotations

import dataclasses

from petite.peft.methods.lora import Lora, LoraConfig


@dataclasses.dataclass(frozen=True)
class DoraConfig(LoraConfig):
    """Same options as LoRA."""


class Dora(Lora):
    """LoRA with a learned magnitude per output channel."""

    name = "dora"
    config_class = DoraConfig
    use_dora = True
