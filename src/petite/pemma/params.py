"""How many parameters each PEMMA design trains, as % of the CT model: the table behind "~8 %".

Every number is counted on a freshly built model (:func:`petite.pemma.upgrade.summary`),
nothing is typed in: build the CT segmenter of an architecture and preset, upgrade
a copy with each design of :data:`VARIANTS`, count what trains.  The PEMMA
paper reports about 8 % trainable for its design; :data:`PAPER_PERCENT` is that
figure, printed beside ours for comparison only.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from petite.errors import UserError
from petite.pemma.segmentation import ARCHS, build_segmenter
from petite.pemma.upgrade import PEMMA, summary
from petite.tables import render_table

#: What the PEMMA paper states for its design (% of the CT model's parameters that train).
PAPER_PERCENT = 8.0

#: Designs compared: the reference (default) first, then our variants (PEMMA keyword arguments).
VARIANTS: dict[str, dict[str, Any]] = {
    "reference (tokens, LoRA attn, decoder)": dict(fusion="tokens", targets="reference", train_decoder=True),
    "reference with DoRA": dict(method="dora", fusion="tokens", targets="reference", train_decoder=True),
    "reference, frozen decoder": dict(fusion="tokens", targets="reference", train_decoder=False),
    "tokens, extended LoRA, decoder": dict(fusion="tokens", targets="extended", train_decoder=True),
    "channels, extended LoRA, frozen decoder (earlier default)": dict(fusion="channels", targets="extended",
                                                                      train_decoder=False),
    "channels, extended LoRA, decoder": dict(fusion="channels", targets="extended", train_decoder=True),
}

#: ``preset="pemma"``: the models of the authors' public PEMMA code (UNETR 96^3 crops, feature size 48,
#: convolutional patch embedding; Swin UNETR feature size 48, window 7 = our ``paper`` preset).
PEMMA_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "unetr": ("paper", dict(img_size=[96, 96, 96], feature_size=48, proj_type="conv")),
    "swin_unetr": ("paper", {}),
}

COLUMNS = ("Arch", "Preset", "Design", "CT model", "Trainable", "% trainable", "LoRA", "PET parts",
           "Adapters+fusion", "Decoder+head")


def variant_rows(arch: str, preset: str, variants: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per design of ``arch`` at ``preset``: counts per group, trainable and % of the CT model.

    ``preset``: ``paper``, ``small``, ``tiny`` or ``pemma`` (:data:`PEMMA_CONFIGS`).

    Raises:
        UserError: unknown architecture, preset or design name.
    """
    if arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    names = list(VARIANTS) if variants is None else list(variants)
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise UserError(f"unknown PEMMA design(s) {', '.join(unknown)}; designs: {'; '.join(VARIANTS)}")
    base_preset, overrides = PEMMA_CONFIGS[arch] if preset == "pemma" else (preset, {})
    base = build_segmenter(arch, base_preset, **overrides)
    rows = []
    for name in names:
        info = summary(PEMMA(copy.deepcopy(base), fingerprint=False, **VARIANTS[name]))
        groups = info["groups"]
        rows.append({"arch": arch, "preset": preset, "design": name, "base": info["base"],
                     "trainable": info["trainable"], "percent": info["percent"], "peft": info["peft"],
                     "groups": groups})
    return rows


def format_rows(rows: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """``(plain text, markdown)`` of :func:`variant_rows` rows, the paper's figure in the caption line."""
    cells = [[r["arch"], r["preset"], r["design"], f"{r['base']:,}", f"{r['trainable']:,}", f"{r['percent']:.2f}",
              f"{r['groups']['lora']:,}", f"{r['groups']['pet']:,}",
              f"{r['groups']['ct_adapter'] + r['groups']['fusion']:,}", f"{r['groups']['decoder']:,}"]
             for r in rows]
    return render_table(COLUMNS, cells)


__all__ = ["COLUMNS", "PAPER_PERCENT", "VARIANTS", "format_rows", "variant_rows"]
