"""The scikit-survival-style estimator: fit/predict/score agree with the heads and metrics it is built on."""

from __future__ import annotations

import numpy as np
import pytest

from petite.errors import UserError
from petite.prognosis.estimator import PrognosisInput, SurvivalModel, survival_outcome
from petite.prognosis.evaluation import evaluate_prognosis
from petite.prognosis.heads import train_prognosis
from tests.prognosis.test_heads import _cohort

pytestmark = pytest.mark.usefixtures("one_thread")


def test_estimator_matches_train_prognosis_and_scores_by_harrells_c() -> None:
    features, records, time_days, event = _cohort(120)
    train, test = slice(0, 80), slice(80, 120)
    y_train, y_test = survival_outcome(time_days[train], event[train]), survival_outcome(time_days[test], event[test])
    assert y_train.dtype.names == ("event", "time") and y_train["event"].dtype == bool

    model = SurvivalModel(use_clinical=True, seeds=(0, 1), epochs=40)
    assert model.fit(PrognosisInput(features[train], records[train]), y_train) is model
    heads = train_prognosis(features[train], records[train], time_days[train], event[train], use_clinical=True,
                            seeds=[0, 1], epochs=40)
    x_test = PrognosisInput(features[test], records[test])
    risk = model.predict(x_test)
    # The same training as the functional API, averaged over the seeds' heads.
    np.testing.assert_allclose(risk, heads.predict(features[test], records[test]).mean(axis=0), rtol=1e-6)
    expected = evaluate_prognosis(heads, features[test], records[test], time_days[test], event[test])["c_index"]
    assert model.score(x_test, y_test) == pytest.approx(expected, abs=1e-9)
    assert model.score(x_test, y_test) > 0.65  # the cohort's risk is learnable


def test_estimator_refuses_bad_outcomes_and_predicting_before_fit() -> None:
    features, records, time_days, event = _cohort(20)
    with pytest.raises(UserError, match="fit the model"):
        SurvivalModel().predict(PrognosisInput(features))
    with pytest.raises(UserError, match="structured array"):
        SurvivalModel().fit(PrognosisInput(features), time_days)
    with pytest.raises(UserError, match="times but"):
        survival_outcome(time_days, event[:-1])
