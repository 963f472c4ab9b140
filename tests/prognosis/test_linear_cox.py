"""The ridge linear Cox clinical branch, training-fold KM thresholds and the pooled out-of-fold C-index."""

from __future__ import annotations

import numpy as np
import pytest

from petite.errors import UserError
from petite.headneck.clinical import VARIABLES
from petite.prognosis.crossval import cross_validate, stratified_folds
from petite.prognosis.evaluation import bootstrap_c_index
from petite.prognosis.heads import train_prognosis
from petite.prognosis.metrics import concordance_index
from petite.prognosis.survival_head import SurvivalHead, fit_survival_head, predict_risk

pytestmark = pytest.mark.usefixtures("one_thread")


def _linear_cohort(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    beta = np.array([0.8, -0.5, 0.0])
    time = np.ceil(rng.exponential(np.exp(-(x @ beta)) * 400))
    censor = rng.uniform(50, 1200, n)
    event = (time <= censor).astype(float)
    return x, np.minimum(time, np.ceil(censor)), event, beta


def test_linear_branch_reaches_the_cox_optimum_and_ridge_shrinks() -> None:
    lifelines = pytest.importorskip("lifelines")
    import pandas as pd

    x, time, event, _ = _linear_cohort()
    betas = {}
    for ridge in (0.0, 1.0):
        head = SurvivalHead(0, clinical_features=3, clinical_branch="linear", ridge=ridge)
        fit_survival_head(head, None, x.astype(np.float32), time, event, seed=0)
        betas[ridge] = head.clinical_linear.weight.detach().double().numpy().ravel()
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(T=time, E=event)
    reference = lifelines.CoxPHFitter().fit(frame, "T", "E").params_.to_numpy()  # Efron ties, no penalty
    np.testing.assert_allclose(betas[0.0], reference, atol=2e-3)
    assert np.linalg.norm(betas[1.0]) < 0.8 * np.linalg.norm(betas[0.0])
    # Convex and solved from beta = 0: the seed does not matter.
    other = SurvivalHead(0, clinical_features=3, clinical_branch="linear", ridge=0.0)
    fit_survival_head(other, None, x.astype(np.float32), time, event, seed=5)
    np.testing.assert_allclose(other.clinical_linear.weight.detach().numpy().ravel(), betas[0.0], atol=1e-4)
    with pytest.raises(ValueError):
        SurvivalHead(0, clinical_features=3, clinical_branch="tree")


def test_linear_branch_beside_imaging_trains_both() -> None:
    x, time, event, _ = _linear_cohort(seed=1)
    rng = np.random.default_rng(2)
    features = (rng.normal(size=(x.shape[0], 6)) + x[:, :1]).astype(np.float32)
    head = SurvivalHead(6, clinical_features=3, hidden=8, clinical_branch="linear", ridge=0.1)
    fit_survival_head(head, features, x.astype(np.float32), time, event, epochs=80, lr=1e-2, seed=0)
    assert head.tabular is None and head.clinical_linear is not None and head.imaging is not None
    risk = predict_risk(head, features, x.astype(np.float32))
    assert concordance_index(time, risk, event) > 0.65


def _records(x: np.ndarray) -> list[dict]:
    # Three clinical variables carry the signal; the rest are constant (scaling gives them std 1).
    return [{v: 0.0 for v in VARIABLES} | {"age": float(row[0]) * 10 + 60, "performance": float(row[1]),
                                            "tobacco": float(row[2])} for row in x]


def test_km_threshold_comes_from_training_folds_and_pooled_c_index() -> None:
    x, time, event, _ = _linear_cohort(n=90, seed=3)
    records = _records(x)
    args = dict(use_clinical=True, seeds=[0, 1], folds=3, clinical_branch="linear", n_boot=200)
    result = cross_validate(None, records, time, event, **args)
    oof = result["oof_risk"]
    # Re-derive each fold's scores: centred on the median of *its training* risks, nothing from the test fold.
    fold = stratified_folds(event, 3, 0)
    for f in range(3):
        train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        heads = train_prognosis(None, [records[i] for i in train], time[train], event[train], use_imaging=False,
                                use_clinical=True, seeds=[0], clinical_branch="linear")
        ref = heads.train_risk.mean(axis=0)
        risk = heads.predict(None, [records[i] for i in test]).mean(axis=0)
        np.testing.assert_allclose(oof[test], (risk - np.median(ref)) / ref.std(), rtol=1e-6, atol=1e-9)
        assert 0.4 <= float(np.mean(ref > np.median(ref))) <= 0.5  # the split halves the training folds
    assert result["pooled_c_index"][0] == pytest.approx(concordance_index(time, oof, event))
    lo, hi = result["pooled_c_index_ci"]
    assert lo < result["pooled_c_index"][0] < hi and len(result["pooled_c_index"]) == 2
    assert cross_validate(None, records, time, event, **args)["pooled_c_index_ci"] == [lo, hi]
    assert bootstrap_c_index(time, oof, event, n_boot=200, seed=1) != [lo, hi]
    with pytest.raises(UserError):
        train_prognosis(None, records, time, event, use_imaging=False, use_clinical=True, clinical_branch="tree")


def test_evaluation_splits_at_the_training_median_only(tmp_path) -> None:
    from petite.prognosis.evaluation import evaluate_prognosis

    x, time, event, _ = _linear_cohort(n=80, seed=4)
    records = _records(x)
    heads = train_prognosis(None, records[:60], time[:60], event[:60], use_imaging=False, use_clinical=True,
                            seeds=[0], clinical_branch="linear")
    median = float(np.median(heads.train_risk.mean(axis=0)))
    result = evaluate_prognosis(heads, None, records[60:], time[60:], event[60:], km_png=tmp_path / "km.png")
    assert result["threshold"] == pytest.approx(median)
    # Test patients who all sit above the training median: no split, no figure (no fallback to their own median).
    high = [r | {"age": 200.0} for r in records[60:]]  # age carries a positive coefficient (+0.8 per 10 years)
    shifted = evaluate_prognosis(heads, None, high, time[60:], event[60:], km_png=tmp_path / "km2.png")
    assert shifted["threshold"] == pytest.approx(median)
    assert shifted["km_png"] is None and np.isnan(shifted["logrank_p"]) and not (tmp_path / "km2.png").exists()


def test_paired_c_index_difference_resolves_what_separate_intervals_do_not() -> None:
    """The paired bootstrap scores both risks on each resample: a small consistent gain gets an interval
    above 0 while the two separate intervals overlap; a risk against itself is exactly 0."""
    from petite.prognosis.evaluation import bootstrap_c_index_difference

    x, time, event, beta = _linear_cohort(n=300, seed=3)
    truth = x @ beta
    noisy = truth + np.random.default_rng(4).normal(scale=0.6, size=truth.size)
    delta, (lo, hi) = bootstrap_c_index_difference(time, truth, noisy, event, n_boot=300, seed=0)
    assert delta == pytest.approx(concordance_index(time, truth, event) - concordance_index(time, noisy, event))
    assert 0 < lo <= delta <= hi
    a, b = bootstrap_c_index(time, truth, event, n_boot=300), bootstrap_c_index(time, noisy, event, n_boot=300)
    assert a[0] < b[1]  # the separate intervals overlap: only the paired one resolves the gain
    assert bootstrap_c_index_difference(time, truth, truth, event, n_boot=50) == (0.0, [0.0, 0.0])
    with pytest.raises(UserError):
        bootstrap_c_index_difference(time, truth[:-1], noisy, event)
