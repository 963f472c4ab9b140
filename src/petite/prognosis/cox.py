"""The Cox proportional-hazards pieces: the partial-likelihood loss and Breslow's baseline hazard.

* :func:`cox_loss` - negative Cox partial log-likelihood, averaged over events,
  with Efron's (default) or Breslow's handling of tied event times; stable via
  ``logcumsumexp`` over subjects sorted by decreasing time.  The survival heads
  (:mod:`petite.prognosis.survival_head`) train on it.
* :func:`breslow_baseline` and :func:`survival_function` - Cox survival
  curves ``S(t | risk) = exp(-H0(t) exp(risk))`` from the training data, which
  the integrated Brier score (:mod:`petite.prognosis.metrics`) scores.

Conventions as in :mod:`petite.prognosis.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from petite.prognosis.metrics import step_value, survival_arrays


def cox_loss(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor, ties: str = "efron") -> torch.Tensor:
    """Negative Cox partial log-likelihood of ``risk`` (n,), divided by the number of events.

    The risk set of an event at ``t`` is everyone with ``time >= t``.  With ``d``
    events tied at ``t`` (risk-set sum ``A``, tied events' sum ``B``), Breslow
    uses ``d * log A`` and Efron ``sum_{l<d} log(A - l/d * B)``.  Returns 0
    (still connected to ``risk``) when there is no event.
    """
    if ties not in ("efron", "breslow"):
        raise ValueError(f"ties must be 'efron' or 'breslow', got {ties!r}")
    risk = risk.reshape(-1)
    time = torch.as_tensor(time, device=risk.device).reshape(-1)
    event = torch.as_tensor(event, device=risk.device).reshape(-1).bool()
    if not (risk.shape == time.shape == event.shape):
        raise ValueError(f"risk, time and event must have the same length, "
                         f"got {risk.shape}, {time.shape}, {event.shape}")
    if not bool(event.any()):
        return risk.sum() * 0.0
    order = torch.argsort(time, descending=True, stable=True)
    risk, time, event = risk[order], time[order], event[order]
    _, group, counts = torch.unique_consecutive(time, return_inverse=True, return_counts=True)
    last = torch.cumsum(counts, 0) - 1
    log_a = torch.logcumsumexp(risk, 0)[last]            # log sum over the risk set, per distinct time
    g = group[event]                                      # group of each event
    r = risk[event]
    if ties == "breslow":
        log_terms = log_a[g]
    else:
        n_groups = counts.numel()
        peak = torch.zeros(n_groups, dtype=risk.dtype, device=risk.device).scatter_reduce(
            0, g, r.detach(), reduce="amax", include_self=False)
        sums = torch.zeros(n_groups, dtype=risk.dtype, device=risk.device).index_add(0, g, torch.exp(r - peak[g]))
        d = torch.zeros(n_groups, dtype=risk.dtype, device=risk.device).index_add(0, g, torch.ones_like(r))
        # l = rank of each event among the events tied with it (0 .. d-1); events of a group are contiguous.
        rank = torch.arange(r.numel(), device=risk.device) - (torch.cumsum(d, 0) - d).long()[g]
        log_b = peak[g] + torch.log(sums[g])              # log sum of the tied events' exp(risk)
        ratio = torch.exp(log_b - log_a[g]).clamp(max=1.0)
        log_terms = log_a[g] + torch.log1p(-(rank.to(risk.dtype) / d[g]) * ratio)
    return -(r - log_terms).sum() / r.numel()


@dataclass(frozen=True)
class BaselineHazard:
    """Breslow's cumulative baseline hazard ``H0``: a right-continuous step function on ``times``."""

    times: np.ndarray
    cumulative_hazard: np.ndarray

    def __call__(self, at: Any) -> np.ndarray:
        return step_value(self.times, self.cumulative_hazard, at, before=0.0)


def breslow_baseline(time: Any, event: Any, risk: Any) -> BaselineHazard:
    """Breslow's estimate ``H0(t) = sum_{event times s <= t} d_s / sum_{time_j >= s} exp(risk_j)``.

    Fit it on the training data with the training risks; ``survival_function``
    then gives ``S(t | risk) = exp(-H0(t) exp(risk))`` for any patient.
    """
    time, event, risk = survival_arrays(time, event, risk)
    shift = risk.max() if risk.size else 0.0
    order = np.argsort(-time, kind="stable")
    tail = np.cumsum(np.exp(risk[order] - shift))            # risk-set sums, by decreasing time
    distinct = np.unique(time[event])
    position = time.size - np.searchsorted(np.sort(time), distinct, side="left") - 1
    deaths = np.array([np.count_nonzero(event & (time == t)) for t in distinct], dtype=float)
    increments = deaths / tail[position] * np.exp(-shift)
    return BaselineHazard(times=distinct, cumulative_hazard=np.cumsum(increments))


def survival_function(baseline: BaselineHazard, risk: Any, times: Any) -> np.ndarray:
    """Cox survival probabilities ``exp(-H0(t) exp(risk_i))``: (n patients, len(times))."""
    risk = np.asarray(risk, dtype=float).reshape(-1, 1)
    return np.exp(-baseline(np.asarray(times, dtype=float)).reshape(1, -1) * np.exp(risk))


__all__ = ["BaselineHazard", "breslow_baseline", "cox_loss", "survival_function"]
