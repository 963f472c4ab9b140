"""`petite peft export --format peft`: an adapter HF peft loads onto the same base, or a one-line refusal."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from petite.engine.infer import load_predictor
from petite.models import build_model, load_model, save_model
from petite.peft import apply_spec, save_adapter
from tests.cli_runner import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(tmp_path: Path, model_name: str, spec: str, seed: int = 0) -> Path:
    """A fine-tuning run folder as `petite finetune` leaves it: base checkpoint, config.yaml, adapter."""
    torch.manual_seed(seed)
    base = build_model(model_name, "tiny")
    save_model(base, tmp_path / "base" / "model")
    model = copy.deepcopy(base)
    state = apply_spec(model, spec)
    with torch.no_grad():  # "trained": every adapter tensor moved away from its identity start
        for name in state.trainable:
            param = dict(model.named_parameters())[name]
            param.add_(0.2 * torch.randn_like(param))
    run = tmp_path / "run"
    save_adapter(model, state, run)
    (run / "config.yaml").write_text("init: ../base/model\n")
    return run


def _input(model: torch.nn.Module) -> torch.Tensor:
    size = getattr(model, "img_size", None) or (16, 16, 16)
    return torch.randn(1, 1, *size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("model_name, spec", [
    ("unetr", "encoder=lora:r=4"),
    ("unetr", "encoder=dora:r=2:alpha=4:targets=query/value/mlp_out"),
    ("cvtgan", "encoder=lora:r=4,decoder=lora:r=8:alpha=16"),  # per-component ranks: peft's rank_pattern
])
def test_peft_loads_the_exported_adapter_with_identical_outputs(model_name, spec, tmp_path, capsys) -> None:
    from peft import PeftModel

    run = _run(tmp_path, model_name, spec)
    out = tmp_path / "exported"
    result = run_cli(["peft", "export", run, "--format", "peft", "--out", out], capsys)
    assert result.code == 0, result.err
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["use_dora"] == ("dora" in spec)
    keys = list(load_file(str(out / "adapter_model.safetensors")))
    assert keys and all(k.startswith("base_model.model.") for k in keys)
    assert not any(".petite." in k or ".default." in k for k in keys)  # peft's names carry no adapter name
    assert any(k.endswith(".lora_A.weight") for k in keys)

    petite_model = load_predictor(run, merged=False)
    peft_model = PeftModel.from_pretrained(load_model(tmp_path / "base" / "model"), str(out)).eval()
    plain = load_model(tmp_path / "base" / "model").eval()
    x = _input(plain)
    with torch.no_grad():
        ours, theirs, base = petite_model(x), peft_model(x), plain(x)
    change, diff = float((ours - base).abs().max()), float((ours - theirs).abs().max())
    print(f"{model_name} {spec}: adapter changes the output by {change:.3g}, peft differs by {diff:.3g}")
    assert change > 1e-4  # the adapter changes the model...
    assert diff < 1e-5 and diff < change / 100  # ...and peft reproduces the change


@pytest.mark.parametrize("spec, part", [
    ("petite-unetr", "bitfit (BitFit's trained biases have no place in a peft LoRA adapter); "
                     "decoder=ssf (SSF has no peft equivalent)"),
    ("decoder=lora:r=4", "decoder=lora on convolutions"),
    ("encoder=adapter", "encoder=adapter (bottleneck adapters"),
    ("encoder=vpt", "encoder=vpt (VPT prompts"),
])
def test_parts_peft_lacks_are_refused_in_one_line_and_nothing_is_written(spec, part, tmp_path, capsys) -> None:
    run = _run(tmp_path, "unetr", spec)
    out = tmp_path / "exported"
    result = run_cli(["peft", "export", run, "--out", out], capsys)
    assert result.code == 2 and result.out == "" and result.err.count("\n") == 1, result.err
    assert result.err.startswith(f"petite: error: {run}: cannot export to peft format: ") and part in result.err
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
