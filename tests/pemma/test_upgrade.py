"""PEMMA: both designs (reference token fusion, our channel fusion), what reproduces the CT model at init,
every input mode, trainable groups, gradients, continual adaptation.

The CT model is a tiny UNETR (img_size 16^3, patch 8) built once per module; every test
works on a deep copy, so "bit-identical" compares against one snapshot.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from petite.errors import UserError
from petite.pemma.segmentation import build_segmenter
from petite.pemma.train import train_segmenter
from petite.pemma.upgrade import (
    GROUPS,
    MODALITY_PARTS,
    PEMMA,
    set_trainable,
    summary,
    trainable_groups,
)
from tests.pemma.tiny import EQUAL_MODES, SIZE
from tests.pemma.tiny import random_inputs as _inputs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(ct_model: nn.Module, cases: list[dict]) -> tuple[PEMMA, dict[str, torch.Tensor], dict]:
    """A PEMMA model after a few steps of mode-sampled training, with its initial weights."""
    model = PEMMA(copy.deepcopy(ct_model), method="lora")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train_segmenter(model, cases, inputs="ctpet", steps=8, batch_size=1, lr=1e-2, seed=0,
                             mode_probs=EQUAL_MODES, weight_decay=0.0, device="cpu")
    return model, before, result


#: Our earlier default: channel fusion, extended LoRA, frozen decoder.
CHANNELS = {"fusion": "channels", "targets": "extended", "train_decoder": False}


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_channels_design_reproduces_ct_model_in_every_mode(ct_model: nn.Module, method: str) -> None:
    ct, pet = _inputs(2)
    with torch.no_grad():
        reference = ct_model(ct)
        model = PEMMA(copy.deepcopy(ct_model), method=method, **CHANNELS).eval()
        ct_only = model(ct=ct)
        both = model(ct=ct, pet=pet)
    assert (ct_only - reference).abs().max() <= 1e-6
    assert (both - reference).abs().max() <= 1e-6  # the PET half of the fusion starts at zero
    info = summary(model)
    assert 0 < info["percent"] < 15
    assert info["trainable"] == sum(v for g, v in info["groups"].items() if g != "decoder")  # decoder frozen
    assert model.default_groups == ("lora", "pet", "ct_adapter", "fusion")


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_reference_design_reproduces_ct_model_for_ct_alone(ct_model: nn.Module, method: str) -> None:
    ct, pet = _inputs(2)
    model = PEMMA(copy.deepcopy(ct_model), method=method).eval()
    with torch.no_grad():
        reference = ct_model(ct)
        assert (model(ct=ct) - reference).abs().max() <= 1e-6  # LoRA B = 0, decoder = the CT model's
        # No identity with both: CT tokens attend to PET tokens and the PET skip is added from the start.
        assert (model(ct=ct, pet=pet) - reference).abs().max() > 1e-4
    assert model.config["fusion"] == "tokens" and model.config["train_decoder"]
    assert model.default_groups == ("lora", "pet", "decoder")
    assert model.config["peft"].startswith(f"encoder={method}:r=4") and "targets=query/value" in model.config["peft"]
    assert not hasattr(model, "fusion") and not hasattr(model, "ct_adapter")


def test_token_fusion_doubles_the_sequence_inside_the_vit(ct_model: nn.Module) -> None:
    model = PEMMA(copy.deepcopy(ct_model), fingerprint=False).eval()
    blocks = model.backbone.vit.blocks
    lengths: list[int] = []
    handles = [b.register_forward_hook(lambda _m, args, _out: lengths.append(args[0].shape[1])) for b in blocks]
    n = int(torch.tensor(model.backbone.feat_size).prod())
    ct, pet = _inputs()
    try:
        with torch.no_grad():
            model(ct=ct, pet=pet)
            assert lengths == [2 * n] * len(blocks)
            lengths.clear()
            model(ct=ct)
            assert lengths == [n] * len(blocks)
    finally:
        for h in handles:
            h.remove()
    channels = PEMMA(copy.deepcopy(ct_model), fingerprint=False, **CHANNELS).eval()
    handle = channels.backbone.vit.blocks[0].register_forward_hook(
        lambda _m, args, _out: lengths.append(args[0].shape[1]))
    lengths.clear()
    with torch.no_grad():
        channels(ct=ct, pet=pet)
    handle.remove()
    assert lengths == [n]


def test_reference_gradients_reach_exactly_the_intended_tensors(ct_model: nn.Module) -> None:
    model = PEMMA(copy.deepcopy(ct_model), fingerprint=False)
    ct, pet = _inputs(2)
    model(ct=ct, pet=pet).square().mean().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    groups = trainable_groups(model)
    assert with_grad == {n for g in ("lora", "pet", "decoder") for n in groups[g]}
    # LoRA sits on the q and v projections of every block, nothing else.
    blocks = len(model.backbone.vit.blocks)
    wrapped = {n.split(".lora_")[0] for n in groups["lora"]}
    assert wrapped == {f"backbone.vit.blocks.{k}.attn.{p}" for k in range(blocks) for p in ("to_q", "to_v")}
    assert all(".lora_A." in n or ".lora_B." in n for n in groups["lora"])
    # B starts at zero, so B gets the first gradient; the PET embedding and skip and the decoder get one too.
    b_grads = [model.get_parameter(n).grad for n in groups["lora"] if ".lora_B." in n]
    assert all(g.abs().sum() > 0 for g in b_grads)
    for name in ("pet_embedding", "pet_skip"):
        assert any(model.get_parameter(n).grad.abs().sum() > 0 for n in groups["pet"] if n.startswith(name))
    assert groups["decoder"] and all(n.startswith(("backbone.encoder", "backbone.decoder", "backbone.out"))
                                     for n in groups["decoder"])
    assert model.get_parameter("backbone.out.conv.conv.weight").grad.abs().sum() > 0
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any(n.startswith("backbone.vit.") for n in frozen) and "backbone.vit.patch_embedding.position_embeddings" \
        in frozen


def test_all_modes_give_three_class_logits(ct_model: nn.Module) -> None:
    model = PEMMA(copy.deepcopy(ct_model), method="dora").eval()
    ct, pet = _inputs(2)
    with torch.no_grad():
        for kwargs in ({"ct": ct, "pet": pet}, {"ct": ct}, {"pet": pet}):
            assert model(**kwargs).shape == (2, 3, SIZE, SIZE, SIZE)
    with pytest.raises(UserError):
        model()
    with pytest.raises(UserError):
        model(ct=ct[..., :8])


def test_training_changes_exactly_the_trainable_set(trained: tuple) -> None:
    model, before, result = trained
    assert set(result["modes"]) == {"ctpet", "ct", "pet"} and len(result["losses"]) == 8
    groups = trainable_groups(model)
    trainable = {n for names in groups.values() for n in names}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    for name, p in model.named_parameters():
        if name in trainable:
            assert not torch.equal(p, before[name]), f"{name} did not train"
        else:
            assert torch.equal(p, before[name]), f"frozen {name} changed"


def test_continual_adaptation_with_pet_only_touches_only_pet_parts(trained: tuple, cases: list[dict]) -> None:
    model = copy.deepcopy(trained[0])
    ct, _ = _inputs()
    model.eval()
    with torch.no_grad():
        ct_before = model(ct=ct)
    names = set_trainable(model, MODALITY_PARTS["pet"])
    assert set(names) == set(trainable_groups(model)["pet"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train_segmenter(model, cases, inputs="pet", steps=2, batch_size=1, lr=1e-2, seed=3,
                             weight_decay=0.0, device="cpu")
    assert set(result["modes"]) == {"pet"}
    pet = set(trainable_groups(model)["pet"])
    for name, p in model.named_parameters():
        if name in pet:
            assert not torch.equal(p, before[name]), f"{name} did not train"
        else:
            assert torch.equal(p, before[name]), f"{name} changed during PET-only adaptation"
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ct=ct), ct_before)  # CT-only predictions are not forgotten


def test_pemma_rejects_bad_models_and_groups(ct_model: nn.Module) -> None:
    with pytest.raises(UserError):
        PEMMA(build_segmenter("unetr", "tiny", in_channels=2, img_size=SIZE))
    model = PEMMA(copy.deepcopy(ct_model), fingerprint=False)
    with pytest.raises(UserError, match="unknown PEMMA parameter group"):
        set_trainable(model, ["encoder"])
    with pytest.raises(UserError, match="needs --fusion channels"):
        set_trainable(model, MODALITY_PARTS["ct"])  # the token design has no CT-only parts
    with pytest.raises(UserError):
        PEMMA(model.backbone)  # PEFT already applied
    with pytest.raises(UserError, match="unknown PEMMA fusion"):
        PEMMA(copy.deepcopy(ct_model), fusion="sum")
    assert set(GROUPS) >= set(model.default_groups)


@pytest.mark.parametrize("design", [{}, CHANNELS])
def test_swin_unetr_upgrade_reproduces_ct_model(design: dict) -> None:
    torch.manual_seed(0)
    swin = build_segmenter("swin_unetr", "tiny").eval()
    ct = torch.rand(1, 1, 32, 32, 64)  # the smallest grid whose 1/32 bottleneck has > 1 voxel (InstanceNorm)
    with torch.no_grad():
        reference = swin(ct)
        model = PEMMA(swin, method="lora", fingerprint=False, **design).eval()
        assert (model(ct=ct) - reference).abs().max() <= 1e-6
        assert model(pet=ct).shape == model(ct=ct, pet=ct).shape == (1, 3, 32, 32, 64)
    assert summary(model)["groups"]["lora"] > 0
    lora = trainable_groups(model)["lora"]
    if not design:  # the reference: the fused qkv only, rank 4, alpha 8 (the default), dropout 0.1
        assert lora and all(".attn.qkv." in n for n in lora)
        assert model.config["peft"] == "encoder=lora:r=4:dropout=0.1:targets=qkv"
    else:
        assert any(".attn.proj." in n for n in lora) and any(".attn.qkv." in n for n in lora)
