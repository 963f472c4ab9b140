"""The model contract: attributes, components and roles of every model."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from petite.errors import UserError
from petite.models import (
    ROLES,
    build_model,
    component_modules,
    role_modules,
)

NORM_TYPES = (nn.LayerNorm, nn.InstanceNorm3d, nn.BatchNorm3d)
CONV_TYPES = (nn.Conv3d, nn.ConvTranspose3d)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny(name: str, **overrides):
    return build_model(name, "tiny", **overrides)


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


@pytest.mark.parametrize("name", ["unetr", "cvtgan", "swin_unetr"])
def test_checkpoint_blocks_are_disjoint_blocks_that_run(name: str) -> None:
    from petite.models.contract import checkpoint_blocks

    model = tiny(name)
    blocks = checkpoint_blocks(model)
    assert blocks and len(set(blocks)) == len(blocks)
    for a in blocks:  # no block inside another: each activation is recomputed at most once
        assert not any(b != a and b.startswith(a + ".") for b in blocks), a
    ran: set[str] = set()
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: ran.add(n)) for n in blocks]
    size = (64, 64, 64) if name != "unetr" else tuple(model.img_size)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, model.config["in_channels"], *size))
        if name == "cvtgan":
            model.discriminator(torch.rand(1, 1, *size), out)
    for h in hooks:
        h.remove()
    assert ran == set(blocks)  # every listed block is called by the model's forward (or the GAN's losses)


def test_a_model_without_checkpoint_blocks_has_none() -> None:
    from petite.models.contract import checkpoint_blocks

    assert checkpoint_blocks(nn.Linear(2, 2)) == []
    assert tiny("unetr").checkpoint_blocks[0] == "vit.blocks.*"  # patterns, like every contract attribute
