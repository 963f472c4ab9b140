"""PEMMA: the CT-only upgrade reproduces the CT model, every input mode, trainable groups, continual adaptation.

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


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_ct_only_upgrade_reproduces_ct_model(ct_model: nn.Module, method: str) -> None:
    ct, pet = _inputs(2)
    with torch.no_grad():
        reference = ct_model(ct)
        model = PEMMA(copy.deepcopy(ct_model), method=method).eval()
        ct_only = model(ct=ct)
        both = model(ct=ct, pet=pet)
    assert (ct_only - reference).abs().max() <= 1e-6
    assert (both - reference).abs().max() <= 1e-6  # the PET half of the fusion starts at zero
    info = summary(model)
    assert 0 < info["percent"] < 15 and info["trainable"] == sum(info["groups"].values())
    assert set(trainable_groups(model)) == set(GROUPS) and all(trainable_groups(model).values())


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
    with pytest.raises(UserError):
        set_trainable(model, ["decoder"])
    with pytest.raises(UserError):
        PEMMA(model.backbone)  # PEFT already applied


def test_swin_unetr_upgrade_reproduces_ct_model() -> None:
    torch.manual_seed(0)
    swin = build_segmenter("swin_unetr", "tiny").eval()
    ct = torch.rand(1, 1, 32, 32, 64)  # the smallest grid whose 1/32 bottleneck has > 1 voxel (InstanceNorm)
    with torch.no_grad():
        reference = swin(ct)
        model = PEMMA(swin, method="lora", fingerprint=False).eval()
        assert (model(ct=ct) - reference).abs().max() <= 1e-6
        assert model(pet=ct).shape == (1, 3, 32, 32, 64)
    assert summary(model)["groups"]["lora"] > 0
