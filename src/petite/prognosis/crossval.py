"""Cross-validation of prognosis heads: stratified folds, repeated over seeds.

:func:`stratified_folds` deals events and censored patients round-robin into
``k`` folds after a seeded shuffle, so every fold has relapses;
:func:`cross_validate` trains heads on all folds but one and measures them on
the one left out, for each seed (fresh folds and head initialisation per seed).

Out-of-fold risks: each test fold's risks are centred on the *median of its
training folds' risks* and scaled by their standard deviation, so the
Kaplan-Meier split "above the training median" is ``oof_risk > 0`` and never
looks at a test patient (a median of pooled out-of-fold risks would).  The
pooled out-of-fold C-index scores all patients' out-of-fold risks at once
(per seed), with a percentile bootstrap interval over patients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from petite.prognosis.evaluation import bootstrap_c_index, c_index_or_nan, evaluate_prognosis
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
                   n_boot: int = 1000, boot_seed: int = 0, **train_args: Any) -> dict[str, Any]:
    """Repeated stratified k-fold CV: per seed, fresh folds and head initialisation; test measures per fold.

    Returns ``{"c_index": [per seed: mean over folds], "ibs": [...], "oof_risk": seed 0's out-of-fold
    risks (each fold's centred on its training median, scaled by its training std: the training-fold
    threshold is 0), "pooled_c_index": [per seed: C-index of the pooled out-of-fold risks],
    "pooled_c_index_ci": seed 0's 95 % bootstrap interval (``n_boot`` resamples, ``boot_seed``)}``.
    """
    use_imaging = features is not None
    dummy = np.zeros((time_days.size, 0))
    c_seed, ibs_seed, pooled, oof_first = [], [], [], np.zeros(time_days.size)
    for n_seed, seed in enumerate(seeds):
        fold = stratified_folds(event, folds, seed)
        oof = np.zeros(time_days.size)
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
            ref = heads.train_risk.mean(axis=0)  # the training folds' risks, averaged over heads as "risk" is
            oof[test] = (np.asarray(result["risk"]) - float(np.median(ref))) / max(float(ref.std()), 1e-12)
        c_seed.append(float(np.nanmean(c_fold)))
        ibs_seed.append(float(np.nanmean(ibs_fold)))
        pooled.append(c_index_or_nan(time_days, oof, event))
        if n_seed == 0:
            oof_first = oof
    interval = bootstrap_c_index(time_days, oof_first, event, n_boot=n_boot, seed=boot_seed) if seeds else None
    return {"c_index": c_seed, "ibs": ibs_seed, "oof_risk": oof_first, "pooled_c_index": pooled,
            "pooled_c_index_ci": interval}


__all__ = ["cross_validate", "stratified_folds"]
