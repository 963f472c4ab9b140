"""The report's paired tests and best-value ranking (the choices, stated once).

* A table row's metric cells are mean ± std over every (seed, test subject)
  value of the group (:meth:`petite.report.collect.Row.stat`; the "all
  targets" table pools every (pair, seed, subject) value).  std has ddof 0, as
  the engine's per-run summaries.
* Paired tests (:func:`paired_wilcoxon`): two-sided Wilcoxon signed-rank
  (``scipy.stats.wilcoxon``, ``zero_method="wilcox"``, scipy's default
  exact/normal choice) on PSNR, pairing by test subject (by (pair, subject) in
  "all targets").  Each subject's value is its mean over the seeds *both*
  methods have; a method that trains nothing (every run 0 epochs, i.e. No-FT)
  gives the same prediction for every seed, so it does not restrict the seeds
  of the other side.  The p-value is "-" for the reference itself, when fewer
  than 2 pairs remain, or when every difference is zero (the test is undefined).
* Best / second best per metric column (:func:`mark_best`): over every row
  (No-FT and Full-FT included), ranked on the *displayed* (rounded) value, so
  rows that print the same number share the mark; NRMSE lower is better.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from petite.report.collect import Row


def paired_wilcoxon(row: Row, ref: Row, metric: str = "psnr") -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of ``row`` vs ``ref`` on ``metric``, paired by (pair, subject).

    Each side's subject value is its mean over the seeds both sides have (a side
    that trains nothing does not restrict the seeds).  Returns ``{"p", "n",
    "seeds", "reason"}``; ``p`` is None (with a reason) for the reference
    itself, fewer than 2 pairs, or all differences zero.
    """
    if row is ref:
        return {"p": None, "n": 0, "seeds": [], "reason": "reference"}
    a_use, b_use = set(row.seeds), set(ref.seeds)
    if row.trains_nothing == ref.trains_nothing:  # otherwise the side that trains nothing is seed-independent
        a_use = b_use = a_use & b_use
    seeds = sorted(b_use if row.trains_nothing else a_use)

    def subject_means(side: Row, use: set[int]) -> dict[tuple[str, str], float]:
        values: dict[tuple[str, str], list[float]] = {}
        for run in side.runs:
            if run.seed in use:
                for subject, m in run.subjects.items():
                    values.setdefault((run.pair, subject), []).append(m[metric])
        return {k: float(np.mean(v)) for k, v in values.items()}

    a, b = subject_means(row, a_use), subject_means(ref, b_use)
    keys = sorted(set(a) & set(b))
    x = np.array([a[k] for k in keys])
    y = np.array([b[k] for k in keys])
    out: dict[str, Any] = {"p": None, "n": len(keys), "seeds": seeds, "reason": None}
    if len(keys) < 2:
        out["reason"] = "fewer than 2 paired subjects"
        return out
    if np.all(x - y == 0):
        out["reason"] = "all differences zero"
        return out
    from scipy.stats import wilcoxon

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = float(wilcoxon(x, y, zero_method="wilcox", alternative="two-sided").pvalue)
    except ValueError as err:
        out["reason"] = str(err)
        return out
    if not math.isfinite(p):
        out["reason"] = "undefined"
        return out
    out["p"] = p
    return out


def mark_best(values: Sequence[float | None], higher_is_better: bool, digits: int) -> list[str]:
    """``"best"``, ``"second"`` or ``""`` per value, ranking the values rounded to ``digits`` (ties share)."""
    rounded = [round(v, digits) if v is not None and math.isfinite(v) else None for v in values]
    distinct = sorted({v for v in rounded if v is not None}, reverse=higher_is_better)
    marks = []
    for v in rounded:
        if v is None:
            marks.append("")
        elif v == distinct[0]:
            marks.append("best")
        elif len(distinct) > 1 and v == distinct[1]:
            marks.append("second")
        else:
            marks.append("")
    return marks


__all__ = ["mark_best", "paired_wilcoxon"]
