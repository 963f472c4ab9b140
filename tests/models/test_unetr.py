"""UNETR: shapes, patch sizes, sliding windows, MONAI weights, the VPT prompt site."""

from __future__ import annotations


import pytest
import torch
import torch.nn as nn
from monai.inferers import sliding_window_inference

from petite.errors import UserError
from petite.models import (
    build_model,
    role_modules,
)
from petite.models.unetr import load_monai_unetr_state_dict, skip_layers

NORM_TYPES = (nn.LayerNorm, nn.InstanceNorm3d, nn.BatchNorm3d)
CONV_TYPES = (nn.Conv3d, nn.ConvTranspose3d)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny(name: str, **overrides):
    return build_model(name, "tiny", **overrides)


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
