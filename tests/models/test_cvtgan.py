"""3D CVT-GAN: shapes, padding, VPT sites, GAN losses and a training step."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from petite.models import build_model, role_modules
from petite.models.blocks import crop_to_shape, pad_to_multiple
from petite.models.cvtgan import GENERATOR_MULTIPLE, discriminator_loss, generator_loss


@pytest.fixture
def gan():
    torch.manual_seed(0)
    return build_model("cvtgan", "tiny")


@pytest.mark.parametrize("shape", [(64, 64, 64), (64, 64, 32), (40, 36, 17)])
def test_generator_keeps_shape_and_discriminator_gives_patch_logits(gan, shape) -> None:
    gan.eval()
    x = torch.rand(1, 1, *shape)
    with torch.no_grad():
        y = gan(x)
        logits = gan.discriminator(x, y)
    assert y.shape == x.shape
    assert logits.shape[:2] == (1, 1) and logits.dim() == 5


def test_whole_volume_directly_through_padding(gan) -> None:
    """A whole scanner-5 grid (128x128x63, not a multiple of 16) goes through in one call."""
    gan.eval()
    with torch.no_grad():
        assert gan(torch.rand(1, 1, 128, 128, 63)).shape == (1, 1, 128, 128, 63)


def test_whole_volume_by_sliding_window(gan) -> None:
    gan.eval()
    with torch.no_grad():
        out = sliding_window_inference(torch.rand(1, 1, 128, 128, 90), (64, 64, 64), 8, gan, overlap=0.0)
    assert out.shape == (1, 1, 128, 128, 90)


def test_pad_and_crop_are_inverse() -> None:
    x = torch.randn(2, 1, 33, 16, 7)
    padded, spatial = pad_to_multiple(x, GENERATOR_MULTIPLE)
    assert padded.shape[2:] == (48, 16, 16)
    assert torch.equal(crop_to_shape(padded, spatial), x)
    # Padding is symmetric (odd remainders put the extra voxel after).
    assert torch.equal(padded[:, :, 7:40, :, 4:11], x)


def test_global_residual_is_identity_when_the_net_outputs_zero(gan) -> None:
    gan.eval()
    head_out = gan.generator.head.out
    nn.init.zeros_(head_out.weight)
    nn.init.zeros_(head_out.bias)
    x = torch.rand(1, 1, 32, 32, 17)
    with torch.no_grad():
        assert torch.equal(gan(x), x)


def test_vpt_sites(gan) -> None:
    gan.eval()
    x = torch.rand(1, 1, 64, 64, 32)
    with torch.no_grad():
        before = gan(x)
    sites = [gan.get_submodule(n) for n in role_modules(gan, "prompt_site")]
    assert role_modules(gan, "prompt_site") == ["generator.down.1", "generator.down.2", "generator.up.0", "generator.up.1"]
    assert [s.prompt_default_tokens for s in sites] == [8, 32, 32, 8]  # paper: encoder 8/32, decoder 32/8
    for site, p in zip(sites, (8, 32, 32, 8)):
        site.prompts = nn.Parameter(torch.randn(p, site.prompt_width))
    prompted = gan(x)
    assert prompted.shape == before.shape and not torch.allclose(prompted, before)
    prompted.mean().backward()
    assert all(s.prompts.grad is not None and s.prompts.grad.abs().sum() > 0 for s in sites)
    for site in sites:
        site.prompts = None
    with torch.no_grad():
        assert torch.equal(gan(x), before)


def test_prompts_bypass_the_depthwise_projection(gan) -> None:
    """Prompt tokens go through the linear q/k/v only: the conv projections see only the volume."""
    attn = gan.generator.down[1].blocks[0].attn
    seen: list[torch.Size] = []
    hook = attn.conv_q.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    dim = attn.to_q.in_features
    tokens = torch.randn(1, 3 + 4 * 4 * 2, dim)
    out = attn.eval()(tokens, (4, 4, 2), n_extra=3)
    hook.remove()
    assert out.shape == tokens.shape
    assert seen == [torch.Size([1, dim, 4, 4, 2])]


def test_depthwise_projection_roles(gan) -> None:
    for role in ("query_conv", "key_conv", "value_conv"):
        for name in role_modules(gan, role):
            conv = gan.get_submodule(name)
            assert isinstance(conv, nn.Conv3d) and conv.groups == conv.in_channels and conv.bias is None
    strides = {gan.get_submodule(n).stride for n in role_modules(gan, "query_conv")}
    assert strides == {(1, 1, 1)}
    assert {gan.get_submodule(n).stride for n in role_modules(gan, "key_conv")} == {(2, 2, 2)}


def test_losses_match_their_definitions() -> None:
    real, fake = torch.randn(2, 1, 4, 4, 4), torch.randn(2, 1, 4, 4, 4)
    expected = 0.5 * (-F.logsigmoid(real).mean() - F.logsigmoid(-fake).mean())
    torch.testing.assert_close(discriminator_loss(real, fake), expected)
    a, b = torch.rand(2, 1, 8, 8, 8), torch.rand(2, 1, 8, 8, 8)
    torch.testing.assert_close(
        generator_loss(fake, a, b, l1_weight=10.0), -F.logsigmoid(fake).mean() + 10.0 * (a - b).abs().mean()
    )


def test_one_gan_training_step_updates_both_networks(gan) -> None:
    gan.train()
    assert not any(isinstance(m, nn.Sigmoid) for m in gan.modules())
    g_opt = torch.optim.Adam(gan.generator.parameters(), lr=1e-3)
    d_opt = torch.optim.Adam(gan.discriminator.parameters(), lr=1e-3)
    g0 = {k: v.clone() for k, v in gan.generator.state_dict().items()}
    d0 = {k: v.clone() for k, v in gan.discriminator.state_dict().items()}
    short, long = torch.rand(2, 1, 32, 32, 32), torch.rand(2, 1, 32, 32, 32)

    fake = gan(short)
    d_opt.zero_grad()
    real_logits = gan.discriminator(short, long)
    d_loss = discriminator_loss(real_logits, gan.discriminator(short, fake.detach()))
    d_loss.backward()
    d_opt.step()

    g_opt.zero_grad()
    g_loss = generator_loss(gan.discriminator(short, fake), fake, long)
    g_loss.backward()
    g_opt.step()

    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    # Logits, not probabilities: BCE-with-logits would be wrong after a sigmoid.
    assert (real_logits < 0).any() or (real_logits > 1).any()
    changed_g = [k for k, v in gan.generator.state_dict().items() if not torch.equal(v, g0[k])]
    changed_d = [k for k, v in gan.discriminator.state_dict().items() if not torch.equal(v, d0[k])]
    assert any(k.endswith("to_q.weight") for k in changed_g) and any("running_mean" in k for k in changed_g)
    assert any(k.endswith("to_q.weight") for k in changed_d) and any(k.endswith("out.weight") for k in changed_d)
