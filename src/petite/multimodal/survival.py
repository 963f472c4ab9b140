"""Survival prognosis: the Cox loss, a small risk head, and the evaluation measures.

* :func:`cox_loss` - negative Cox partial log-likelihood, averaged over events,
  with Efron's (default) or Breslow's handling of tied event times; stable via
  ``logcumsumexp`` over subjects sorted by decreasing time.
* :class:`SurvivalHead` - imaging features (pooled encoder features) -> risk,
  optionally fused with a clinical MLP (the "tabular encoder").  Fusion is by
  concatenation: ``risk = w . [A f, relu(B2 relu(B1 c))]`` (dropout omitted),
  one linear layer without bias (the Cox likelihood ignores a constant).  Imaging features
  are standardised inside the head with the training mean and std (buffers set
  by :func:`fit_survival_head`); the clinical matrix arrives standardised from
  :func:`petite.multimodal.clinical.clinical_matrix`.
* :func:`fit_survival_head` - full-batch AdamW on :func:`cox_loss`, from a
  fresh initialisation (and dropout masks) drawn from ``seed`` (the Cox likelihood couples all
  subjects, so full batches are exact for cohorts of hundreds).
* Evaluation: :func:`concordance_index` (Harrell's C, the same pairs and ties
  as ``lifelines.utils.concordance_index``), :func:`breslow_baseline` and
  :func:`survival_function` (Cox survival curves), :func:`brier_scores` and
  :func:`integrated_brier_score` (IPCW, Graf et al. 1999, with a Kaplan-Meier
  estimate of the censoring distribution), :func:`kaplan_meier`,
  :func:`logrank_test` and :func:`km_figure` (KM curves of the predicted
  low- and high-risk halves, PNG).

Conventions: ``time`` > 0 in days, ``event`` 1 = relapse observed / 0 =
censored, ``risk`` = log relative hazard (higher = earlier relapse).  lifelines
is used only by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from petite.atomic import atomic_path
from petite.errors import UserError

# ----------------------------------------------------------------------------- the loss


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


# ----------------------------------------------------------------------------- the head


class SurvivalHead(nn.Module):
    """Risk from imaging features, optionally fused with standardised clinical variables.

    Imaging branch: dropout then a linear projection to ``hidden`` (a linear
    probe: pooled encoder features of a few hundred patients do not support
    more).  Clinical branch: a two-layer ReLU MLP with dropout.  The branch
    outputs are concatenated and a bias-free linear layer gives the risk.
    ``in_features`` may be 0 (clinical only) and ``clinical_features`` 0
    (imaging only), not both.  ``forward(features, clinical=None) -> (B,)``.
    """

    def __init__(self, in_features: int, clinical_features: int = 0, hidden: int = 32, dropout: float = 0.3) -> None:
        super().__init__()
        if in_features < 0 or clinical_features < 0 or in_features + clinical_features == 0:
            raise ValueError("SurvivalHead needs imaging features, clinical features or both")
        self.in_features, self.clinical_features = in_features, clinical_features
        self.hidden, self.dropout = hidden, dropout
        self.imaging = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, hidden)) if in_features else None
        self.tabular = (nn.Sequential(nn.Linear(clinical_features, hidden), nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout))
                        if clinical_features else None)
        self.risk = nn.Linear(hidden * (bool(in_features) + bool(clinical_features)), 1, bias=False)
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.register_buffer("feature_std", torch.ones(in_features))

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-ready)."""
        return {"in_features": self.in_features, "clinical_features": self.clinical_features,
                "hidden": self.hidden, "dropout": self.dropout}

    def forward(self, features: torch.Tensor | None, clinical: torch.Tensor | None = None) -> torch.Tensor:
        parts = []
        if self.imaging is not None:
            if features is None:
                raise ValueError("this head needs imaging features")
            parts.append(self.imaging((features - self.feature_mean) / self.feature_std))
        if self.tabular is not None:
            if clinical is None:
                raise ValueError("this head needs the clinical matrix")
            parts.append(self.tabular(clinical))
        return self.risk(torch.cat(parts, dim=1)).squeeze(1)


def _tensor(values: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    return None if values is None else torch.as_tensor(np.asarray(values), dtype=dtype)


def fit_survival_head(head: SurvivalHead, features: Any, clinical: Any, time: Any, event: Any, *,
                      epochs: int = 200, lr: float = 3e-3, weight_decay: float = 1e-2, seed: int = 0,
                      ties: str = "efron") -> dict[str, Any]:
    """Train ``head`` in place on one full batch with :func:`cox_loss` and AdamW.

    The weights are re-initialised and the dropout masks drawn from ``seed``
    (the global torch RNG is left as it was), and the imaging-feature
    standardisation is fitted on ``features``, so the result depends only on the
    data and the arguments.  ``features`` (n, in_features) or ``None``;
    ``clinical`` (n, clinical_features) standardised, or ``None``.  Returns
    ``{"loss": [per epoch], "final_loss", "train_c_index"}``.
    """
    x = _tensor(features) if head.in_features else None
    c = _tensor(clinical) if head.clinical_features else None
    t = _tensor(time, torch.float64)
    e = _tensor(event, torch.float64)
    if x is not None:
        head.feature_mean.copy_(x.mean(0))
        head.feature_std.copy_(torch.where(x.std(0) > 1e-8, x.std(0), torch.ones_like(x.std(0))))
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for module in head.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        optimiser = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
        head.train()
        for _ in range(int(epochs)):
            optimiser.zero_grad()
            loss = cox_loss(head(x, c), t, e, ties=ties)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
    risk = predict_risk(head, features, clinical)
    return {"loss": losses, "final_loss": losses[-1] if losses else None,
            "train_c_index": concordance_index(np.asarray(time), risk, np.asarray(event))}


def predict_risk(head: SurvivalHead, features: Any, clinical: Any = None) -> np.ndarray:
    """The head's risk scores (n,) as float64 numpy, in eval mode without gradients."""
    head.eval()
    with torch.no_grad():
        x = _tensor(features) if head.in_features else None
        c = _tensor(clinical) if head.clinical_features else None
        return head(x, c).double().numpy()


# ----------------------------------------------------------------------------- concordance


def _arrays(time: Any, event: Any, *others: Any) -> list[np.ndarray]:
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
    time, event, risk = _arrays(time, event, risk)
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
    time, event = _arrays(time, event)
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
    time, event, risk = _arrays(time, event, risk)
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
    time, event = _arrays(time, event)
    times = np.asarray(times, dtype=float).reshape(-1)
    survival = np.asarray(survival, dtype=float)
    if survival.shape != (time.size, times.size):
        raise ValueError(f"survival must have shape (n, len(times)) = {(time.size, times.size)}, got {survival.shape}")
    fit_time, fit_event = (time, event) if train_time is None else _arrays(train_time, train_event)
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


# ----------------------------------------------------------------------------- log-rank and the figure


def logrank_test(time_a: Any, event_a: Any, time_b: Any, event_b: Any) -> tuple[float, float]:
    """Two-group log-rank test: ``(chi-square statistic with 1 degree of freedom, p-value)``."""
    from scipy.stats import chi2

    time_a, event_a = _arrays(time_a, event_a)
    time_b, event_b = _arrays(time_b, event_b)
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


def km_figure(path: str | Path, time: Any, event: Any, risk: Any, threshold: float | None = None,
              title: str = "Kaplan-Meier by predicted risk", dpi: int = 120) -> dict[str, Any]:
    """Write a PNG of Kaplan-Meier curves for the low- and high-risk groups (atomically).

    High risk = ``risk > threshold`` (default: the median risk of these
    patients; pass the training median to keep the split fixed).  The title
    carries the log-rank p-value.  Returns what was drawn: threshold, group
    sizes and events, chi-square and p-value.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    time, event, risk = _arrays(time, event, risk)
    threshold = float(np.median(risk)) if threshold is None else float(threshold)
    high = risk > threshold
    if high.all() or not high.any():
        raise UserError(f"the risk threshold {threshold:g} does not split the {risk.size} patients "
                        "into two groups", path)
    statistic, p_value = logrank_test(time[~high], event[~high], time[high], event[high])
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    groups = {}
    for name, mask, colour in (("low", ~high, "tab:blue"), ("high", high, "tab:red")):
        grid, surv = kaplan_meier(time[mask], event[mask])
        ax.step(grid, surv, where="post", color=colour,
                label=f"{name} risk (n={mask.sum()}, events={event[mask].sum()})")
        censored = time[mask & ~event]
        ax.plot(censored, step_value(grid, surv, censored), "|", color=colour, markersize=7)
        groups[name] = {"n": int(mask.sum()), "events": int(event[mask].sum())}
    ax.set_xlabel("time (days)")
    ax.set_ylabel("relapse-free survival")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{title}\nlog-rank p = {p_value:.3g}", fontsize=10)
    ax.set_xlim(left=0)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", facecolor="white")
    plt.close(fig)
    return {"path": str(path), "threshold": threshold, "groups": groups, "logrank_chi2": statistic, "p_value": p_value}

