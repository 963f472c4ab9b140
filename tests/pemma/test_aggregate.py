"""HECKTOR summary: DSCagg by hand, no credit from absent classes, HD95 coverage, bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from petite.errors import UserError
from petite.pemma.aggregate import aggregate, dsc_agg, format_ci
from petite.pemma.evaluate import case_metrics


def _case(gtvp: tuple[slice, ...] | None, pred_gtvp: tuple[slice, ...] | None, gtvn: tuple[slice, ...] | None = None,
          pred_gtvn: tuple[slice, ...] | None = None) -> dict[str, float]:
    label = torch.zeros(12, 12, 12, dtype=torch.int64)
    pred = label.clone()
    for volume, box, value in ((label, gtvp, 1), (pred, pred_gtvp, 1), (label, gtvn, 2), (pred, pred_gtvn, 2)):
        if box is not None:
            volume[box] = value
    return case_metrics(pred, label)


def test_dsc_agg_matches_a_hand_computation() -> None:
    rows = [
        _case((slice(0, 2),) * 3, (slice(1, 3), slice(0, 2), slice(0, 2))),  # |G| 8, |P| 8, overlap 4
        _case((slice(0, 4),) * 3, (slice(0, 4), slice(0, 4), slice(0, 2))),  # |G| 64, |P| 32, overlap 32
        _case(None, (slice(5, 7),) * 3),  # no GTVp, a false positive of 8 voxels
    ]
    expected = 2 * (4 + 32) / ((8 + 8) + (64 + 32) + (8 + 0))  # = 72 / 120
    summary = aggregate(rows, n_boot=200)
    gtvp = summary["classes"]["1"]
    assert gtvp["dsc_agg"] == pytest.approx(expected) == pytest.approx(0.6)
    assert dsc_agg([4, 32, 0], [8, 32, 8], [8, 64, 0]) == pytest.approx(expected)
    # Per-case Dice: mean over the two patients who have a GTVp, the third counted apart.
    assert gtvp["dice_mean"] == pytest.approx((0.5 + 2 * 32 / 96) / 2) and gtvp["dice_n"] == 2
    assert gtvp["absent"] == {"n": 1, "false_positive": 1, "true_negative": 0}
    assert gtvp["hd95_n"] == 2 and gtvp["missed"] == 0


def test_never_predicting_nodes_earns_nothing_from_node_free_patients() -> None:
    box = (slice(0, 3),) * 3
    node = (slice(6, 9),) * 3
    # Four patients without nodes, one with; the model finds every GTVp and never predicts a node.
    rows = [_case(box, box) for _ in range(4)] + [_case(box, box, gtvn=node)]
    summary = aggregate(rows, n_boot=200)
    nodes = summary["classes"]["2"]
    assert nodes["dice_mean"] == 0.0 and nodes["dice_n"] == 1  # not (4 x 1 + 0) / 5 = 0.8
    assert nodes["dsc_agg"] == 0.0
    assert nodes["absent"] == {"n": 4, "false_positive": 0, "true_negative": 4}
    assert nodes["hd95_n"] == 0 and nodes["missed"] == 1 and math.isnan(nodes["hd95_mean"])
    assert summary["overall"]["dice_mean"] == pytest.approx(0.5)  # GTVp 1, GTVn 0
    assert summary["overall"]["dsc_agg"] == pytest.approx(0.5)


def test_bootstrap_interval_contains_the_estimate_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(25):
        gt = int(rng.integers(20, 200))
        inter = int(rng.integers(0, gt))
        pred = inter + int(rng.integers(0, 100))
        rows.append({"dice_1": 2 * inter / (gt + pred), "hd95_1": float(rng.uniform(1, 10)),
                     "inter_1": inter, "pred_1": pred, "gt_1": gt})
    first = aggregate(rows, classes=(1,), seed=7)
    again = aggregate(rows, classes=(1,), seed=7)
    other = aggregate(rows, classes=(1,), seed=8)
    stats = first["classes"]["1"]
    for key in ("dice", "dsc_agg"):
        value = stats["dice_mean" if key == "dice" else key]
        lo, hi = stats[f"{key}_ci"]
        assert lo < value < hi and hi - lo < 0.5
        assert again["classes"]["1"][f"{key}_ci"] == [lo, hi]
        assert other["classes"]["1"][f"{key}_ci"] != [lo, hi]
    assert first["overall"]["dsc_agg_ci"] == stats["dsc_agg_ci"]  # one class: overall is that class
    assert format_ci(0.5, [0.4, 0.6]) == "0.500 [0.400, 0.600]" and format_ci(math.nan, None) == "-"
    with pytest.raises(UserError):
        aggregate(rows, classes=(1,), n_boot=0)
    with pytest.raises(UserError):
        aggregate([{"dice_1": 1.0}], classes=(1,))
