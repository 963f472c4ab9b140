"""Trained prognosis heads: one survival head per seed, with everything needed to apply them to new patients.

:func:`train_prognosis` trains one :class:`~petite.prognosis.survival_head.SurvivalHead`
per seed (seed = initialisation and dropout masks), full-batch AdamW on the Cox
partial likelihood (Efron ties), 60 epochs by default: with tens of training
patients, stopping early regularises the clinical MLP better than training
longer (on the synthetic cohort 30-60 epochs beat 100-150 for every setting
with clinical variables, and cost less).  Inputs: the radiomics columns as they are
plus the encoder columns reduced by PCA to ``deep_components`` scores (fitted
on the training patients; pooled encoder features have hundreds of columns and
a cohort has tens to hundreds of patients), all standardised inside the head;
with ``use_clinical`` also the eight clinical variables, imputed (median/mode)
and standardised with training statistics
(:func:`~petite.headneck.clinical.impute`, :func:`~petite.headneck.clinical.clinical_matrix`).
The statistics are saved with the heads (:func:`petite.prognosis.runs.save_heads`).
:class:`PrognosisHeads` holds the trained heads and that input preparation;
:func:`train_prognosis` fits it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from petite.errors import UserError
from petite.headneck.clinical import VARIABLES, clinical_matrix, impute
from petite.prognosis.features import RADIOMICS
from petite.prognosis.outcome import check_outcome
from petite.prognosis.survival_head import CLINICAL_BRANCHES, SurvivalHead, fit_survival_head, predict_risk


def _check_records(records: Sequence[Mapping[str, Any] | None], patients: Sequence[str] | None = None) -> None:
    """UserError naming the first patient whose record holds none of the clinical :data:`VARIABLES`."""
    for k, record in enumerate(records):
        who = patients[k] if patients is not None else str(k)
        if not isinstance(record, Mapping) or not any(v in record for v in VARIABLES):
            raise UserError(f"patient {who!r} has no parsed clinical record (keys {', '.join(VARIABLES)}); "
                            "import with a HECKTOR clinical CSV that has these columns, or give --clinical-csv")


def _pca_fit(deep: np.ndarray, k: int) -> dict[str, Any]:
    """Mean and the first ``k`` principal axes of ``deep`` (signs fixed: largest loading positive)."""
    mean = deep.mean(axis=0)
    centred = deep - mean
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    k = int(min(k, vt.shape[0]))
    components = vt[:k]
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    return {"mean": mean.tolist(), "components": components.tolist()}


@dataclass
class PrognosisHeads:
    """Trained survival heads (one per seed) and everything needed to apply them to new patients.

    Build with :func:`train_prognosis`; save with :func:`~petite.prognosis.runs.save_heads`, load
    with :func:`~petite.prognosis.runs.load_heads`.
    """

    heads: list[SurvivalHead]
    seeds: list[int]
    feature_names: list[str]
    use_imaging: bool
    use_clinical: bool
    clinical_columns: list[str]
    imputation: dict[str, Any] | None
    scaling: dict[str, Any] | None
    reduction: dict[str, Any] | None
    train_time: np.ndarray
    train_event: np.ndarray
    train_risk: np.ndarray
    options: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def imaging_matrix(self, features: Any) -> np.ndarray | None:
        """The head's imaging input: radiomics columns as given, encoder columns as PCA scores."""
        if not self.use_imaging:
            return None
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise UserError(f"features must have {len(self.feature_names)} columns (as at training), "
                            f"got shape {list(x.shape)}")
        if self.reduction is None:
            return x.astype(np.float32)
        deep_cols = self.reduction["deep_columns"]
        keep = [i for i in range(x.shape[1]) if i not in set(deep_cols)]
        scores = (x[:, deep_cols] - np.asarray(self.reduction["mean"])) @ np.asarray(self.reduction["components"]).T
        return np.concatenate([scores, x[:, keep]], axis=1).astype(np.float32)

    def clinical_input(self, records: Sequence[Mapping[str, Any]] | None,
                       patients: Sequence[str] | None = None) -> np.ndarray | None:
        """The head's clinical input: records imputed and standardised with the training statistics."""
        if not self.use_clinical:
            return None
        if records is None:
            raise UserError("these heads use clinical variables; give the patients' clinical records")
        _check_records(records, patients)
        keyed = {str(k): dict(r) for k, r in enumerate(records)}
        imputed, _ = impute(keyed, reference=self.imputation)
        matrix, _ = clinical_matrix(imputed, self.clinical_columns, scaling=self.scaling)
        return matrix

    def predict(self, features: Any, records: Sequence[Mapping[str, Any]] | None = None,
                patients: Sequence[str] | None = None) -> np.ndarray:
        """Risk (log relative hazard) of each head: ``(n_seeds, n)``."""
        x = self.imaging_matrix(features)
        c = self.clinical_input(records, patients)
        return np.stack([predict_risk(head, x, c) for head in self.heads])


def train_prognosis(features: Any, clinical: Sequence[Mapping[str, Any]] | None, time: Any, event: Any, *,
                    use_clinical: bool = False, use_imaging: bool = True, seeds: Sequence[int] = (0,),
                    names: Sequence[str] | None = None, clinical_columns: Sequence[str] = VARIABLES,
                    deep_components: int | None = 8, hidden: int = 16, dropout: float = 0.3, epochs: int = 60,
                    lr: float = 3e-3, weight_decay: float = 1e-2, clinical_branch: str = "mlp",
                    ridge: float = 0.1, patients: Sequence[str] | None = None) -> PrognosisHeads:
    """Train one survival head per seed on ``features`` (n, d) and/or the ``clinical`` records.

    ``time`` (days, > 0) and ``event`` (0/1) are the training outcome.  ``names``:
    the feature column names (default :data:`~petite.prognosis.features.RADIOMICS` for the last two columns
    and encoder columns before them, as :func:`~petite.prognosis.features.extract_features` makes them);
    encoder columns are reduced to ``deep_components`` PCA scores (``None``:
    no reduction).  ``use_clinical``: fuse the ``clinical_columns`` of the
    records (imputed and standardised, statistics fitted here) through
    ``clinical_branch``: ``"mlp"`` (default) or ``"linear"`` (a ridge-penalised
    linear Cox term, penalty ``ridge``; see :mod:`petite.prognosis.survival_head`).
    See the module docstring.

    Raises:
        UserError: no inputs chosen, mismatched lengths, missing outcome or clinical records, no event.
    """
    if not use_imaging and not use_clinical:
        raise UserError("choose imaging features, clinical variables or both")
    if clinical_branch not in CLINICAL_BRANCHES:
        raise UserError(f"unknown clinical branch {clinical_branch!r}; choose one of {', '.join(CLINICAL_BRANCHES)}")
    if not ridge >= 0:
        raise UserError(f"ridge must be >= 0, got {ridge}")
    t, e = check_outcome(time, event)
    n = t.size
    if n < 2 or e.sum() < 1:
        raise UserError(f"training needs at least 2 patients and 1 relapse, got {n} patients and {int(e.sum())}")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"seeds must be distinct integers, got {seeds}")
    x_raw = np.asarray(features, dtype=np.float64) if use_imaging else np.zeros((n, 0))
    if use_imaging and (x_raw.ndim != 2 or x_raw.shape[0] != n):
        raise UserError(f"features must be (n patients, columns) with n = {n}, got {list(x_raw.shape)}")
    if names is None:
        width = x_raw.shape[1]
        names = [f"f{i}" for i in range(max(width - 2, 0))] + list(RADIOMICS)[: min(2, width)]
    names = list(names)
    if use_imaging and len(names) != x_raw.shape[1]:
        raise UserError(f"{len(names)} feature names for {x_raw.shape[1]} columns")
    reduction = None
    if use_imaging and deep_components:
        deep_cols = [i for i, name in enumerate(names) if name not in RADIOMICS]
        if len(deep_cols) > int(deep_components):
            reduction = {"deep_columns": deep_cols, "n_components": int(deep_components),
                         **_pca_fit(x_raw[:, deep_cols], int(deep_components))}
    imputation = scaling = None
    columns = list(clinical_columns)
    if use_clinical:
        if clinical is None or len(clinical) != n:
            raise UserError(f"use_clinical needs one clinical record per patient ({n})")
        _check_records(clinical, patients)
        _, imputation = impute({str(k): dict(r) for k, r in enumerate(clinical)})
        imputed, _ = impute({str(k): dict(r) for k, r in enumerate(clinical)}, reference=imputation)
        _, scaling = clinical_matrix(imputed, columns)
    model = PrognosisHeads(heads=[], seeds=seeds, feature_names=names if use_imaging else [], use_imaging=use_imaging,
                           use_clinical=use_clinical, clinical_columns=columns, imputation=imputation,
                           scaling=scaling, reduction=reduction, train_time=t, train_event=e,
                           train_risk=np.zeros((0, n)),
                           options={"hidden": int(hidden), "dropout": float(dropout), "epochs": int(epochs),
                                    "lr": float(lr), "weight_decay": float(weight_decay),
                                    "deep_components": deep_components, "clinical_branch": clinical_branch,
                                    "ridge": float(ridge)})
    x = model.imaging_matrix(x_raw) if use_imaging else None
    c = model.clinical_input(clinical, patients) if use_clinical else None
    risks = []
    for seed in seeds:
        head = SurvivalHead(0 if x is None else x.shape[1], 0 if c is None else c.shape[1], hidden=int(hidden),
                            dropout=float(dropout), clinical_branch=clinical_branch, ridge=float(ridge))
        info = fit_survival_head(head, x, c, t, e, epochs=int(epochs), lr=float(lr),
                                 weight_decay=float(weight_decay), seed=seed)
        model.heads.append(head)
        model.history.append({"seed": seed, "final_loss": info["final_loss"], "train_c_index": info["train_c_index"]})
        risks.append(predict_risk(head, x, c))
    model.train_risk = np.stack(risks)
    return model


__all__ = ["PrognosisHeads", "train_prognosis"]
