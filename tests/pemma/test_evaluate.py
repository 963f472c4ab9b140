"""Dice and HD95 on known masks and through sliding-window predictions."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from petite.errors import UserError
from petite.pemma.evaluate import case_metrics, evaluate_segmenter, mean_metrics
from petite.pemma.upgrade import PEMMA
from tests.pemma.tiny import SIZE

pytestmark = pytest.mark.usefixtures("one_thread")


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
    assert (m["inter_1"], m["pred_1"], m["gt_1"]) == (32, 64, 64)
    pred[pred == 2] = 0
    label[label == 1] = 0
    pred[pred == 1] = 0
    empty = case_metrics(pred, label)
    # Class absent in the ground truth: Dice undefined (not 1), reported apart by petite.pemma.aggregate.
    assert math.isnan(empty["dice_1"]) and math.isnan(empty["hd95_1"])
    assert empty["dice_2"] == 0.0 and math.isnan(empty["hd95_2"])  # prediction empty, class present: a miss
    assert math.isnan(empty["hd95_mean"]) and empty["dice_mean"] == 0.0
    pred[0:2, 0:2, 0:2] = 1  # a false positive where there is no GTVp: still undefined, not 0
    assert math.isnan(case_metrics(pred, label)["dice_1"]) and case_metrics(pred, label)["pred_1"] == 8
    means = mean_metrics([{"dice_1": math.nan, "hd95_1": math.nan}, {"dice_1": 0.5, "hd95_1": 3.0}])
    assert means == {"dice_1": 0.5, "dice_1_n": 1, "hd95_1": 3.0, "hd95_1_n": 1}


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
    assert row["dice_1"] == pytest.approx(0.5) and math.isnan(row["dice_2"]) and row["hd95_unit"] == "mm"
    assert out["mean"]["dice_mean"] == pytest.approx(0.5)
    nodes = out["hecktor"]["classes"]["2"]
    assert nodes["absent"] == {"n": 1, "false_positive": 0, "true_negative": 1} and nodes["dice_n"] == 0
    # A real model on whole (non-crop-sized) volumes through sliding windows, all three modes.
    model = PEMMA(copy.deepcopy(ct_model), fingerprint=False)
    for mode in ("ctpet", "ct", "pet"):
        result = evaluate_segmenter(model, cases[:1], mode, device="cpu", sw_batch_size=8)
        assert result["roi"] == [SIZE] * 3 and 0.0 <= result["mean"]["dice_mean"] <= 1.0
    with pytest.raises(UserError):
        evaluate_segmenter(model, cases[:1], "ct", roi=8, device="cpu")
