"""PEFT wiring: what a spec trains is what it says, with the formulas the papers give.

Each test here failed on the code before it was written (issue 13): a second peft
injection switched the first off; global BitFit lost the biases of wrapped layers;
the dead-tensor probe answered differently in eval mode; every ``X,bitfit`` spec
trained ``X`` at the paper's single Mix-PEFT learning rate.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from petite.models import build_model
from petite.peft import apply_spec, dead_parameters, summary
from petite.peft.methods.lora import LoraConv, is_peft_lora
from petite.peft.paper import method_hparams

pytestmark = pytest.mark.usefixtures("one_thread")


def _base_name(name: str) -> str:
    return name.replace(".base_layer", "")


@pytest.fixture(scope="module")
def bases() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    return {
        "unetr": (build_model("unetr", "tiny", img_size=[16, 16, 16]), torch.rand(2, 1, 16, 16, 16)),
        "cvtgan": (build_model("cvtgan", "tiny"), torch.rand(2, 1, 32, 32, 48)),
    }


# ------------------------------------------------------------------ defect 1: two LoRA/DoRA injections


@pytest.mark.parametrize(("model_name", "spec"), [("cvtgan", "encoder=lora,decoder=dora"),
                                                  ("cvtgan", "encoder=dora,decoder=lora"),
                                                  ("unetr", "encoder=lora,decoder=dora")])
def test_every_lora_component_is_live(bases: dict, model_name: str, spec: str) -> None:
    base, x = bases[model_name]
    model = copy.deepcopy(base)
    state = apply_spec(model, spec, fingerprint=False)
    model.eval()
    with torch.no_grad():
        y0 = model(x)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # B leaves zero, as after a few steps
    # Every LoRA/DoRA tensor of every component gets a non-zero gradient...
    model.train()
    model(x).square().mean().backward()
    lora = [n for n in state.trainable if "lora_" in n]
    assert {_component(model, n) for n in lora} == {"encoder", "decoder"}
    silent = [n for n in lora if model.get_parameter(n).grad is None or not model.get_parameter(n).grad.abs().sum()]
    assert silent == [], silent
    # ...and perturbing one component's B alone changes the output.
    model.eval()
    for component in ("encoder", "decoder"):
        trial = copy.deepcopy(model)
        with torch.no_grad():
            for name, p in trial.named_parameters():
                if "lora_B" in name:
                    p.zero_()
            for name, p in trial.named_parameters():
                if "lora_B" in name and _component(trial, name) == component:
                    p.normal_(0, 0.5)
            assert (trial(x) - y0).abs().max() > 1e-4, f"the {component}'s LoRA does not reach the output"


def _component(model: nn.Module, name: str) -> str:
    from petite.models import module_component

    return module_component(model, name.rpartition(".")[0]) or "other"


# ------------------------------------------------------------------ defect 2: BitFit beside wrapping methods


@pytest.mark.parametrize("model_name", ["unetr", "cvtgan"])
@pytest.mark.parametrize("method", ["lora", "dora", "adapter", "ssf", "vpt", "layernorm"])
def test_bitfit_keeps_every_bias_beside_another_method(bases: dict, model_name: str, method: str) -> None:
    base, _ = bases[model_name]
    alone = apply_spec(copy.deepcopy(base), "bitfit", fingerprint=False)
    combined = apply_spec(copy.deepcopy(base), f"{method},bitfit", fingerprint=False)
    biases = {_base_name(n) for n in alone.trainable}
    trained = {_base_name(n) for n in combined.trainable}
    assert biases and biases <= trained, sorted(biases - trained)[:5]


def test_bitfit_counts_every_bias_but_the_key_biases(bases: dict) -> None:
    """An independent count: every ``.bias`` outside the discriminator, minus the key projections'."""
    base, _ = bases["cvtgan"]
    model = copy.deepcopy(base)
    expected = sum(p.numel() for n, p in model.named_parameters()
                   if n.endswith(".bias") and not n.startswith("discriminator.") and ".to_k." not in n)
    assert summary(model, apply_spec(model, "lora,bitfit", fingerprint=False))["per_method"]["bitfit"] == expected


# ------------------------------------------------------------------ defect 3: the dead-tensor probe's mode


def test_dead_tensor_probe_does_not_depend_on_the_mode_the_model_arrives_in(bases: dict) -> None:
    base, x = bases["cvtgan"]
    model = copy.deepcopy(base)
    apply_spec(model, "bitfit", fingerprint=False)
    in_train = dead_parameters(model.train(), x)
    in_eval = dead_parameters(model.eval(), x)
    assert in_train == in_eval
    # Conv biases right before a BatchNorm are dead in training mode (the batch mean removes them).
    assert any("stem" in n and n.endswith("conv.bias") for n in in_eval), in_eval


# ------------------------------------------------------------------ LoRA / DoRA against the formulas


def _lora_linear(method: str, r: int = 2, alpha: float = 6.0) -> tuple[nn.Module, nn.Linear]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7))
    net.components, net.frozen_components, net.peft_roles = {"all": ["0"]}, [], {"query": ["0"], "key": []}
    plain = copy.deepcopy(net[0])
    apply_spec(net, f"all={method}:r={r}:alpha={alpha:g}", fingerprint=False)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.normal_()
    return net, plain


def _factors(net: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    params = dict(net.named_parameters())
    a = next(p for n, p in params.items() if "lora_A" in n)
    b = next(p for n, p in params.items() if "lora_B" in n)
    return a.detach().reshape(a.shape[0], -1), b.detach().reshape(b.shape[0], -1)


def test_linear_lora_is_w_plus_scaled_ba() -> None:
    net, plain = _lora_linear("lora")
    a, b = _factors(net)
    x = torch.randn(4, 5)
    expected = F.linear(x, plain.weight + (6.0 / 2) * b @ a, plain.bias)
    assert torch.allclose(net(x), expected, atol=1e-5)


def test_linear_dora_is_magnitude_times_normalised_weight() -> None:
    net, plain = _lora_linear("dora")
    layer = net[0]
    assert is_peft_lora(layer)
    magnitude = next(p for n, p in net.named_parameters() if "magnitude" in n)
    # The magnitude starts at the per-output norm of W0.
    assert torch.allclose(magnitude.detach(), plain.weight.norm(dim=1), atol=1e-6)
    a, b = _factors(net)
    x = torch.randn(4, 5)
    updated = plain.weight + (6.0 / 2) * b @ a
    expected = F.linear(x, magnitude.detach()[:, None] * updated / updated.norm(dim=1, keepdim=True), plain.bias)
    assert torch.allclose(net(x), expected, atol=1e-5)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("dora", [False, True])
def test_conv_lora_and_dora_match_the_formula(transposed: bool, dora: bool) -> None:
    torch.manual_seed(0)
    base = nn.ConvTranspose3d(3, 4, 2, stride=2) if transposed else nn.Conv3d(3, 4, 3, padding=1)
    layer = LoraConv(copy.deepcopy(base), r=2, alpha=4.0, dropout=0.0, dora=dora)
    with torch.no_grad():
        layer.lora_A.weight.normal_()
        layer.lora_B.weight.normal_()
    a = layer.lora_A.weight.detach()  # conv: (r, in, k..); transposed: (in, r, k..)
    b = layer.lora_B.weight.detach()[:, :, 0, 0, 0]  # (out, r)
    w0 = base.weight.detach()
    if transposed:  # weight (in, out, k..): dW[i, o] = sum_r A[i, r] B[o, r]
        delta = 2.0 * torch.einsum("irxyz,or->ioxyz", a, b)
        norm = (w0 + delta).pow(2).sum(dim=(0, 2, 3, 4), keepdim=True).sqrt()
        w0_norm = w0.pow(2).sum(dim=(0, 2, 3, 4), keepdim=True).sqrt()
    else:  # weight (out, in, k..): dW[o, i] = sum_r B[o, r] A[r, i]
        delta = 2.0 * torch.einsum("or,rixyz->oixyz", b, a)
        norm = (w0 + delta).pow(2).sum(dim=(1, 2, 3, 4), keepdim=True).sqrt()
        w0_norm = w0.pow(2).sum(dim=(1, 2, 3, 4), keepdim=True).sqrt()
    weight = w0 + delta
    if dora:
        assert torch.allclose(layer.lora_magnitude.detach(), w0_norm, atol=1e-6)
        weight = w0_norm * weight / norm
    x = torch.randn(2, 3, 4, 4, 4)
    conv = F.conv_transpose3d if transposed else F.conv3d
    expected = conv(x, weight, base.bias, stride=base.stride, padding=base.padding)
    assert torch.allclose(layer(x), expected, atol=1e-4)


def test_conv3d_lora_equals_hf_peft_for_the_same_factors() -> None:
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)
    conv = nn.Conv3d(3, 4, 3, padding=1)
    ours = LoraConv(copy.deepcopy(conv), r=2, alpha=4.0, dropout=0.0, dora=False)
    theirs = nn.Sequential(copy.deepcopy(conv))
    inject_adapter_in_model(LoraConfig(r=2, lora_alpha=4.0, target_modules=["0"]), theirs)
    with torch.no_grad():
        ours.lora_A.weight.normal_()
        ours.lora_B.weight.normal_()
        theirs[0].lora_A["default"].weight.copy_(ours.lora_A.weight)
        theirs[0].lora_B["default"].weight.copy_(ours.lora_B.weight)
    x = torch.randn(2, 3, 5, 5, 5)
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)


def test_conv_dora_norm_is_constant_for_backward_as_in_peft() -> None:
    """peft treats DoRA's weight norm as a constant in backward (Liu et al. 2024, sec. 4.3); so do we."""
    torch.manual_seed(0)
    layer = LoraConv(nn.Conv3d(2, 3, 3, padding=1), r=2, alpha=2.0, dropout=0.0, dora=True)
    with torch.no_grad():
        layer.lora_B.weight.normal_()
    x = torch.randn(1, 2, 4, 4, 4)
    layer(x).sum().backward()
    got = layer.lora_B.weight.grad.clone()
    # The same gradient with the norm explicitly detached in an independent forward:
    b = layer.lora_B.weight.detach().clone().requires_grad_(True)
    a, w0 = layer.lora_A.weight.detach(), layer.base_layer.weight.detach()
    weight = w0 + layer.scaling * torch.einsum("or,rixyz->oixyz", b[:, :, 0, 0, 0], a)
    norm = weight.pow(2).sum(dim=(1, 2, 3, 4), keepdim=True).sqrt().detach()
    F.conv3d(x, layer.lora_magnitude.detach() * weight / norm, layer.base_layer.bias, padding=1).sum().backward()
    assert torch.allclose(got, b.grad, atol=1e-4)


def test_swin_lora_targets_the_fused_attention_projections() -> None:
    model = build_model("swin_unetr", "tiny")
    state = apply_spec(model, "lora", fingerprint=False)
    assert state.trainable and all(".attn.qkv." in n for n in state.trainable)


# ------------------------------------------------------------------ defect 4: one optimiser group per method


def test_method_hparams_follow_table3() -> None:
    assert method_hparams("unetr", "ssf") == {"lr": 1e-2, "weight_decay": 1e-5}
    assert method_hparams("unetr", "dora") == method_hparams("unetr", "lora") == {"lr": 1e-3, "weight_decay": 1e-4}
    assert method_hparams("cvtgan", "bitfit") == {"lr": 1e-3, "weight_decay": 1e-5}
    assert not math.isclose(method_hparams("unetr", "adapter")["lr"], method_hparams("unetr", "bitfit")["lr"])
