"""C-index, Kaplan-Meier, log-rank and the (integrated) Brier score (lifelines as the reference)."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test as lifelines_logrank
from lifelines.utils import concordance_index as lifelines_cindex

from petite.prognosis.cox import breslow_baseline, survival_function
from petite.prognosis.metrics import (
    brier_scores,
    concordance_index,
    integrated_brier_score,
    kaplan_meier,
    logrank_test,
)
from tests.prognosis.cohorts import tied_cohort

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("seed", range(5))
def test_concordance_matches_lifelines(seed):
    time, event, risk = tied_cohort(seed, n=80)
    expected = lifelines_cindex(time, -risk, event)
    assert concordance_index(time, risk, event) == pytest.approx(expected, abs=1e-6)
    continuous = np.random.default_rng(seed).exponential(size=80)
    expected = lifelines_cindex(continuous, -risk, event)
    assert concordance_index(continuous, risk, event) == pytest.approx(expected, abs=1e-6)


def test_concordance_extremes():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    assert concordance_index(time, -time, np.ones(4)) == 1.0
    assert concordance_index(time, time, np.ones(4)) == 0.0
    assert concordance_index(time, np.zeros(4), np.ones(4)) == 0.5
    with pytest.raises(ValueError, match="comparable"):
        concordance_index(time, time, np.zeros(4))


@pytest.mark.parametrize("seed", [0, 1])
def test_kaplan_meier_matches_lifelines(seed):
    time, event, _ = tied_cohort(seed, n=50)
    grid, surv = kaplan_meier(time, event)
    reference = KaplanMeierFitter().fit(time, event).survival_function_
    np.testing.assert_allclose(grid, reference.index.to_numpy(), atol=0)
    np.testing.assert_allclose(surv, reference.to_numpy()[:, 0], atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logrank_matches_lifelines(seed):
    rng = np.random.default_rng(seed)
    ta, tb = np.ceil(rng.exponential(10, 30)), np.ceil(rng.exponential(14, 25))
    ea, eb = rng.random(30) < 0.7, rng.random(25) < 0.7
    statistic, p = logrank_test(ta, ea, tb, eb)
    reference = lifelines_logrank(ta, tb, ea, eb)
    assert statistic == pytest.approx(reference.test_statistic, rel=1e-10)
    assert p == pytest.approx(reference.p_value, rel=1e-8)


def test_brier_score_hand_computed():
    # Subjects: event at 1, censored at 2, event at 3, event at 4; one time t = 2.5.
    time, event = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 0, 1, 1])
    surv = np.array([[0.2], [0.6], [0.7], [0.9]])
    # Censoring KM (censorings as events): G = 1 before 2, then 1 - 1/3 = 2/3.
    # Subject 1: event before t, G(1-) = 1 -> 0.2^2; subject 2: censored before t -> 0;
    # subjects 3, 4 alive at t: (1 - S)^2 / G(2.5) = 0.09 * 1.5 and 0.01 * 1.5.
    expected = (0.04 + 0 + 0.09 * 1.5 + 0.01 * 1.5) / 4
    assert brier_scores(time, event, surv, [2.5])[0] == pytest.approx(expected, abs=1e-12)
    # Integrated over [2.5, 3.5]: at 3.5 subject 3 has died (G(3-) = 2/3), subject 4 alive.
    surv2 = np.repeat(surv, 2, axis=1)
    at_35 = (0.04 + 0 + 0.49 * 1.5 + 0.01 * 1.5) / 4
    assert integrated_brier_score(time, event, surv2, [2.5, 3.5]) == pytest.approx((expected + at_35) / 2, abs=1e-12)


def test_oracle_has_lower_brier_score_than_random():
    rng = np.random.default_rng(7)
    n = 400
    eta = rng.normal(size=n)
    true_time = rng.exponential(np.exp(-eta) * 100)
    censor = rng.uniform(0, 250, n)
    time, event = np.ceil(np.minimum(true_time, censor)), (true_time <= censor).astype(int)
    train, test = slice(0, 200), slice(200, n)
    times = np.linspace(5, 150, 30)
    scores = {}
    for name, risk in {"oracle": eta, "random": rng.normal(size=n)}.items():
        baseline = breslow_baseline(time[train], event[train], risk[train])
        surv = survival_function(baseline, risk[test], times)
        scores[name] = integrated_brier_score(time[test], event[test], surv, times,
                                              train_time=time[train], train_event=event[train])
    assert scores["oracle"] < scores["random"] - 0.02
    assert 0 < scores["oracle"] < 0.25
