"""The Kaplan-Meier figure of predicted low- and high-risk groups, with the log-rank p-value (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from petite.atomic import atomic_path
from petite.errors import UserError
from petite.prognosis.metrics import (
    kaplan_meier,
    logrank_test,
    step_value,
    survival_arrays,
)


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

    time, event, risk = survival_arrays(time, event, risk)
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


__all__ = ["km_figure"]
