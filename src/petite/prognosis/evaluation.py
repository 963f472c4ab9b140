"""How good trained prognosis heads are on new patients: C-index, integrated Brier score, Kaplan-Meier, log-rank.

:func:`evaluate_prognosis` gives Harrell's C-index of each seed's risk and of
the ensemble (mean risk over seeds), the integrated Brier score (IPCW,
censoring distribution and Breslow baseline from the training data) on 40
times evenly spaced between the 10th and 80th percentiles of the evaluated
patients' times (kept where the training censoring survival is positive,
:func:`brier_times`), and Kaplan-Meier curves of the predicted low/high-risk
halves (threshold: the training patients' median ensemble risk, never the
evaluated patients'; no figure when it does not split them) with the
log-rank p-value, as PNG.  NaN where a measure is undefined (no comparable
pair; too few distinct times for the IBS grid).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petite.errors import UserError
from petite.prognosis.cox import breslow_baseline, survival_function
from petite.prognosis.heads import PrognosisHeads
from petite.prognosis.metrics import (
    concordance_index,
    integrated_brier_score,
    kaplan_meier,
    logrank_test,
    step_value,
)
from petite.prognosis.outcome import check_outcome
from petite.prognosis.plots import km_figure


def brier_times(time_days: np.ndarray, train_time: np.ndarray, train_event: np.ndarray, n: int = 40) -> np.ndarray:
    """The IBS grid: ``n`` times from the 10th to the 80th percentile of ``time_days``, where G_train > 0."""
    lo, hi = np.quantile(time_days, 0.1), np.quantile(time_days, 0.8)
    if not hi > lo:
        return np.zeros(0)
    grid = np.linspace(lo, hi, n)
    g_times, g_values = kaplan_meier(train_time, 1 - np.asarray(train_event))
    return grid[(step_value(g_times, g_values, grid) > 0) & (grid < train_time.max())]


def _ibs(heads: PrognosisHeads, risk: np.ndarray, t: np.ndarray, e: np.ndarray, grid: np.ndarray) -> tuple[list, float]:
    """Per-seed IBS and the ensemble's (mean survival curve over seeds)."""
    if grid.size < 2:
        return [math.nan] * len(heads.heads), math.nan
    curves = []
    for k in range(len(heads.heads)):
        baseline = breslow_baseline(heads.train_time, heads.train_event, heads.train_risk[k])
        curves.append(survival_function(baseline, risk[k], grid))
    kw = {"train_time": heads.train_time, "train_event": heads.train_event}
    per_seed = [integrated_brier_score(t, e, s, grid, **kw) for s in curves]
    return per_seed, integrated_brier_score(t, e, np.mean(curves, axis=0), grid, **kw)


def c_index_or_nan(t: np.ndarray, risk: np.ndarray, e: np.ndarray) -> float:
    """Harrell's C (:func:`~petite.prognosis.metrics.concordance_index`), NaN where no pair is comparable."""
    try:
        return concordance_index(t, risk, e)
    except ValueError:
        return math.nan


def _percentile_bootstrap(n: int, statistic: Callable[[np.ndarray], float], n_boot: int, level: float,
                          seed: int) -> list[float] | None:
    """Percentile interval of ``statistic(indices)`` over ``n_boot`` resamples of ``n`` patients with replacement.

    Resamples where the statistic is NaN are dropped; ``None`` when none is left.  Same seed, same interval.
    """
    if int(n_boot) < 1 or not 0.0 < float(level) < 1.0:
        raise UserError(f"bootstrap needs n_boot >= 1 and 0 < level < 1, got {n_boot} and {level}")
    rng = np.random.default_rng(int(seed))
    values = []
    for _ in range(int(n_boot)):
        value = statistic(rng.integers(0, n, n))
        if not math.isnan(value):
            values.append(value)
    if not values:
        return None
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def bootstrap_c_index(t: np.ndarray, risk: np.ndarray, e: np.ndarray, *, n_boot: int = 1000, level: float = 0.95,
                      seed: int = 0) -> list[float] | None:
    """Percentile bootstrap interval of Harrell's C over patients (resampled with replacement, seeded).

    Resamples without a comparable pair are dropped; ``None`` when none is left.
    Same inputs and seed, same interval.
    """
    t, risk, e = np.asarray(t, dtype=float), np.asarray(risk, dtype=float), np.asarray(e)
    return _percentile_bootstrap(t.size, lambda pick: c_index_or_nan(t[pick], risk[pick], e[pick]), n_boot, level,
                                 seed)


def bootstrap_c_index_difference(t: np.ndarray, risk: np.ndarray, reference: np.ndarray, e: np.ndarray, *,
                                 n_boot: int = 1000, level: float = 0.95, seed: int = 0
                                 ) -> tuple[float, list[float] | None]:
    """C(``risk``) - C(``reference``) on the same patients, and its paired percentile bootstrap interval.

    Each resample draws patients with replacement and scores both risks on it, so what the two share
    (the patients, their times and events) cancels: the interval is for the difference, narrower than
    comparing two separate intervals.  Resamples without a comparable pair are dropped; the interval is
    ``None`` when none is left.
    """
    t, e = np.asarray(t, dtype=float), np.asarray(e)
    risk, reference = np.asarray(risk, dtype=float), np.asarray(reference, dtype=float)
    if not t.size == risk.size == reference.size == e.size:
        raise UserError(f"risks, times and events need one value per patient, got {risk.size}, {reference.size}, "
                        f"{t.size} and {e.size}")

    def difference(pick: np.ndarray) -> float:
        return c_index_or_nan(t[pick], risk[pick], e[pick]) - c_index_or_nan(t[pick], reference[pick], e[pick])

    return difference(np.arange(t.size)), _percentile_bootstrap(t.size, difference, n_boot, level, seed)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of the non-NaN ``values`` (std 0 for one value; NaNs for none)."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def evaluate_prognosis(heads: PrognosisHeads, features: Any, clinical: Sequence[Mapping[str, Any]] | None,
                       time: Any, event: Any, *, km_png: str | Path | None = None,
                       title: str = "Kaplan-Meier by predicted risk",
                       patients: Sequence[str] | None = None) -> dict[str, Any]:
    """C-index, IBS, KM PNG and log-rank p of ``heads`` on new patients (see the module docstring).

    Returns ``{"c_index" (ensemble), "c_index_per_seed", "c_index_mean", "c_index_std", "ibs" (ensemble),
    "ibs_per_seed", "ibs_mean", "ibs_std", "km_png" (path or None), "logrank_p", "threshold", "n",
    "events", "risk" (ensemble, list)}``.  NaN where a measure is undefined (no comparable pair;
    too few distinct times for the IBS grid).
    """
    t, e = check_outcome(time, event, "evaluated")
    risk = heads.predict(features, clinical, patients)
    if risk.shape[1] != t.size:
        raise UserError(f"{risk.shape[1]} patients' features but {t.size} outcomes")
    ensemble = risk.mean(axis=0)
    per_seed = [c_index_or_nan(t, r, e) for r in risk]
    grid = brier_times(t, heads.train_time, heads.train_event)
    ibs_seed, ibs = _ibs(heads, risk, t, e, grid)
    c_mean, c_std = mean_std(per_seed)
    i_mean, i_std = mean_std(ibs_seed)
    out: dict[str, Any] = {
        "n": int(t.size), "events": int(e.sum()),
        "c_index": c_index_or_nan(t, ensemble, e), "c_index_per_seed": per_seed, "c_index_mean": c_mean,
        "c_index_std": c_std, "ibs": ibs, "ibs_per_seed": ibs_seed, "ibs_mean": i_mean, "ibs_std": i_std,
        "ibs_times": [float(grid[0]), float(grid[-1])] if grid.size else None,
        "km_png": None, "logrank_p": math.nan, "threshold": None, "risk": ensemble.tolist(),
    }
    # The training patients' median only: falling back to the evaluated patients' median (as this did) would
    # let the test set choose its own split.  When the training threshold puts everyone on one side, there is
    # no KM figure and no log-rank test.
    threshold = float(np.median(heads.train_risk.mean(axis=0)))
    out["threshold"] = threshold
    high = ensemble > threshold
    if high.any() and not high.all():
        out["logrank_p"] = logrank_test(t[~high], e[~high], t[high], e[high])[1]
        if km_png is not None:
            out["km_png"] = km_figure(km_png, t, e, ensemble, threshold=threshold, title=title)["path"]
    return out


__all__ = ["bootstrap_c_index", "bootstrap_c_index_difference", "brier_times", "c_index_or_nan", "evaluate_prognosis", "mean_std"]
