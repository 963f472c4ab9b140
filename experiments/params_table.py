"""% trainable parameters of every single PEFT method and the PETITE presets, with and without BitFit, on the
paper presets, beside the paper's Table 1 (and Table 2's LoRA/SSF rows).

Counts are petite's honest accounting (``petite peft info``): tensors the forward never uses are not counted,
BitFit skips the key biases (softmax cancels them), the GAN's discriminator is not part of the base.
Dead tensors that only a data probe finds (conv biases before BatchNorm in training mode) are still counted
here; a fine-tuning run freezes and reports them.

    python experiments/params_table.py            # markdown on stdout
"""

from __future__ import annotations

import torch

from petite.models import build_model
from petite.peft import apply_spec, summary

# The paper's options per model (Tables 6-7) and its Table 1 percentages.
SINGLES = {
    "cvtgan": {"layernorm": "layernorm", "bitfit": "bitfit", "lora": "lora:r=8", "adapter": "adapter:rf=8",
               "ssf": "ssf", "vpt": "vpt", "dora": "dora:r=8"},
    "unetr": {"layernorm": "layernorm", "bitfit": "bitfit", "lora": "lora:r=4", "adapter": "adapter:rf=4",
              "ssf": "ssf", "vpt": "vpt:tokens=50", "dora": "dora:r=4"},
}
PAPER = {
    "cvtgan": {"layernorm": "0.041", "bitfit": "0.12", "lora": "0.45", "adapter": "0.71", "ssf": "0.16",
               "vpt": "0.02", "petite": "0.32"},
    "unetr": {"layernorm": "0.037", "bitfit": "0.07", "lora": "0.46 (Table 2: 0.44)", "adapter": "0.44",
              "ssf": "0.11 (Table 2: 0.2)", "vpt": "0.038", "petite": "0.51"},
}


def percent(model_name: str, spec: str) -> float:
    with torch.device("meta"):
        model = build_model(model_name, "paper")
        state = apply_spec(model, spec, fingerprint=False)
    return summary(model, state)["percent"]


def main() -> None:
    print("| model | method | spec | % trainable | + BitFit | paper (Table 1) |")
    print("|---|---|---|---|---|---|")
    for model_name, singles in SINGLES.items():
        for method, spec in singles.items():
            alone = percent(model_name, spec) if method != "bitfit" else percent(model_name, "bitfit")
            plus = percent(model_name, f"{spec},bitfit") if method != "bitfit" else alone
            print(f"| {model_name} | {method} | `{spec}` | {alone:.3f} | {plus:.3f} | {PAPER[model_name].get(method, '-')} |")
        preset = f"petite-{model_name}"
        print(f"| {model_name} | PETITE | `{preset}` | - | {percent(model_name, preset):.3f} | "
              f"{PAPER[model_name]['petite']} |")


if __name__ == "__main__":
    main()
