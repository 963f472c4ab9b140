"""The report's statistics, stated once: seed-averaged subjects, paired differences, intervals, Holm, best marks.

* **Subjects first, seeds averaged.**  The unit of a comparison is a test
  subject (a (pair, subject) in the "all targets" tables).  Each subject's value
  is its mean over the seeds of the row (:func:`subject_values`); a row's
  metric cell is the mean of those values over subjects.
* **Two spreads, apart** (:func:`spreads`): the *seed* spread is the standard
  deviation over seeds of each seed's mean over subjects (how much a rerun
  moves the number); the *subject* spread is the standard deviation over
  subjects of the seed-averaged values (how much the test subjects differ).
  Both are sample standard deviations (ddof 1), ``None`` below two values; a
  row that trains nothing (No-FT, the baselines) has no seed spread.
* **Paired differences** (:func:`compare`): ``row - ref`` per subject, each
  side averaged over the seeds *both* rows have (a row that trains nothing
  gives the same prediction for every seed and restricts nothing).  The mean
  difference gets a 95 % percentile bootstrap interval (:func:`bootstrap_ci`:
  subjects resampled with replacement, :data:`N_BOOT` resamples, generator
  seeded with :data:`BOOT_SEED`, so the report is deterministic).
* **Tests only for declared comparisons**: two-sided Wilcoxon signed-rank
  (``scipy.stats.wilcoxon``, ``zero_method="wilcox"``) on the differences, its
  n (non-zero differences) and the smallest p it can reach with n pairs,
  ``2 / 2**n`` (:func:`min_attainable_p`: n = 5 cannot reach 0.05, n = 6
  cannot go below 0.031 whatever the effect).  The p-values of one table's
  declared comparisons are Holm-corrected together (:func:`holm`); a test that
  cannot be computed counts as p = 1.  Only the corrected p is printed.
* **Best, only where resolved** (:func:`mark_best`): per column, the row with
  the best mean is bold only if its paired interval against the runner-up
  excludes 0; otherwise it and every row whose interval against it includes 0
  are marked tied (``=``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from petite.report.collect import Row

N_BOOT = 10_000
BOOT_SEED = 0
LEVEL = 0.95
ALPHA = 0.05

Key = tuple[str, str]  # (pair, subject)


# ----------------------------------------------------------------------------------------------------------------
# Values of one row


def _values_by_seed(row: Row, metric: str, seeds: set[int] | None = None) -> dict[int, dict[Key, list[float]]]:
    out: dict[int, dict[Key, list[float]]] = {}
    for run in row.runs:
        if seeds is not None and run.seed not in seeds:
            continue
        for subject, metrics in run.subjects.items():
            if metric in metrics:
                out.setdefault(run.seed, {}).setdefault((run.pair, subject), []).append(metrics[metric])
    return out


def subject_values(row: Row, metric: str, seeds: set[int] | None = None) -> dict[Key, float]:
    """Each (pair, subject)'s ``metric`` averaged over the row's seeds (or over ``seeds`` only)."""
    pooled: dict[Key, list[float]] = {}
    for per_key in _values_by_seed(row, metric, seeds).values():
        for key, values in per_key.items():
            pooled.setdefault(key, []).append(float(np.mean(values)))
    return {key: float(np.mean(values)) for key, values in sorted(pooled.items())}


def seed_means(row: Row, metric: str) -> dict[int, float]:
    """Each seed's mean of ``metric`` over its (pair, subject) values."""
    return {seed: float(np.mean([np.mean(v) for v in per_key.values()]))
            for seed, per_key in sorted(_values_by_seed(row, metric).items())}


def _sd(values: Sequence[float]) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def spreads(row: Row, metric: str) -> dict[str, Any]:
    """``{"mean", "sd_seeds", "sd_subjects", "n_subjects", "n_seeds"}`` of ``metric`` (see the module docstring)."""
    subjects = subject_values(row, metric)
    seeds = seed_means(row, metric)
    mean = float(np.mean(list(subjects.values()))) if subjects else None
    return {"mean": mean, "sd_seeds": None if row.trains_nothing else _sd(list(seeds.values())),
            "sd_subjects": _sd(list(subjects.values())), "n_subjects": len(subjects), "n_seeds": len(seeds)}


# ----------------------------------------------------------------------------------------------------------------
# Paired differences, intervals and tests


def shared_seeds(row: Row, ref: Row) -> tuple[set[int], set[int], list[int]]:
    """The seeds each side averages over, and the seeds the comparison is made on."""
    a_use, b_use = set(row.seeds), set(ref.seeds)
    if row.trains_nothing == ref.trains_nothing:  # otherwise the side that trains nothing is seed-independent
        a_use = b_use = a_use & b_use
    seeds = sorted(b_use if row.trains_nothing else a_use)
    return a_use, b_use, seeds


def paired_differences(row: Row, ref: Row, metric: str) -> tuple[list[Key], np.ndarray, list[int]]:
    """(keys, ``row - ref`` per key, seeds): subjects both rows have, each averaged over the shared seeds."""
    a_use, b_use, seeds = shared_seeds(row, ref)
    a, b = subject_values(row, metric, a_use), subject_values(ref, metric, b_use)
    keys = sorted(set(a) & set(b))
    return keys, np.array([a[k] - b[k] for k in keys], dtype=np.float64), seeds


def bootstrap_ci(diffs: Sequence[float], n_boot: int = N_BOOT, level: float = LEVEL,
                 seed: int = BOOT_SEED) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``diffs`` (subjects resampled; ``None`` below 2 values).

    Resample ``b`` is ``diffs[rng.integers(0, n, n)]`` drawn in order from ``numpy.random.default_rng(seed)``.
    """
    d = np.asarray(diffs, dtype=np.float64)
    n = d.size
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def min_attainable_p(n: int) -> float:
    """The smallest two-sided p an exact Wilcoxon signed-rank test can give with ``n`` non-zero pairs."""
    return min(1.0, 2.0 / 2.0**n) if n > 0 else 1.0


def wilcoxon_test(diffs: Sequence[float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of ``diffs`` against 0: ``{"p", "n", "min_p", "can_reach_alpha",
    "reason"}`` (``n`` counts the non-zero differences; ``p`` None with a reason when undefined)."""
    d = np.asarray(diffs, dtype=np.float64)
    n = int(np.count_nonzero(d))
    out: dict[str, Any] = {"p": None, "n": n, "min_p": min_attainable_p(n),
                           "can_reach_alpha": min_attainable_p(n) < ALPHA, "reason": None}
    if d.size < 2:
        out["reason"] = "fewer than 2 paired subjects"
        return out
    if n == 0:
        out["reason"] = "all differences zero"
        return out
    from scipy.stats import wilcoxon

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    except ValueError as err:
        out["reason"] = str(err)
        return out
    if not math.isfinite(p):
        out["reason"] = "undefined"
        return out
    out["p"] = p
    return out


def holm(pvalues: Sequence[float | None]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (``None``, a test not computed, counts as 1).

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    p = [1.0 if v is None else float(v) for v in pvalues]
    m = len(p)
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: p[j])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = round(running, 12)
    return adjusted


def compare(row: Row, ref: Row, metric: str, *, test: bool = False, n_boot: int = N_BOOT,
            seed: int = BOOT_SEED) -> dict[str, Any]:
    """``row - ref`` on ``metric``: mean paired difference, bootstrap interval, and (``test``) Wilcoxon.

    Returns ``{"row", "ref", "metric", "n", "seeds", "diff", "ci", "ci_excludes_zero", "reason"}`` plus, with
    ``test``, ``"p"``, ``"n_nonzero"``, ``"min_p"``, ``"can_reach_alpha"`` (``"p_holm"`` is set by the caller).
    """
    out: dict[str, Any] = {"row": row.label, "ref": ref.label, "metric": metric, "n": 0, "seeds": [],
                           "diff": None, "ci": None, "ci_excludes_zero": False, "reason": None}
    if row is ref:
        out["reason"] = "reference"
        return out
    keys, d, seeds = paired_differences(row, ref, metric)
    out.update(n=len(keys), seeds=seeds)
    if len(keys):
        out["diff"] = float(d.mean())
    ci = bootstrap_ci(d, n_boot=n_boot, seed=seed)
    if ci is None:
        out["reason"] = "fewer than 2 paired subjects"
    else:
        out["ci"] = list(ci)
        out["ci_excludes_zero"] = ci[0] > 0 or ci[1] < 0
    if test:
        result = wilcoxon_test(d)
        out.update(p=result["p"], n_nonzero=result["n"], min_p=result["min_p"],
                   can_reach_alpha=result["can_reach_alpha"], reason=out["reason"] or result["reason"])
    return out


def declared_tests(comparisons: Sequence[tuple[Row, Row]], metric: str) -> list[dict[str, Any]]:
    """The declared comparisons of one table, each tested, with Holm-corrected p-values over the family."""
    results = [compare(row, ref, metric, test=True) for row, ref in comparisons]
    for result, p_holm in zip(results, holm([r["p"] for r in results])):
        result["p_holm"] = p_holm
        result["significant"] = result["p"] is not None and p_holm < ALPHA
    return results


# ----------------------------------------------------------------------------------------------------------------
# Best, where resolved


def mark_best(rows: Sequence[Row | None], metric: str, higher_is_better: bool,
              means: Sequence[float | None] | None = None) -> dict[str, Any]:
    """Best-value marks of one column: ``{"marks": ["best" | "tie" | "", ...], "best", "runner_up", "check"}``.

    Rows are ranked on their mean (``means``, or :func:`spreads`' mean); ``None`` rows (no subject values) are
    not ranked.  The top row is ``best`` (bold) only if its paired interval against the runner-up excludes 0;
    otherwise the top row and every row whose interval against it includes 0 are ``tie``.
    """
    if means is None:
        means = [spreads(r, metric)["mean"] if r is not None else None for r in rows]
    ranked = [i for i, (r, m) in enumerate(zip(rows, means)) if r is not None and m is not None and math.isfinite(m)]
    marks = [""] * len(rows)
    out: dict[str, Any] = {"marks": marks, "best": None, "runner_up": None, "check": None}
    if not ranked:
        return out
    ranked.sort(key=lambda i: -means[i] if higher_is_better else means[i])  # type: ignore[operator]
    top = ranked[0]
    out["best"] = top
    if len(ranked) == 1:
        marks[top] = "best"
        return out
    runner = ranked[1]
    out["runner_up"] = runner
    check = compare(rows[top], rows[runner], metric)  # type: ignore[arg-type]
    out["check"] = check
    if check["ci_excludes_zero"]:
        marks[top] = "best"
        return out
    marks[top] = "tie"
    for i in ranked[1:]:
        other = compare(rows[i], rows[top], metric)  # type: ignore[arg-type]
        if not other["ci_excludes_zero"]:
            marks[i] = "tie"
    return out


__all__ = ["ALPHA", "BOOT_SEED", "LEVEL", "N_BOOT", "bootstrap_ci", "compare", "holm", "mark_best",
           "min_attainable_p", "paired_differences", "seed_means", "shared_seeds", "spreads", "subject_values",
           "declared_tests", "wilcoxon_test"]
