"""The survival head learns imaging and clinical risk, deterministically, and fuses both branches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from petite.prognosis.metrics import concordance_index
from petite.prognosis.survival_head import SurvivalHead, fit_survival_head, predict_risk

pytestmark = pytest.mark.usefixtures("one_thread")


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
    assert head.config == {"in_features": 12, "clinical_features": 8, "hidden": 16, "dropout": 0.3,
                           "clinical_branch": "mlp", "ridge": 0.1}
    with pytest.raises(ValueError):
        head(torch.zeros(5, 12))
    with pytest.raises(ValueError):
        SurvivalHead(0, 0)
