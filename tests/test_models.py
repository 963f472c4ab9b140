"""Model registry, contract attributes, UNETR and Swin UNETR."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from monai.inferers import sliding_window_inference

from petite.errors import UserError
from petite.models import (
    ROLES,
    build_model,
    component_modules,
    count_parameters,
    list_models,
    list_presets,
    role_modules,
)
from petite.models.unetr import load_monai_unetr_state_dict, skip_layers
from tests.cli_runner import run_cli

NORM_TYPES = (nn.LayerNorm, nn.InstanceNorm3d, nn.BatchNorm3d)
CONV_TYPES = (nn.Conv3d, nn.ConvTranspose3d)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny(name: str, **overrides):
    return build_model(name, "tiny", **overrides)


# ---------------------------------------------------------------- registry / contract


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


@pytest.mark.parametrize("name", ["unetr", "cvtgan", "swin_unetr"])
def test_contract_attributes(name: str) -> None:
    model = tiny(name)
    # config is plain JSON and rebuilds the same architecture.
    config = json.loads(json.dumps(model.config))
    assert config["name"] == name and config["preset"] == "tiny"
    rebuilt = build_model(config.pop("name"), config.pop("preset"), **config)
    assert [(k, v.shape) for k, v in rebuilt.state_dict().items()] == [
        (k, v.shape) for k, v in model.state_dict().items()
    ]
    assert set(ROLES) <= set(model.peft_roles)
    assert {"encoder", "decoder"} <= set(model.components)
    assert set(model.frozen_components) <= set(model.components)
    # Components are disjoint.
    seen: set[str] = set()
    for component in model.components:
        names = set(component_modules(model, component))
        assert names and not names & seen
        seen |= names
    # Prompt sites expose the VPT attributes.
    for site in role_modules(model, "prompt_site"):
        module = model.get_submodule(site)
        assert module.prompts is None and module.prompt_width > 0


@pytest.mark.parametrize("name", ["unetr", "cvtgan", "swin_unetr"])
def test_roles_match_the_layers_they_promise(name: str) -> None:
    model = tiny(name)
    modules = dict(model.named_modules())
    for role, patterns in model.peft_roles.items():
        found = role_modules(model, role)
        assert bool(found) == bool(patterns), f"{name}: role {role} patterns {patterns} matched {found}"
        for n in found:
            m = modules[n]
            if role in ("query", "key", "value", "attn_out", "mlp_out", "qkv"):
                assert isinstance(m, nn.Linear), (role, n)
            elif role == "norm":
                assert isinstance(m, NORM_TYPES), (role, n)
            elif role in ("conv", "query_conv", "key_conv", "value_conv"):
                assert isinstance(m, CONV_TYPES), (role, n)
    # Every norm / conv layer of the decoder is reachable through the roles, except the
    # CvT attention's depthwise projections (+ their BatchNorm), which have roles of their own.
    decoder = {n for n in component_modules(model, "decoder") if ".attn.conv_" not in n}
    for role, types in (("norm", NORM_TYPES), ("conv", CONV_TYPES)):
        wanted = {n for n in decoder if isinstance(modules[n], types)}
        assert wanted == set(role_modules(model, role, component="decoder")), role


def test_unetr_roles_and_components_in_detail() -> None:
    model = tiny("unetr")
    n_layers = model.config["num_layers"]
    assert role_modules(model, "query") == [f"vit.blocks.{i}.attn.to_q" for i in range(n_layers)]
    assert role_modules(model, "query", component="decoder") == []
    assert role_modules(model, "conv_block") == [
        "encoder1", "encoder2", "encoder3", "encoder4", "decoder5", "decoder4", "decoder3", "decoder2"
    ]
    assert role_modules(model, "prompt_site") == ["vit.blocks.1"]
    assert component_modules(model, "encoder")[0] == "vit"
    assert "vit.blocks.0.attn.to_q" in component_modules(model, "encoder")
    with pytest.raises(UserError):
        component_modules(model, "discriminator")
    with pytest.raises(UserError):
        role_modules(model, "nonsense")
    # conv_block outputs are 5D volumes (a 1x1x1 adapter can follow them).
    shapes = {}
    hooks = [
        model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, o.dim()))
        for n in role_modules(model, "conv_block")
    ]
    with torch.no_grad():
        model(torch.rand(1, 1, 64, 64, 64))
    for h in hooks:
        h.remove()
    assert set(shapes.values()) == {5}


def test_no_dead_parameters_in_unetr() -> None:
    """norm_cross_attn is gone and every parameter gets a gradient."""
    model = tiny("unetr", img_size=[32, 32, 32])
    assert not any("norm_cross_attn" in k for k in model.state_dict())
    model(torch.rand(1, 1, 32, 32, 32)).mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None]
    assert dead == []


def test_skip_layers_scale_with_depth() -> None:
    assert skip_layers(12) == (3, 6, 9)
    assert skip_layers(4) == (1, 2, 3)
    assert skip_layers(3) == (0, 1, 2)
    with pytest.raises(UserError):
        build_model("unetr", "tiny", num_layers=2)


# ---------------------------------------------------------------- parameter counts


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


# ---------------------------------------------------------------- UNETR behaviour


@pytest.mark.parametrize("crop", [(64, 64, 64), (64, 64, 32)])
def test_unetr_keeps_the_crop_shape(crop) -> None:
    model = tiny("unetr", img_size=list(crop)).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, *crop)).shape == (2, 1, *crop)


@pytest.mark.parametrize("patch", [4, 16])
def test_unetr_other_patch_sizes(patch: int) -> None:
    model = tiny("unetr", patch_size=patch, img_size=[32, 32, 32]).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 32, 32, 32)).shape == (1, 1, 32, 32, 32)


def test_unetr_rejects_other_sizes_with_a_hint() -> None:
    model = tiny("unetr")
    with pytest.raises(UserError, match="sliding_window_inference"):
        model(torch.rand(1, 1, 64, 64, 32))


@pytest.mark.parametrize("grid,crop", [((128, 128, 63), (64, 64, 32)), ((128, 128, 90), (64, 64, 64))])
def test_unetr_whole_volume_by_sliding_window(grid, crop) -> None:
    model = tiny("unetr", img_size=list(crop)).eval()
    with torch.no_grad():
        # Overlap 0 keeps the test short (8 windows); the engine uses the paper's 0.5.
        out = sliding_window_inference(torch.rand(1, 1, *grid), crop, sw_batch_size=8, predictor=model, overlap=0.0)
    assert out.shape == (1, 1, *grid)
    assert torch.isfinite(out).all()


def test_monai_fused_qkv_weights_reproduce_monai_unetr() -> None:
    from monai.networks.nets import UNETR as MonaiUNETR

    kw = dict(in_channels=1, out_channels=1, img_size=(32, 32, 32), feature_size=8, hidden_size=32, mlp_dim=64,
              num_heads=2, proj_type="perceptron", norm_name="instance", res_block=True, qkv_bias=True)
    reference = MonaiUNETR(**kw).eval()
    ours = build_model("unetr", "tiny", img_size=[32, 32, 32], patch_size=16, num_layers=12, feature_size=8,
                       hidden_size=32, mlp_dim=64, num_heads=2, qkv_bias=True).eval()
    load_monai_unetr_state_dict(ours, reference.state_dict())
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        # float32: separate vs fused matmuls only round differently.
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=0)
        # float64 removes rounding: the weight mapping itself must be exact.
        torch.testing.assert_close(ours.double()(x.double()), reference.double()(x.double()), atol=1e-6, rtol=0)
    # q rows come first, v rows last.
    fused = reference.vit.blocks[0].attn.qkv.weight
    assert torch.equal(ours.vit.blocks[0].attn.to_q.weight, fused[:32])
    assert torch.equal(ours.vit.blocks[0].attn.to_v.weight, fused[64:])
    with pytest.raises(UserError):
        load_monai_unetr_state_dict(tiny("unetr"), reference.state_dict())


def test_unetr_vpt_prompt_site() -> None:
    model = tiny("unetr", img_size=[32, 32, 32]).eval()
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        before = model(x)
    site = model.get_submodule(role_modules(model, "prompt_site")[0])
    site.prompts = nn.Parameter(torch.randn(5, site.prompt_width))
    prompted = model(x)
    assert prompted.shape == before.shape
    assert not torch.allclose(prompted, before)
    prompted.mean().backward()
    assert site.prompts.grad is not None and site.prompts.grad.abs().sum() > 0
    # Prompts are stripped before skips/decoder: every hidden state keeps the token count.
    _, hidden = model.vit(x)
    assert {h.shape[1] for h in hidden} == {64}
    site.prompts = None
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, atol=0, rtol=0)


# ---------------------------------------------------------------- Swin UNETR


@pytest.mark.parametrize("shape", [(64, 64, 32), (40, 36, 20)])
def test_swin_unetr_any_shape(shape) -> None:
    model = tiny("swin_unetr").eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, *shape))
    assert out.shape == (1, model.config["out_channels"], *shape)


# ---------------------------------------------------------------- CLI




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
