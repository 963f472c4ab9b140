"""Prognosis as an estimator object, in the style of scikit-survival: settings at construction,
``fit(X, y)``, ``predict(X)``, ``score(X, y)``; the survival metrics stay apart in
:mod:`petite.prognosis.metrics`.

``X`` is a :class:`PrognosisInput` (imaging features and/or clinical records of
the same patients) and ``y`` the outcome as a structured array with fields
``event`` (bool) and ``time`` (days), as scikit-survival's ``Surv.from_arrays``
makes it (:func:`survival_outcome`).  The estimator trains
:class:`~petite.prognosis.heads.PrognosisHeads` (one head per seed) with
:func:`~petite.prognosis.heads.train_prognosis` and predicts their mean risk::

    model = SurvivalModel(use_clinical=True, seeds=(0, 1, 2)).fit(X_train, y_train)
    risk = model.predict(X_test)            # higher = earlier relapse expected
    c_index = model.score(X_test, y_test)   # Harrell's C
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from petite.errors import UserError
from petite.headneck.clinical import VARIABLES
from petite.prognosis.heads import PrognosisHeads, train_prognosis
from petite.prognosis.metrics import concordance_index

SURVIVAL_DTYPE = np.dtype([("event", bool), ("time", float)])


def survival_outcome(time: Any, event: Any) -> np.ndarray:
    """The outcome ``y`` as a structured array (``event``, ``time``), like scikit-survival's ``Surv.from_arrays``."""
    t = np.asarray(time, dtype=float).reshape(-1)
    e = np.asarray(event).reshape(-1)
    if t.shape != e.shape:
        raise UserError(f"{t.size} times but {e.size} events")
    y = np.empty(t.size, dtype=SURVIVAL_DTYPE)
    y["time"], y["event"] = t, e.astype(bool)
    return y


@dataclass(frozen=True)
class PrognosisInput:
    """The inputs of a set of patients: imaging ``features`` (n, d) and/or their ``clinical`` records."""

    features: Any = None
    clinical: Sequence[Mapping[str, Any]] | None = None
    patients: Sequence[str] | None = None


def _outcome(y: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    if y.dtype.names is None or not {"event", "time"} <= set(y.dtype.names):
        raise UserError("y must be a structured array with fields 'event' and 'time' (see survival_outcome)")
    return y["time"].astype(float), y["event"].astype(int)


class SurvivalModel:
    """Cox survival heads on imaging features and/or clinical variables (see the module docstring).

    The constructor takes the settings of :func:`~petite.prognosis.heads.train_prognosis`;
    after :meth:`fit`, ``heads_`` holds the trained :class:`PrognosisHeads`.
    """

    def __init__(self, *, use_imaging: bool = True, use_clinical: bool = False, seeds: Sequence[int] = (0,),
                 feature_names: Sequence[str] | None = None, clinical_columns: Sequence[str] = VARIABLES,
                 deep_components: int | None = 8, hidden: int = 16, dropout: float = 0.3, epochs: int = 60,
                 lr: float = 3e-3, weight_decay: float = 1e-2) -> None:
        self.use_imaging, self.use_clinical, self.seeds = use_imaging, use_clinical, tuple(seeds)
        self.feature_names, self.clinical_columns = feature_names, tuple(clinical_columns)
        self.deep_components, self.hidden, self.dropout = deep_components, hidden, dropout
        self.epochs, self.lr, self.weight_decay = epochs, lr, weight_decay
        self.heads_: PrognosisHeads | None = None

    def fit(self, X: PrognosisInput, y: Any) -> SurvivalModel:
        """Train the heads on ``X`` and the outcome ``y``; returns ``self``."""
        time, event = _outcome(y)
        self.heads_ = train_prognosis(
            X.features, X.clinical, time, event, use_clinical=self.use_clinical, use_imaging=self.use_imaging,
            seeds=self.seeds, names=self.feature_names, clinical_columns=self.clinical_columns,
            deep_components=self.deep_components, hidden=self.hidden, dropout=self.dropout, epochs=self.epochs,
            lr=self.lr, weight_decay=self.weight_decay, patients=X.patients)
        return self

    def predict(self, X: PrognosisInput) -> np.ndarray:
        """Risk of each patient (log relative hazard), averaged over the seeds' heads: ``(n,)``."""
        if self.heads_ is None:
            raise UserError("fit the model before predicting")
        return self.heads_.predict(X.features, X.clinical, X.patients).mean(axis=0)

    def score(self, X: PrognosisInput, y: Any) -> float:
        """Harrell's concordance index of :meth:`predict` against ``y``."""
        time, event = _outcome(y)
        return concordance_index(time, self.predict(X), event)


__all__ = ["PrognosisInput", "SurvivalModel", "survival_outcome"]
