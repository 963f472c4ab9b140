"""Cross-validation of prognosis heads: stratified folds, repeated over seeds.

:func:`stratified_folds` deals events and censored patients round-robin into
``k`` folds after a seeded shuffle, so every fold has relapses;
:func:`cross_validate` trains heads on all folds but one and measures them on
the one left out, for each seed (fresh folds and head initialisation per seed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from petite.prognosis.evaluation import evaluate_prognosis
from petite.prognosis.heads import train_prognosis


def stratified_folds(event: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index (0..k-1) of every patient: events and censored patients dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(7,)))
    fold = np.zeros(event.size, dtype=int)
    offset = 0
    for value in (1, 0):
        members = np.flatnonzero(event == value)
        rng.shuffle(members)
        fold[members] = (np.arange(members.size) + offset) % k
        offset += members.size
    return fold


def cross_validate(features: np.ndarray | None, records: Sequence[Mapping[str, Any]], time_days: np.ndarray,
                   event: np.ndarray, *, use_clinical: bool, seeds: Sequence[int], folds: int = 3,
                   **train_args: Any) -> dict[str, Any]:
    """Repeated stratified k-fold CV: per seed, fresh folds and head initialisation; test measures per fold.

    Returns ``{"c_index": [per seed: mean over folds], "ibs": [...], "oof_risk": seed 0's out-of-fold
    risks, each fold's standardised by its training risks}``.
    """
    use_imaging = features is not None
    dummy = np.zeros((time_days.size, 0))
    c_seed, ibs_seed, oof = [], [], np.zeros(time_days.size)
    for n_seed, seed in enumerate(seeds):
        fold = stratified_folds(event, folds, seed)
        c_fold, ibs_fold = [], []
        for f in range(folds):
            train, test = fold != f, fold == f
            heads = train_prognosis(features[train] if use_imaging else dummy[train],
                                    [records[i] for i in np.flatnonzero(train)], time_days[train], event[train],
                                    use_clinical=use_clinical, use_imaging=use_imaging, seeds=[seed], **train_args)
            result = evaluate_prognosis(heads, features[test] if use_imaging else dummy[test],
                                        [records[i] for i in np.flatnonzero(test)], time_days[test], event[test])
            c_fold.append(result["c_index"])
            ibs_fold.append(result["ibs"])
            if n_seed == 0:
                ref = heads.train_risk.mean(axis=0)
                oof[test] = (np.asarray(result["risk"]) - ref.mean()) / max(float(ref.std()), 1e-12)
        c_seed.append(float(np.nanmean(c_fold)))
        ibs_seed.append(float(np.nanmean(ibs_fold)))
    return {"c_index": c_seed, "ibs": ibs_seed, "oof_risk": oof}


__all__ = ["cross_validate", "stratified_folds"]
