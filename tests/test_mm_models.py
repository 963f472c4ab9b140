"""PEMMA upgrade, baselines, training and evaluation on tiny models and in-memory tensors.

The CT model is a tiny UNETR (img_size 16^3, patch 8) built once per module; every test
works on a deep copy, so "bit-identical" compares against one snapshot.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from petite.errors import UserError
from petite.multimodal.baselines import LateFusion, build_baseline
from petite.multimodal.evaluate import case_metrics, evaluate_segmenter, mean_metrics
from petite.multimodal.segmentation import build_segmenter
from petite.multimodal.train import train_segmenter
from petite.multimodal.upgrade import GROUPS, MODALITY_PARTS, PEMMA, set_trainable, summary, trainable_groups

SIZE = 16
EQUAL_MODES = {"ctpet": 1 / 3, "ct": 1 / 3, "pet": 1 / 3}


def make_cases(n: int = 2, shape: tuple[int, int, int] = (24, 24, 20), seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for k in range(n):
        label = torch.zeros(1, *shape, dtype=torch.int64)
        label[0, 3:8, 3:8, 3:8] = 1
        label[0, 14:19, 12:17, 10:15] = 2
        ct = torch.rand(1, *shape, generator=gen) * 0.5 + 0.25 * (label > 0)
        pet = torch.randn(1, *shape, generator=gen) + 3.0 * (label > 0)
        cases.append({"ct": ct, "pet": pet, "label": label, "patient": f"P{k}", "centre": "A"})
    return cases


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ct_model() -> nn.Module:
    torch.manual_seed(0)
    return build_segmenter("unetr", "tiny", img_size=SIZE).eval()


@pytest.fixture(scope="module")
def cases() -> list[dict]:
    return make_cases()


@pytest.fixture(scope="module")
def trained(ct_model: nn.Module, cases: list[dict]) -> tuple[PEMMA, dict[str, torch.Tensor], dict]:
    """A PEMMA model after a few steps of mode-sampled training, with its initial weights."""
    model = PEMMA(copy.deepcopy(ct_model), method="lora")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train_segmenter(model, cases, inputs="ctpet", steps=8, batch_size=1, lr=1e-2, seed=0,
                             mode_probs=EQUAL_MODES, weight_decay=0.0, device="cpu")
    return model, before, result


def _inputs(batch: int = 1, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, SIZE, SIZE, SIZE, generator=gen), torch.randn(batch, 1, SIZE, SIZE, SIZE, generator=gen)


# ----------------------------------------------------------------------------- upgrade


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


# ----------------------------------------------------------------------------- baselines


def test_late_fusion_is_weighted_sum_of_logits(ct_model: nn.Module) -> None:
    torch.manual_seed(1)
    pet_model = build_segmenter("unetr", "tiny", img_size=SIZE).eval()
    fused = LateFusion(copy.deepcopy(ct_model), pet_model, weight=0.3, learnable=True).eval()
    ct, pet = _inputs()
    with torch.no_grad():
        expected = 0.3 * ct_model(ct) + 0.7 * pet_model(pet)
        assert torch.allclose(fused(ct=ct, pet=pet), expected, atol=1e-6)
        assert torch.equal(fused(ct=ct), fused.ct_model(ct))
    assert isinstance(fused.theta, nn.Parameter)
    assert not any(isinstance(b, nn.Parameter) for b in LateFusion(ct_model, pet_model).buffers())


def test_baselines_train_with_their_input_modes(cases: list[dict]) -> None:
    torch.manual_seed(0)
    early = build_baseline("early", "unetr", "tiny", img_size=SIZE)
    result = train_segmenter(early, cases, inputs="ctpet", steps=1, batch_size=1, seed=0, device="cpu")
    assert result["modes"] == ["ctpet"] and math.isfinite(result["losses"][0])
    ct_only = build_baseline("ct", "unetr", "tiny", img_size=SIZE)
    with pytest.raises(UserError):
        train_segmenter(ct_only, cases, inputs="ctpet", steps=1, device="cpu")  # 2 channels into a 1-channel model
    with pytest.raises(UserError):
        train_segmenter(ct_only, cases, inputs="ctpet", steps=1, mode_probs=EQUAL_MODES, device="cpu")


# ----------------------------------------------------------------------------- training


def test_train_segmenter_is_deterministic(ct_model: nn.Module, cases: list[dict]) -> None:
    def run(seed: int) -> tuple[list[float], dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = PEMMA(copy.deepcopy(ct_model), method="lora", fingerprint=False)
        out = train_segmenter(model, cases, inputs="ctpet", steps=3, batch_size=1, seed=seed, device="cpu")
        return out["losses"], {n: p.detach().clone() for n, p in model.named_parameters()}

    losses_a, params_a = run(5)
    losses_b, params_b = run(5)
    losses_c, _ = run(6)
    assert losses_a == losses_b
    assert all(torch.equal(params_a[n], params_b[n]) for n in params_a)
    assert losses_a != losses_c


# ----------------------------------------------------------------------------- evaluation


def test_dice_and_hd95_on_known_masks() -> None:
    label = torch.zeros(20, 20, 20, dtype=torch.int64)
    pred = label.clone()
    label[2:6, 2:6, 2:6] = 1
    pred[4:8, 2:6, 2:6] = 1  # half overlap: Dice 2 * 32 / (64 + 64)
    label[10:16, 10:16, 10:16] = 2
    pred[11:17, 10:16, 10:16] = 2  # one-voxel shift along x
    m = case_metrics(pred, label, spacing=(2.0, 1.0, 1.0))
    assert m["dice_1"] == pytest.approx(0.5)
    assert m["dice_2"] == pytest.approx(2 * 180 / 432)
    assert m["hd95_2"] == pytest.approx(2.0)  # 1 voxel * 2 mm
    assert case_metrics(pred, label)["hd95_2"] == pytest.approx(1.0)  # voxels without spacing
    pred[pred == 2] = 0
    label[label == 1] = 0
    pred[pred == 1] = 0
    empty = case_metrics(pred, label)
    assert empty["dice_1"] == 1.0 and math.isnan(empty["hd95_1"])  # both empty
    assert empty["dice_2"] == 0.0 and math.isnan(empty["hd95_2"])  # prediction empty
    assert math.isnan(empty["hd95_mean"]) and empty["dice_mean"] == 0.5
    means = mean_metrics([{"dice_1": 1.0, "hd95_1": math.nan}, {"dice_1": 0.5, "hd95_1": 3.0}])
    assert means == {"dice_1": 0.75, "hd95_1": 3.0, "hd95_1_n": 1}


class _Fixed(nn.Module):
    """A 'segmenter' that predicts a fixed label map whatever the input."""

    def __init__(self, pred: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", nn.functional.one_hot(pred, 3).movedim(-1, 0)[None].float())
        self.scale = nn.Parameter(torch.ones(()))
        self.config = {"in_channels": 1}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1, -1, -1, -1) * self.scale


def test_evaluate_segmenter_scores_sliding_window_predictions(ct_model: nn.Module, cases: list[dict]) -> None:
    label = torch.zeros(1, 16, 16, 16, dtype=torch.int64)
    label[0, 2:6, 2:6, 2:6] = 1
    pred = torch.zeros(16, 16, 16, dtype=torch.int64)
    pred[4:8, 2:6, 2:6] = 1
    case = {"ct": torch.rand(1, 16, 16, 16), "pet": torch.rand(1, 16, 16, 16), "label": label,
            "patient": "X", "centre": "A", "spacing": (1.0, 1.0, 2.0)}
    out = evaluate_segmenter(_Fixed(pred), [case], "ct", roi=16, device="cpu")
    row = out["cases"][0]
    assert row["dice_1"] == pytest.approx(0.5) and row["dice_2"] == 1.0 and row["hd95_unit"] == "mm"
    assert out["mean"]["dice_mean"] == pytest.approx(0.75)
    # A real model on whole (non-crop-sized) volumes through sliding windows, all three modes.
    model = PEMMA(copy.deepcopy(ct_model), fingerprint=False)
    for mode in ("ctpet", "ct", "pet"):
        result = evaluate_segmenter(model, cases[:1], mode, device="cpu", sw_batch_size=8)
        assert result["roi"] == [SIZE] * 3 and 0.0 <= result["mean"]["dice_mean"] <= 1.0
    with pytest.raises(UserError):
        evaluate_segmenter(model, cases[:1], "ct", roi=8, device="cpu")
