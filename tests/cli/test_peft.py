"""`petite peft info` and `petite peft combos`."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from petite.models import build_model
from tests.cli_runner import run_cli


def test_info_paper_unetr_petite_is_under_one_percent(capsys) -> None:
    code, out, _ = run_cli(["peft", "info", "unetr", "--preset", "paper", "--spec", "petite-unetr", "--json"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["total"] == 101_670_049  # the reference UNETR, before PEFT modules
    assert 0 < info["percent"] < 1
    assert info["trainable"] == sum(info["per_component"].values()) == sum(info["per_method"].values())
    assert set(info["per_method"]) == {"lora", "ssf", "bitfit"}
    # Independent counts: LoRA r=4 on q and k (768 -> 768) of 12 blocks is 12 * 2 * (4 * 768 + 768 * 4);
    # SSF puts a scale and a shift on every InstanceNorm of the CNN decoder (found by type, not by role).
    assert info["per_method"]["lora"] == 12 * 2 * (4 * 768 + 768 * 4)
    with torch.device("meta"):
        model = build_model("unetr", "paper")
    norms = [m.num_features for n, m in model.named_modules()
             if isinstance(m, nn.InstanceNorm3d) and not n.startswith("vit")]
    assert len(norms) > 10 and info["per_method"]["ssf"] == 2 * sum(norms)
    assert info["spec"] == "encoder=lora:r=4,decoder=ssf,bitfit"


def test_info_text_and_yaml_spec(capsys, tmp_path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("spec: encoder=vpt:tokens=8/32,decoder=lora,bitfit\n")
    code, out, _ = run_cli(["peft", "info", "cvtgan", "-p", "tiny", "-s", str(spec)], capsys)
    assert code == 0
    assert "per component" in out and "vpt" in out and "%" in out
    code, out, _ = run_cli(["peft", "info", "cvtgan", "-p", "tiny", "-s", "full", "--json"], capsys)
    info = json.loads(out)
    assert info["percent"] == pytest.approx(100.0)  # the frozen discriminator is not in the base


def test_combos(capsys) -> None:
    code, out, _ = run_cli(["peft", "combos", "unetr", "--json"], capsys)
    assert code == 0 and len(json.loads(out)) == 9
    code, out, _ = run_cli(["peft", "combos", "cvtgan"], capsys)
    assert code == 0 and "encoder=vpt:tokens=8/32,decoder=lora,bitfit" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["peft", "info", "unetr", "-p", "tiny", "-s", "encoder=lora:r=zero"],
        ["peft", "info", "unetr", "-p", "tiny", "-s", "middle=lora"],
        ["peft", "info", "nonet", "-p", "tiny", "-s", "lora"],
        ["peft", "combos", "unetr", "-p", "huge"],
    ],
)
def test_bad_input_is_one_line_exit_2(argv: list[str], capsys) -> None:
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and err.startswith("petite: error:") and err.count("\n") == 1
