"""Every PEFT method on both tiny models, one property per test: exactly-intended training, no dead tensors,
identity at init, gradients, merge and unmerge.

The tiny models are built once per module; each case loads the same base weights
into a fresh model, so "base weights bit-identical" compares against one snapshot.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

from petite.errors import UserError
from petite.models import build_model
from petite.peft import (
    Spec,
    apply_spec,
    check_gradients,
    count_trainable,
    dead_parameters,
    is_merged,
    merge,
    summary,
    unmerge,
)
from petite.peft.methods.adapter import Bottleneck
from petite.peft.methods.layers import NORM_TYPES
from petite.peft.methods.ssf import SSFWrapper

METHODS = ["layernorm", "bitfit", "lora", "dora", "adapter", "ssf", "vpt"]
ZERO_FIRST_GRAD = re.compile(r"lora_A")  # LoRA/DoRA A: multiplied by B = 0 at step one
# Dead by the CVT-GAN's design (reported to the model owner), not by PEFT: conv biases right before
# a BatchNorm (train mode subtracts the batch mean) and biases on the key path (softmax removes them).
KNOWN_MODEL_DEAD = re.compile(
    r"generator\.(stem\.\d|bottleneck|up\.\d\.fuse|head\.fuse)\.conv\.bias$|attn\.(conv_k\.1|to_k)\.bias$"
)


@pytest.fixture(scope="module")
def bases() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    out = {}
    for name in ("unetr", "cvtgan"):
        # Small crops keep the module short on a shared CPU.  The CVT-GAN needs one side of 48: at
        # 32^3 its deepest stage keeps a single key/value token, so the softmax is constant and
        # that stage's query path gets no (only round-off) gradient - dead_parameters flags it.
        model = build_model(name, "tiny", **({"img_size": [16, 16, 16]} if name == "unetr" else {}))
        size = [16, 16, 16] if name == "unetr" else [32, 32, 48]
        out[name] = (model, torch.rand(1, 1, *size))
    return out


def fresh(bases: dict, name: str) -> tuple[nn.Module, torch.Tensor]:
    base, x = bases[name]
    return copy.deepcopy(base), x


def base_name(live_name: str) -> str:
    """The base model's name of a tensor in a PEFT'd model (wrappers add ``.base_layer``)."""
    return live_name.replace(".base_layer", "")


def loss_fn(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return (model(x) - x).pow(2).mean()


CASES = [(m, s) for m in ("unetr", "cvtgan") for s in METHODS] + [
    ("unetr", "petite-unetr"),
    ("unetr", "encoder=ssf,decoder=lora,bitfit"),  # LoRA on a CNN decoder: Conv3d + ConvTranspose3d
    ("unetr", "encoder=lora,decoder=adapter"),  # 1x1x1-conv adapters on CNN blocks
    ("cvtgan", "petite-cvtgan"),
    ("cvtgan", "encoder=adapter,decoder=ssf,bitfit"),
]


def applied(bases: dict, model_name: str, method: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor, object]:
    """A fresh model with ``method`` applied, its input, and the base model's output (eval mode) on it."""
    model, x = fresh(bases, model_name)
    model.eval()
    with torch.no_grad():
        y_base = model(x)
    state = apply_spec(model, method, fingerprint=False)
    return model, x, y_base, state


_DEAD: dict[tuple[str, str], list[str]] = {}  # the float64 probe is slow: once per (model, method)


def pruned(bases: dict, model_name: str, method: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor, object]:
    """:func:`applied`, then the model's own dead tensors frozen, as the training engine does (``prune_dead``)."""
    model, x, y_base, state = applied(bases, model_name, method)
    model.train()
    if (model_name, method) not in _DEAD:
        _DEAD[model_name, method] = dead_parameters(model, x)
    state.freeze(model, _DEAD[model_name, method])
    return model, x, y_base, state


@pytest.mark.parametrize(("model_name", "method"), CASES)
def test_requires_grad_is_exactly_the_trained_set(bases: dict, model_name: str, method: str) -> None:
    model, _, _, state = applied(bases, model_name, method)
    assert state.trainable, "the method trains nothing"
    live = dict(model.named_parameters())
    assert {n for n, p in live.items() if p.requires_grad} == set(state.trainable)
    for comp in model.frozen_components:
        patterns = model.components[comp]
        assert not any(n.startswith(p.split("*")[0]) for n in state.trainable for p in patterns)


@pytest.mark.parametrize(("model_name", "method"), [c for c in CASES if c[1] in METHODS or c[1].startswith("petite")])
def test_no_trained_tensor_is_dead(bases: dict, model_name: str, method: str) -> None:
    """Honest accounting: no tensor PEFT trains has zero gradient up to round-off (float64 probe);
    the only dead ones are the model's own, which prune_dead removes."""
    model, x, _, state = applied(bases, model_name, method)
    model.train()
    dead = _DEAD[model_name, method] = dead_parameters(model, x)
    assert all(KNOWN_MODEL_DEAD.search(n) for n in dead), dead
    if model_name == "unetr":
        assert dead == []
    state.freeze(model, dead)  # what prune_dead does (tested in test_io)
    assert not set(dead) & set(state.trainable)


@pytest.mark.parametrize(("model_name", "method"), CASES)
def test_identity_at_init(bases: dict, model_name: str, method: str) -> None:
    """The output is unchanged at init where the method is identity-initialised (VPT's prompts are not)."""
    model, x, y_base, _ = applied(bases, model_name, method)
    with torch.no_grad():
        y_init = model(x)
    if "vpt" not in Spec.parse(method).to_string():
        assert (y_init - y_base).abs().max().item() <= 1e-6
    else:
        # VPT's prompts change the attention from the start (documented), and only they do: without
        # them the PEFT'd model is the base model again, bit for bit.
        assert (y_init - y_base).abs().max().item() > 1e-4 * y_base.abs().max().item()
        for site in model.peft_roles["prompt_site"]:
            model.get_submodule(site).prompts = None
        with torch.no_grad():
            assert torch.equal(model(x), y_base)


@pytest.mark.parametrize(("model_name", "method"), CASES)
def test_every_trained_tensor_gets_a_gradient(bases: dict, model_name: str, method: str) -> None:
    model, x, _, _ = pruned(bases, model_name, method)
    torch.manual_seed(1)
    loss = loss_fn(model, x)
    assert count_trainable(model, loss) == count_trainable(model) == summary(model)["trainable"]
    assert check_gradients(model, loss) == []
    zero = check_gradients(model, nonzero=True)
    assert all(ZERO_FIRST_GRAD.search(n) for n in zero), f"zero gradient at step one: {zero[:3]}"
    if "lora" not in method and "dora" not in method and method not in ("petite-unetr", "petite-cvtgan"):
        assert zero == []


@pytest.mark.parametrize(("model_name", "method"), CASES)
def test_optimiser_steps_leave_every_frozen_tensor_untouched(bases: dict, model_name: str, method: str) -> None:
    model, x, _, state = pruned(bases, model_name, method)
    base_params = {n: p.detach().clone() for n, p in fresh(bases, model_name)[0].named_parameters()}
    torch.manual_seed(1)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for step in range(2):
        opt.zero_grad()
        loss = loss_fn(model, x)
        loss.backward()
        if step == 1:  # LoRA's A has a gradient once B has left zero (and moves at this step).
            assert check_gradients(model, nonzero=True) == []
        opt.step()
    # Frozen tensors stay bit-identical.  (That trained tensors *learn* is tested on a pre-trained model in
    # test_learning.py: Adam moves any tensor with a round-off gradient, so "it changed" proves nothing.)
    for n, p in model.named_parameters():
        if n not in state.trainable:
            assert torch.equal(p.detach(), before[n]), f"frozen {n} changed"
            assert torch.equal(p.detach(), base_params[base_name(n)]), f"base weight {n} changed"


def _trained_a_little(bases: dict, model_name: str, method: str) -> tuple[nn.Module, torch.Tensor, object]:
    """A PEFT'd model whose trained tensors moved away from their init (two Adam steps), in eval mode."""
    model, x, _, state = pruned(bases, model_name, method)
    torch.manual_seed(1)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        loss_fn(model, x).backward()
        opt.step()
    model.eval()
    return model, x, state


@pytest.mark.parametrize(("model_name", "method"), CASES)
def test_merge_keeps_the_output(bases: dict, model_name: str, method: str) -> None:
    """LoRA/DoRA/SSF fold into the base weights; the output is unchanged (eval mode)."""
    model, x, _ = _trained_a_little(bases, model_name, method)
    base_names = {n for n, _ in fresh(bases, model_name)[0].named_parameters()}
    with torch.no_grad():
        y_unmerged = model(x)
        merge(model)
        y_merged = model(x)
    assert (y_merged - y_unmerged).abs().max().item() <= 1e-5
    assert is_merged(model)
    if method in {"lora", "dora", "ssf", "encoder=ssf,decoder=lora,bitfit"}:
        # The plain architecture again; a non-affine norm under SSF gains its affine pair.
        names = {n for n, _ in model.named_parameters()}
        assert base_names <= names, "wrappers left after merge"
        assert all(isinstance(model.get_submodule(n.rpartition(".")[0]), NORM_TYPES) for n in names - base_names)


@pytest.mark.parametrize(("model_name", "method"), [c for c in CASES if re.search("lora|dora|ssf|petite", c[1])])
def test_merge_then_unmerge_restores_the_base_weights(bases: dict, model_name: str, method: str) -> None:
    """``merge(unload=False)`` keeps the wrappers, merged; ``unmerge`` takes the update out again."""
    model, x, _ = _trained_a_little(bases, model_name, method)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        y_unmerged = model(x)
        merge(model, unload=False)
        assert is_merged(model)
        # (SSF on a non-affine norm adds the norm's affine pair while merged.)
        changed = [n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])]
        assert changed, "merge changed no base weight"
        assert (model(x) - y_unmerged).abs().max().item() <= 1e-5
        unmerge(model)
        assert not is_merged(model)
        assert (model(x) - y_unmerged).abs().max().item() <= 1e-5
    assert {n for n, _ in model.named_parameters()} == set(before)
    for n, p in model.named_parameters():
        assert torch.allclose(p, before[n], atol=1e-6), f"{n} not restored by unmerge"


def test_adapter_gradients_nonzero_at_step_one_and_identity() -> None:
    torch.manual_seed(0)
    for conv, shape in ((False, (3, 17, 24)), (True, (2, 24, 5, 6, 7))):
        block = Bottleneck(24, 6, conv)
        y = torch.randn(*shape)
        assert torch.equal(block(y), torch.zeros_like(y)), "adapter delta is not exactly zero at init"
        block(y).mul(torch.randn(*shape)).sum().backward()
        for name, p in block.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_ssf_nontrivial_changes_output_and_merges_into_nonaffine_instancenorm() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.InstanceNorm3d(4, affine=False), nn.Conv3d(4, 2, 1))
    net.components, net.frozen_components = {"all": ["0", "1", "2"]}, []
    net.peft_roles = {"norm": ["1"]}
    x = torch.randn(2, 2, 6, 6, 6)
    y0 = net(x)
    apply_spec(net, "all=ssf", fingerprint=False)
    assert isinstance(net[1], SSFWrapper)
    with torch.no_grad():
        net[1].gamma.uniform_(0.5, 1.5)
        net[1].beta.normal_()
    y1 = net(x)
    assert (y1 - y0).abs().max() > 1e-3, "SSF after the norm must change the output"
    merge(net)
    assert isinstance(net[1], nn.InstanceNorm3d) and net[1].affine
    assert torch.allclose(net(x), y1, atol=1e-5)


@pytest.mark.parametrize("dora", [False, True])
def test_conv_lora_merges_for_conv_and_transposed_conv(dora: bool) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ConvTranspose3d(4, 5, 2, stride=2), nn.Conv3d(5, 2, 1))
    net.components, net.frozen_components = {"all": ["0", "1", "2"]}, []
    net.peft_roles = {"conv": ["0", "1", "2"]}
    x = torch.randn(2, 3, 4, 4, 4)
    y0 = net(x)
    apply_spec(net, f"all={'dora' if dora else 'lora'}:r=2:alpha=4", fingerprint=False)
    assert torch.allclose(net(x), y0, atol=1e-6)
    with torch.no_grad():
        for m in net.modules():
            if hasattr(m, "lora_B"):
                m.lora_B.weight.normal_()
    net.eval()
    with torch.no_grad():
        y1 = net(x)
        assert (y1 - y0).abs().max() > 1e-3
        merge(net)
        assert [type(m) for m in net] == [nn.Conv3d, nn.ConvTranspose3d, nn.Conv3d]
        assert torch.allclose(net(x), y1, atol=1e-5)


def test_frozen_components_never_train(bases: dict) -> None:
    model, _ = fresh(bases, "cvtgan")
    apply_spec(model, "full", fingerprint=False)
    disc = {n for n, _ in model.discriminator.named_parameters()}
    assert disc
    assert not any(p.requires_grad for p in model.discriminator.parameters())
    with pytest.raises(UserError, match="frozen"):
        apply_spec(fresh(bases, "cvtgan")[0], "discriminator=bitfit", fingerprint=False)


def test_spec_errors_at_apply(bases: dict) -> None:
    model, _ = fresh(bases, "unetr")
    with pytest.raises(UserError, match="unknown component"):
        apply_spec(model, "middle=lora", fingerprint=False)
    with pytest.raises(UserError, match="nothing to attach"):
        apply_spec(model, "decoder=vpt", fingerprint=False)  # a CNN decoder has no prompt site
    state = apply_spec(model, "none", fingerprint=False)
    assert state.trainable == {} and not any(p.requires_grad for p in model.parameters())
    with pytest.raises(UserError, match="already applied"):
        apply_spec(model, "bitfit", fingerprint=False)


def test_petite_presets_and_vpt_tokens(bases: dict) -> None:
    unetr, _ = fresh(bases, "unetr")
    s = summary(unetr, apply_spec(unetr, "petite-unetr", fingerprint=False))
    assert set(s["per_method"]) == {"lora", "ssf", "bitfit"}
    assert s["per_component"]["decoder"] > 0 and s["per_component"]["encoder"] > 0
    site = unetr.get_submodule(unetr.peft_roles["prompt_site"][0])
    assert site.prompts is None

    cvt, _ = fresh(bases, "cvtgan")
    apply_spec(cvt, "petite-cvtgan", fingerprint=False)
    sites = [cvt.get_submodule(n) for n in cvt.peft_roles["prompt_site"]]
    # PETITE prompts the encoder only: 8 and 32 tokens; the decoder's sites stay empty.
    assert [tuple(s.prompts.shape) for s in sites[:2]] == [(8, sites[0].prompt_width), (32, sites[1].prompt_width)]
    assert [s.prompts for s in sites[2:]] == [None, None]
    bare, _ = fresh(bases, "cvtgan")
    apply_spec(bare, "vpt", fingerprint=False)  # every site with its own paper default
    assert [bare.get_submodule(n).prompts.shape[0] for n in bare.peft_roles["prompt_site"]] == [8, 32, 32, 8]
    with pytest.raises(UserError, match="prompt sites"):
        apply_spec(fresh(bases, "cvtgan")[0], "encoder=vpt:tokens=1/2/3", fingerprint=False)
    assert Spec.parse("vpt").method_for("*").name == "vpt"
