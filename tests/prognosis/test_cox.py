"""The Cox partial-likelihood loss and Breslow's baseline hazard (lifelines as the reference)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter

from petite.prognosis.cox import breslow_baseline, cox_loss, survival_function
from tests.prognosis.cohorts import tied_cohort

pytestmark = pytest.mark.usefixtures("one_thread")


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
