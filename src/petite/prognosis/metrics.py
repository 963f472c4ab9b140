"""Survival measures: Harrell's C-index, Kaplan-Meier, the IPCW Brier score and its integral, the log-rank test.

* :func:`concordance_index` - Harrell's C (the same pairs and ties as
  ``lifelines.utils.concordance_index``);
* :func:`kaplan_meier` and :func:`step_value` - Kaplan-Meier curves as
  right-continuous step functions;
* :func:`brier_scores` and :func:`integrated_brier_score` - IPCW, Graf et al.
  1999, with a Kaplan-Meier estimate of the censoring distribution;
* :func:`logrank_test` - two groups, one degree of freedom.

Conventions (every module of :mod:`petite.prognosis`): ``time`` > 0 in days,
``event`` 1 = relapse observed / 0 = censored, ``risk`` = log relative hazard
(higher = earlier relapse).  numpy only; lifelines is used only by the tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# ----------------------------------------------------------------------------- concordance


def survival_arrays(time: Any, event: Any, *others: Any) -> list[np.ndarray]:
    """``[time (float), event (bool), *others (float)]`` as 1-D arrays; ValueError unless equal lengths and finite."""
    arrays = [np.asarray(time, dtype=float).reshape(-1), np.asarray(event).reshape(-1).astype(bool)]
    arrays += [np.asarray(o, dtype=float).reshape(-1) for o in others]
    if len({a.shape[0] for a in arrays}) != 1:
        raise ValueError(f"time, event and scores must have the same length, got {[a.shape[0] for a in arrays]}")
    if not all(np.isfinite(a).all() for a in arrays if a.dtype != bool):
        raise ValueError("time and scores must be finite")
    return arrays


def concordance_index(time: Any, risk: Any, event: Any) -> float:
    """Harrell's C: the fraction of comparable pairs whose higher risk relapsed first.

    A pair (i, j) is comparable when i had an event and ``t_i < t_j``, or
    ``t_i == t_j`` and j is censored (two events at the same time are not
    compared); tied risks count 1/2.  Same as ``lifelines.utils.concordance_index(time, -risk, event)``.
    """
    time, event, risk = survival_arrays(time, event, risk)
    rows = np.flatnonzero(event)
    pairs = concordant = 0.0
    for start in range(0, rows.size, 512):
        i = rows[start:start + 512, None]
        comparable = (time[i] < time[None, :]) | ((time[i] == time[None, :]) & ~event[None, :])
        pairs += comparable.sum()
        concordant += (comparable & (risk[i] > risk[None, :])).sum()
        concordant += 0.5 * (comparable & (risk[i] == risk[None, :])).sum()
    if pairs == 0:
        raise ValueError("no comparable pairs: the C-index needs at least one event before another exit time")
    return float(concordant / pairs)


# ----------------------------------------------------------------------------- curves


def kaplan_meier(time: Any, event: Any) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier estimate: ``(times, survival)`` at 0 and every distinct observed time (right-continuous)."""
    time, event = survival_arrays(time, event)
    grid = np.unique(np.concatenate([[0.0], time]))
    at_risk = time.size - np.searchsorted(np.sort(time), grid, side="left")
    deaths = np.array([np.count_nonzero(event & (time == t)) for t in grid], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(at_risk > 0, 1.0 - deaths / np.maximum(at_risk, 1), 1.0)
    return grid, np.cumprod(factor)


def step_value(times: np.ndarray, values: np.ndarray, at: Any, *, left: bool = False,
               before: float = 1.0) -> np.ndarray:
    """Evaluate the right-continuous step function ``(times, values)`` at ``at``.

    ``left=True`` gives the left limit (the value just before ``at``); ``before``
    is the value before the first step time.
    """
    at = np.asarray(at, dtype=float)
    index = np.searchsorted(times, at, side="left" if left else "right") - 1
    return np.where(index >= 0, np.asarray(values)[np.clip(index, 0, None)], before)


# ----------------------------------------------------------------------------- Brier score


def brier_scores(time: Any, event: Any, survival: Any, times: Any, *,
                 train_time: Any = None, train_event: Any = None) -> np.ndarray:
    """IPCW Brier score at each of ``times`` (Graf et al. 1999).

    ``BS(t) = mean_i [ S_i(t)^2 1(T_i <= t, event_i) / G(T_i-) + (1 - S_i(t))^2 1(T_i > t) / G(t) ]``
    where ``survival`` (n, len(times)) holds the predicted ``S_i(t)`` and ``G`` is
    the Kaplan-Meier estimate of the censoring survival (censorings as events),
    fitted on ``train_time``/``train_event`` if given, else on the evaluation data.
    Patients censored before ``t`` contribute 0 (their weight is carried by
    ``G``).  ``times`` must lie where ``G > 0``.
    """
    time, event = survival_arrays(time, event)
    times = np.asarray(times, dtype=float).reshape(-1)
    survival = np.asarray(survival, dtype=float)
    if survival.shape != (time.size, times.size):
        raise ValueError(f"survival must have shape (n, len(times)) = {(time.size, times.size)}, got {survival.shape}")
    fit_time, fit_event = (time, event) if train_time is None else survival_arrays(train_time, train_event)
    g_times, g_values = kaplan_meier(fit_time, ~fit_event)
    g_at_exit = step_value(g_times, g_values, time, left=True)
    g_at_t = step_value(g_times, g_values, times)
    if np.any(g_at_t <= 0):
        raise ValueError("the censoring survival G(t) is 0 at some evaluation times; choose earlier times")
    died = (time[:, None] <= times[None, :]) & event[:, None]
    alive = time[:, None] > times[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.where(died, survival ** 2 / g_at_exit[:, None], 0.0)
    second = np.where(alive, (1.0 - survival) ** 2 / g_at_t[None, :], 0.0)
    return (first + second).mean(axis=0)


def integrated_brier_score(time: Any, event: Any, survival: Any, times: Any, *,
                           train_time: Any = None, train_event: Any = None) -> float:
    """The Brier score of :func:`brier_scores` integrated over ``times`` (trapezoids) / (last - first time).

    Lower is better; 0.25 is what a constant prediction of 1/2 scores without censoring.
    """
    times = np.asarray(times, dtype=float).reshape(-1)
    if times.size < 2 or np.any(np.diff(times) <= 0):
        raise ValueError("times must be at least two increasing values")
    scores = brier_scores(time, event, survival, times, train_time=train_time, train_event=train_event)
    return float(np.sum((scores[1:] + scores[:-1]) / 2 * np.diff(times)) / (times[-1] - times[0]))


# ----------------------------------------------------------------------------- log-rank


def logrank_test(time_a: Any, event_a: Any, time_b: Any, event_b: Any) -> tuple[float, float]:
    """Two-group log-rank test: ``(chi-square statistic with 1 degree of freedom, p-value)``."""
    from scipy.stats import chi2

    time_a, event_a = survival_arrays(time_a, event_a)
    time_b, event_b = survival_arrays(time_b, event_b)
    time = np.concatenate([time_a, time_b])
    event = np.concatenate([event_a, event_b])
    in_a = np.arange(time.size) < time_a.size
    observed = expected = variance = 0.0
    for t in np.unique(time[event]):
        at_risk = time >= t
        n, n_a = at_risk.sum(), (at_risk & in_a).sum()
        d, d_a = (event & (time == t)).sum(), (event & (time == t) & in_a).sum()
        observed += d_a
        expected += d * n_a / n
        if n > 1:
            variance += d * (n_a / n) * (1 - n_a / n) * (n - d) / (n - 1)
    if variance <= 0:
        return 0.0, 1.0
    statistic = (observed - expected) ** 2 / variance
    return float(statistic), float(chi2.sf(statistic, 1))


__all__ = ["brier_scores", "concordance_index", "integrated_brier_score", "kaplan_meier", "logrank_test",
           "step_value", "survival_arrays"]
