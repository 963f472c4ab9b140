"""The rule of ``lr: auto``: which learning-rate multiplier to try next, and which trial wins.

Pure functions on trial records (dicts with ``multiplier`` and ``best_val_psnr_masked``), kept free
of torch so that :mod:`petite.study.sweep` can tell whether a finished run's search is complete
(``petite sweep --list``/``--emit-jobs``) without importing the training engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def best_trial(trials: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The trial with the best validation masked PSNR, or ``None`` when no trial was scored."""
    scored = [t for t in trials if t["best_val_psnr_masked"] is not None]
    return max(scored, key=lambda t: t["best_val_psnr_masked"]) if scored else None


def next_lr_multiplier(grid: Sequence[float], trials: Sequence[dict[str, Any]], extend: int) -> float | None:
    """The multiplier lr auto tries next after ``trials``, or ``None`` when the search is over.

    Every multiplier of ``grid`` is tried first.  Then, while the best trial is the highest (lowest)
    multiplier tried and fewer than ``extend`` multipliers beyond ``grid`` were tried, the next one is a
    grid step further out (the ratio of the two outermost multipliers on that side).
    """
    tried = {t["multiplier"] for t in trials}
    for multiplier in grid:
        if multiplier not in tried:
            return multiplier
    best = best_trial(trials)
    ladder = sorted(tried)
    if best is None or len(ladder) < 2 or len(tried - set(grid)) >= extend:
        return None
    if best["multiplier"] not in (ladder[0], ladder[-1]):
        return None
    step = ladder[-1] / ladder[-2] if best["multiplier"] == ladder[-1] else ladder[0] / ladder[1]
    return float(f"{best['multiplier'] * step:.6g}")  # 6 digits, as the trial's folder name x<multiplier:g>


def lr_search_complete(final: dict[str, Any], grid: Sequence[float], extend: int) -> bool:
    """Whether a finished run's recorded lr search (its ``final.json``) is what the rule would try with
    ``grid`` and ``extend``: a run made before the grid could extend past an edge is not, and
    :func:`petite.engine.train.train` completes it."""
    search = final.get("lr_search")
    if not search:
        return True
    return next_lr_multiplier(grid, search["trials"], extend) is None


__all__ = ["best_trial", "lr_search_complete", "next_lr_multiplier"]
