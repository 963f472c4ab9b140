"""HECKTOR-style summary of a split's per-case segmentation scores: DSCagg, absent classes, HD95 coverage, CIs.

Per-case rows come from :func:`petite.pemma.evaluate.case_metrics` (``dice_<c>``
NaN where the class is absent in the ground truth, ``hd95_<c>`` NaN where either
mask is empty, voxel counts ``inter_<c>``, ``pred_<c>``, ``gt_<c>``).  For each
class this module reports, side by side:

- **mean Dice** over the cases where the class is present in the ground truth
  (``dice_n`` of them);
- **DSCagg**, the aggregated Dice of HECKTOR 2022:
  ``sum_i 2 |P_i and G_i| / sum_i (|P_i| + |G_i|)`` over all patients ``i``.  A
  false positive on a case without the class adds to the denominator only,
  which is how DSCagg penalises it; a case where both masks are empty adds
  nothing.  ``NaN`` when every mask of the class is empty;
- **absent-class cases** (class absent in the ground truth), not folded into any
  mean: how many, how many with a non-empty prediction (``false_positive``)
  and how many with an empty one (``true_negative``);
- **HD95** mean and median over the cases where both masks are non-empty,
  with that count (``hd95_n``) and the count of present-class cases it cannot
  cover because nothing was predicted (``missed``).

``overall`` is the mean of the per-class values (HECKTOR 2022 ranks by the mean
of the GTVp and GTVn DSCagg).  Intervals are percentile bootstrap intervals over
patients: resample the patients with replacement ``n_boot`` times with a fixed
seed, recompute the statistic, take the ``(1 - level) / 2`` and
``(1 + level) / 2`` quantiles (NaN resamples, e.g. no case with the class,
are dropped).  Same rows and seed, same intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from petite.errors import UserError
from petite.pemma.segmentation import CLASSES

#: Bootstrap resamples and confidence level used unless told otherwise.
N_BOOT = 1000
LEVEL = 0.95


def _column(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    try:
        return np.asarray([float(r[key]) for r in rows], dtype=np.float64)
    except KeyError:
        raise UserError(f"per-case rows lack {key!r}; score cases with petite.pemma.evaluate.case_metrics") from None


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaNs; NaN (no warning) where a row has no finite value."""
    finite = ~np.isnan(values)
    n = finite.sum(axis=-1)
    total = np.where(finite, values, 0.0).sum(axis=-1)
    return np.divide(total, n, out=np.full(total.shape, np.nan), where=n > 0)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.full(np.shape(num), np.nan), where=den > 0)


def _interval(samples: np.ndarray, level: float) -> list[float] | None:
    finite = samples[~np.isnan(samples)]
    if finite.size == 0:
        return None
    lo, hi = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def _float(value: float) -> float:
    return float(value) if not math.isnan(float(value)) else math.nan


def dsc_agg(inter: Sequence[float], pred: Sequence[float], gt: Sequence[float]) -> float:
    """Aggregated Dice ``sum 2 |P and G| / sum (|P| + |G|)`` from per-case voxel counts; NaN if all empty."""
    den = float(np.sum(pred) + np.sum(gt))
    return 2.0 * float(np.sum(inter)) / den if den > 0 else math.nan


def aggregate(
    rows: Sequence[Mapping[str, Any]],
    classes: Sequence[int] = CLASSES,
    *,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> dict[str, Any]:
    """Summarise per-case rows of one split and input mode (see the module docstring).

    Returns ``{"n", "classes": {"<c>": {"dice_mean", "dice_ci", "dice_n", "dsc_agg", "dsc_agg_ci",
    "absent": {"n", "false_positive", "true_negative"}, "hd95_mean", "hd95_median", "hd95_n",
    "missed"}}, "overall": {"dice_mean", "dice_ci", "dsc_agg", "dsc_agg_ci"}, "bootstrap": {...}}``.

    Raises:
        UserError: rows without the per-case columns, ``n_boot < 1`` or ``level`` outside (0, 1).
    """
    if int(n_boot) < 1:
        raise UserError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < float(level) < 1.0:
        raise UserError(f"level must be in (0, 1), got {level}")
    n = len(rows)
    summary: dict[str, Any] = {"n": n, "classes": {}, "overall": {},
                               "bootstrap": {"method": "percentile, patients resampled with replacement",
                                             "n_boot": int(n_boot), "level": float(level), "seed": int(seed)}}
    if n == 0:
        return summary
    # One index matrix for every statistic, so class and overall intervals come from the same resamples.
    rng = np.random.default_rng(int(seed))
    index = rng.integers(0, n, size=(int(n_boot), n))
    class_dice, class_agg = [], []
    boot_dice, boot_agg = [], []
    for c in classes:
        dice = _column(rows, f"dice_{c}")
        hd = _column(rows, f"hd95_{c}")
        inter, pred, gt = (_column(rows, f"{k}_{c}") for k in ("inter", "pred", "gt"))
        absent = gt == 0
        both = ~np.isnan(hd)
        stats: dict[str, Any] = {
            "dice_mean": _float(_nanmean_rows(dice)),
            "dice_n": int((~np.isnan(dice)).sum()),
            "dsc_agg": dsc_agg(inter, pred, gt),
            "absent": {"n": int(absent.sum()), "false_positive": int((absent & (pred > 0)).sum()),
                       "true_negative": int((absent & (pred == 0)).sum())},
            "hd95_mean": float(hd[both].mean()) if both.any() else math.nan,
            "hd95_median": float(np.median(hd[both])) if both.any() else math.nan,
            "hd95_n": int(both.sum()),
            "missed": int(((gt > 0) & (pred == 0)).sum()),
        }
        b_dice = _nanmean_rows(dice[index])
        b_agg = _ratio(2.0 * inter[index].sum(axis=1), pred[index].sum(axis=1) + gt[index].sum(axis=1))
        stats["dice_ci"] = _interval(b_dice, level)
        stats["dsc_agg_ci"] = _interval(b_agg, level)
        summary["classes"][str(c)] = stats
        class_dice.append(stats["dice_mean"])
        class_agg.append(stats["dsc_agg"])
        boot_dice.append(b_dice)
        boot_agg.append(b_agg)
    summary["overall"] = {
        "dice_mean": _float(_nanmean_rows(np.asarray(class_dice))),
        "dice_ci": _interval(_nanmean_rows(np.stack(boot_dice, axis=1)), level),
        "dsc_agg": _float(_nanmean_rows(np.asarray(class_agg))),
        "dsc_agg_ci": _interval(_nanmean_rows(np.stack(boot_agg, axis=1)), level),
    }
    return summary


def format_ci(value: float | None, interval: Sequence[float] | None, digits: int = 3) -> str:
    """``"0.712 [0.650, 0.770]"``; ``"-"`` for a missing value, no brackets without an interval."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    text = f"{value:.{digits}f}"
    if interval:
        text += f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    return text


__all__ = ["LEVEL", "N_BOOT", "aggregate", "dsc_agg", "format_ci"]
