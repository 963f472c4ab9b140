"""The baselines: late fusion is the weighted sum of logits; each baseline trains with its input mode."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from petite.errors import UserError
from petite.pemma.baselines import LateFusion, build_baseline
from petite.pemma.segmentation import build_segmenter
from petite.pemma.train import train_segmenter
from tests.pemma.tiny import EQUAL_MODES, SIZE
from tests.pemma.tiny import random_inputs as _inputs

pytestmark = pytest.mark.usefixtures("one_thread")


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
