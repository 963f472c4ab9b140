"""The PEFT spec language: parse, canonical form, serialisation, errors, presets, combos, hparams."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch import nn

from petite.errors import UserError
from petite.models import build_model
from petite.peft import METHODS, PRESETS, Spec, combos, recommended_hparams

ROUND_TRIP = [
    "encoder=vpt:tokens=8/32,decoder=lora:r=8,bitfit",
    "encoder=lora:r=4,decoder=ssf,bitfit",
    "lora:r=4",
    "dora:r=2:alpha=4:dropout=0.1:targets=query/key/value",
    "adapter:rf=16,bitfit",
    "bitfit",
    "layernorm",
    "encoder=bitfit,decoder=layernorm",
    "vpt:tokens=50",
    "ssf:targets=norm",
    "full",
    "none",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip_string_dict_yaml(text: str, tmp_path) -> None:
    spec = Spec.parse(text)
    assert Spec.parse(spec.to_string()) == spec
    assert Spec.parse(spec.to_string()).to_string() == spec.to_string()
    assert Spec.from_dict(spec.to_dict()) == spec
    spec.to_yaml(tmp_path / "spec.yaml")
    assert Spec.from_yaml(tmp_path / "spec.yaml") == spec
    assert hash(spec) == hash(Spec.parse(spec.to_string()))


def test_canonical_equality() -> None:
    assert Spec.parse("decoder=lora:r=8,encoder=vpt:tokens=8/32,bitfit") == Spec.parse("petite-cvtgan")
    assert Spec.parse("encoder=lora:alpha=8.0:r=8") == Spec.parse("encoder=lora")
    assert Spec.parse(" bitfit , encoder=ssf ") == Spec.parse("encoder=ssf,bitfit")
    assert Spec.parse("encoder=lora:r=4") != Spec.parse("encoder=lora:r=8")
    assert Spec.parse("petite-unetr").to_string() == "encoder=lora:r=4,decoder=ssf,bitfit"
    assert Spec.parse("none").is_empty and Spec.parse("full").full
    assert Spec.parse("lora:r=4").scopes == ("*",)  # a bare method: the whole model
    assert Spec.parse("bitfit").bitfit and not Spec.parse("bitfit").methods
    assert set(PRESETS) == {"petite-unetr", "petite-cvtgan", "full", "none"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("encoder=foo", "unknown PEFT method"),
        ("encoder=lora:rank=4", "unknown option 'rank'"),
        ("encoder=lora:r=four", "bad value"),
        ("encoder=lora:r=0", "r must be >= 1"),
        ("encoder=lora:dropout=1.5", "dropout"),
        ("adapter:rf=0", "rf must be"),
        ("vpt:tokens=0/0", "tokens"),
        ("vpt:tokens=8/x", "bad value"),
        ("encoder=lora:r", "expected key=value"),
        ("encoder=lora,encoder=ssf", "given twice"),
        ("lora,decoder=ssf", "bare method"),
        ("full,bitfit", "whole PEFT spec"),
        ("bitfit,bitfit", "twice"),
        ("", "empty"),
        ("encoder=lora,,bitfit", "empty item"),
        ("en-coder=lora", "bad component"),
        ("layernorm:x=1", "unknown option"),
    ],
)
def test_bad_specs_are_one_line_user_errors(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        Spec.parse(text)
    assert "\n" not in str(err.value)


def test_yaml_errors_name_the_file(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: {encoder: {method: lora, options: {r: -1}}}\n")
    with pytest.raises(UserError, match="bad.yaml"):
        Spec.from_yaml(bad)
    (tmp_path / "s.yaml").write_text("spec: petite-unetr\n")
    assert Spec.from_yaml(tmp_path / "s.yaml") == Spec.parse("petite-unetr")
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"methods": {"decoder": {"method": "ssf"}}, "bitfit": True}))
    assert Spec.from_yaml(tmp_path / "d.yaml") == Spec.parse("decoder=ssf,bitfit")
    with pytest.raises(UserError, match="spec file not found"):
        Spec.from_yaml(tmp_path / "missing.yaml")


def test_every_method_is_registered() -> None:
    assert set(METHODS) == {"layernorm", "bitfit", "lora", "dora", "adapter", "ssf", "vpt"}


def _meta(name: str) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, "tiny")


def test_combos_unetr_nine() -> None:
    specs = combos(_meta("unetr"))
    assert len(specs) == 9 == len(set(specs))
    strings = [s.to_string() for s in specs]
    assert "encoder=lora:r=4,decoder=ssf,bitfit" in strings  # PETITE for UNETR
    assert "encoder=adapter:rf=16,decoder=lora:r=4,bitfit" in strings  # Table 7 options
    assert all(s.bitfit and s.method_for("encoder").name != s.method_for("decoder").name for s in specs)
    assert not any(s.method_for("decoder").name == "vpt" for s in specs)  # no prompt site in a CNN decoder


def test_combos_cvtgan() -> None:
    model = _meta("cvtgan")
    specs = combos(model)
    strings = [s.to_string() for s in specs]
    assert Spec.parse("petite-cvtgan") in specs
    assert len(set(specs)) == len(specs)
    # Paper Table 6: 12 rows, 3 with VPT (32/8) in the decoder's CvT up-stages.
    assert len(specs) == 12, strings
    assert "encoder=lora,decoder=vpt:tokens=32/8,bitfit" in strings


def test_combos_twelve_with_prompt_sites_in_both_components() -> None:
    """A transformer encoder and decoder, each with prompt sites: all 4 x 3 pairs are feasible."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.to_q, self.to_k, self.out_proj = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
            self.norm1, self.mlp = nn.LayerNorm(8), nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
            self.prompt_width, self.prompts = 8, None

    net = nn.Module()
    net.enc, net.dec = nn.ModuleList([Block(), Block()]), nn.ModuleList([Block(), Block()])
    net.config = {"name": "cvtgan"}
    net.components, net.frozen_components = {"encoder": ["enc"], "decoder": ["dec"]}, []
    net.peft_roles = {"query": ["*.to_q"], "key": ["*.to_k"], "attn_out": ["*.out_proj"], "mlp": ["*.mlp"],
                      "mlp_out": ["*.mlp.2"], "norm": ["*.norm1"], "prompt_site": ["enc.[0-9]", "dec.[0-9]"]}
    specs = combos(net)
    assert len(specs) == 12
    assert Spec.parse("encoder=lora,decoder=vpt:tokens=32/8,bitfit") in specs


def test_recommended_hparams_table3() -> None:
    assert recommended_hparams("cvtgan", Spec.parse("petite-cvtgan"))["lr"] == 1e-3
    assert recommended_hparams("cvtgan", Spec.parse("ssf"))["weight_decay"] == 1e-6
    assert recommended_hparams("cvtgan", Spec.parse("adapter"))["lr"] == 1e-2
    unetr_vpt = recommended_hparams("unetr", Spec.parse("vpt"))
    assert (unetr_vpt["lr"], unetr_vpt["epochs"], unetr_vpt["optimizer"]) == (1e-2, 200, "adamw")
    assert recommended_hparams("unetr", Spec.parse("lora:r=4"))["weight_decay"] == 1e-4
    assert recommended_hparams("unetr", Spec.parse("dora")) ["column"] == "lora"
    assert recommended_hparams("unetr", Spec.parse("full"))["schedule"] == "warmup-cosine"
    assert recommended_hparams("cvtgan", Spec.parse("bitfit"))["column"] == "bitfit"
    assert recommended_hparams("swin_unetr", Spec.parse("lora"))["source"].endswith("no entry for this model)")
