"""Model registry: names, presets, parameter counts, `petite model info`."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from petite.errors import UserError
from petite.models import (
    build_model,
    count_parameters,
    list_models,
    list_presets,
)
from tests.cli_runner import run_cli

NORM_TYPES = (nn.LayerNorm, nn.InstanceNorm3d, nn.BatchNorm3d)
CONV_TYPES = (nn.Conv3d, nn.ConvTranspose3d)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny(name: str, **overrides):
    return build_model(name, "tiny", **overrides)


def test_registry_lists_models_and_presets() -> None:
    assert list_models() == ["unetr", "cvtgan", "swin_unetr"]
    for name in list_models():
        assert set(list_presets(name)) == {"paper", "small", "tiny"}


@pytest.mark.parametrize(
    "args",
    [("nope", "tiny", {}), ("unetr", "huge", {}), ("unetr", "tiny", {"bogus": 1}), ("unetr", "tiny", {"patch_size": 3})],
)
def test_bad_model_requests_are_user_errors(args) -> None:
    name, preset, overrides = args
    with pytest.raises(UserError):
        build_model(name, preset, **overrides)


def test_paper_unetr_has_the_reference_parameter_count() -> None:
    with torch.device("meta"):
        model = build_model("unetr", "paper")
    counts = count_parameters(model)
    assert counts["total"] == 101_670_049
    assert counts["components"]["encoder"] == 88_224_000
    assert counts["other"] == 0


def test_paper_cvtgan_counts_are_within_one_percent() -> None:
    with torch.device("meta"):
        model = build_model("cvtgan", "paper")
    generator = sum(p.numel() for p in model.generator.parameters())
    discriminator = sum(p.numel() for p in model.discriminator.parameters())
    assert abs(generator - 28.7e6) / 28.7e6 < 0.01
    assert abs(discriminator - 0.3e6) / 0.3e6 < 0.01
    counts = count_parameters(model)
    assert counts["components"]["discriminator"] == discriminator
    assert counts["total"] == generator + discriminator
    assert sum(counts["components"].values()) + counts["other"] == counts["total"]


def test_cli_model_info_json(capsys) -> None:
    assert run_cli(["model", "info", "unetr", "--preset", "paper", "--json"]).code == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {"total": 101_670_049, "components": {"encoder": 88_224_000, "decoder": 13_446_049}}


def test_cli_model_info_text_and_errors(capsys) -> None:
    assert run_cli(["model", "info", "cvtgan", "--preset", "tiny"]).code == 0
    out = capsys.readouterr().out
    for word in ("total", "encoder", "decoder", "discriminator", "other"):
        assert word in out
    for argv in (["model", "info", "nope"], ["model", "info", "unetr", "--preset", "huge"]):
        assert run_cli(argv).code == 2
        err = capsys.readouterr().err
        assert err.startswith("petite: error:") and len(err.strip().splitlines()) == 1
