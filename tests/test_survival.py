"""Cox loss, C-index, Brier score, Kaplan-Meier, log-rank and the survival head (lifelines as the reference)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test as lifelines_logrank
from lifelines.utils import concordance_index as lifelines_cindex

from petite.errors import UserError
from petite.multimodal.survival import (
    SurvivalHead,
    breslow_baseline,
    brier_scores,
    concordance_index,
    cox_loss,
    fit_survival_head,
    integrated_brier_score,
    kaplan_meier,
    km_figure,
    logrank_test,
    predict_risk,
    survival_function,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def tied_cohort(seed: int, n: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer times in 1..8 (many ties), ~30 % censored, risks with some ties."""
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 9, n).astype(float)
    event = (rng.random(n) < 0.7).astype(float)
    risk = np.round(rng.normal(size=n), 1)
    return time, event, risk


def naive_partial_loglik(risk, time, event, ties):
    """O(n^2) reference, straight from the textbook formulas."""
    total = 0.0
    for t in np.unique(time[event == 1]):
        dead = (time == t) & (event == 1)
        d = dead.sum()
        a = np.exp(risk[time >= t]).sum()
        b = np.exp(risk[dead]).sum()
        total += risk[dead].sum()
        for ell in range(d):
            total -= math.log(a - (ell / d) * b) if ties == "efron" else math.log(a)
    return total


@pytest.mark.parametrize("ties", ["efron", "breslow"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cox_loss_matches_naive_reference(ties, seed):
    time, event, risk = tied_cohort(seed)
    loss = cox_loss(torch.tensor(risk, dtype=torch.float64), torch.tensor(time), torch.tensor(event), ties=ties)
    expected = -naive_partial_loglik(risk, time, event, ties) / event.sum()
    assert float(loss) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_cox_loss_efron_matches_lifelines_partial_likelihood():
    rng = np.random.default_rng(3)
    x = rng.normal(size=60)
    time = np.ceil(rng.exponential(5 * np.exp(-0.8 * x)))            # whole units: many ties
    event = (rng.random(60) < 0.75).astype(int)
    fitter = CoxPHFitter(penalizer=0.0).fit(pd.DataFrame({"x": x, "T": time, "E": event}), "T", "E")
    risk = torch.tensor(x * fitter.params_["x"], dtype=torch.float64)
    loss = cox_loss(risk, torch.tensor(time), torch.tensor(event), ties="efron")
    assert -float(loss) * event.sum() == pytest.approx(fitter.log_likelihood_, abs=1e-8)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_cox_loss_gradcheck(ties):
    time, event, risk = tied_cohort(4, n=15)
    r = torch.tensor(risk + np.linspace(0, 0.01, 15), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: cox_loss(v, torch.tensor(time), torch.tensor(event), ties=ties), (r,))


def test_cox_loss_is_stable_and_handles_no_events():
    time, event, risk = tied_cohort(5)
    big = torch.tensor(risk * 1000.0, dtype=torch.float32, requires_grad=True)
    loss = cox_loss(big, torch.tensor(time), torch.tensor(event))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(big.grad).all()
    shifted = cox_loss(torch.tensor(risk + 50.0), torch.tensor(time), torch.tensor(event))
    assert float(shifted) == pytest.approx(float(cox_loss(torch.tensor(risk), torch.tensor(time), torch.tensor(event))))
    r = torch.zeros(4, requires_grad=True)
    none = cox_loss(r, torch.arange(1.0, 5.0), torch.zeros(4))
    none.backward()
    assert float(none.detach()) == 0.0 and r.grad is not None


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


def test_breslow_baseline_matches_lifelines():
    rng = np.random.default_rng(6)
    x = rng.normal(size=50)
    time = np.ceil(rng.exponential(5 * np.exp(-0.8 * x)))
    event = (rng.random(50) < 0.75).astype(int)
    fitter = CoxPHFitter(penalizer=0.0).fit(pd.DataFrame({"x": x, "T": time, "E": event}), "T", "E")
    risk = np.log(fitter.predict_partial_hazard(pd.DataFrame({"x": x})).to_numpy())
    baseline = breslow_baseline(time, event, risk)
    reference = fitter.baseline_cumulative_hazard_
    np.testing.assert_allclose(baseline(reference.index.to_numpy()), reference.to_numpy()[:, 0], rtol=1e-8)
    surv = survival_function(baseline, risk[:3], [0.5, 3.0])
    np.testing.assert_allclose(surv[:, 0], 1.0)
    np.testing.assert_allclose(surv[:, 1], np.exp(-baseline(3.0) * np.exp(risk[:3])))


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


def test_km_figure_writes_png(tmp_path):
    rng = np.random.default_rng(8)
    risk = rng.normal(size=60)
    time = np.ceil(rng.exponential(300 * np.exp(-risk)))
    event = rng.random(60) < 0.8
    info = km_figure(tmp_path / "km.png", time, event, risk)
    assert (tmp_path / "km.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert info["groups"]["low"]["n"] == info["groups"]["high"]["n"] == 30
    assert info["p_value"] < 0.05
    assert [p.name for p in tmp_path.iterdir()] == ["km.png"]
    with pytest.raises(UserError, match="does not split"):
        km_figure(tmp_path / "bad.png", time, event, np.zeros(60))
    assert not (tmp_path / "bad.png").exists()


def _split_c_index(make, seed=0, **fit):
    rng = np.random.default_rng(seed)
    n = 300
    features, clinical, eta = make(rng, n)
    time = np.ceil(rng.exponential(np.exp(-eta) * 500))
    censor = rng.uniform(100, 1500, n)
    event = (time <= censor).astype(float)
    time = np.minimum(time, np.ceil(censor))
    head_args = {"in_features": 0 if features is None else features.shape[1],
                 "clinical_features": 0 if clinical is None else clinical.shape[1]}
    train, test = slice(0, 200), slice(200, n)
    pick = (lambda a, s: None if a is None else a[s])
    head = SurvivalHead(**head_args, hidden=16)
    history = fit_survival_head(head, pick(features, train), pick(clinical, train), time[train], event[train],
                                epochs=100, lr=5e-3, seed=seed, **fit)
    risk = predict_risk(head, pick(features, test), pick(clinical, test))
    return concordance_index(time[test], risk, event[test]), history, risk


def _imaging(rng, n):
    features = rng.normal(size=(n, 12)).astype(np.float32) * 3 + 5       # unstandardised, like pooled features
    return features, None, 2.0 * (features[:, 3] - 5) / 3


def _clinical(rng, n):
    clinical = rng.normal(size=(n, 8)).astype(np.float32)
    return None, clinical, 2.0 * clinical[:, 5]


def test_head_learns_imaging_risk_and_is_deterministic():
    c_index, history, risk = _split_c_index(_imaging)
    assert c_index > 0.75
    assert history["loss"][-1] < history["loss"][0]
    _, _, again = _split_c_index(_imaging)
    np.testing.assert_array_equal(risk, again)


def test_head_learns_clinical_risk():
    c_index, _, _ = _split_c_index(_clinical)
    assert c_index > 0.75


def test_head_fuses_both_branches():
    head = SurvivalHead(12, clinical_features=8, hidden=16)
    out = head(torch.zeros(5, 12), torch.zeros(5, 8))
    assert out.shape == (5,)
    assert head.risk.in_features == 32 and head.risk.bias is None
    assert head.config == {"in_features": 12, "clinical_features": 8, "hidden": 16, "dropout": 0.3}
    with pytest.raises(ValueError):
        head(torch.zeros(5, 12))
    with pytest.raises(ValueError):
        SurvivalHead(0, 0)
