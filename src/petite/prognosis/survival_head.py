"""The survival head: imaging features (and clinical variables) -> Cox risk, and its full-batch training.

* :class:`SurvivalHead` - imaging features (pooled encoder features) -> risk,
  optionally fused with a clinical branch: an MLP (the "tabular encoder",
  default) or a ridge-penalised linear Cox term.  MLP fusion is by
  concatenation: ``risk = w . [A f, relu(B2 relu(B1 c))]`` (dropout omitted),
  one linear layer without bias (the Cox likelihood ignores a constant); the
  linear branch adds ``beta . c`` to the imaging risk, with ``ridge / 2 *
  |beta|^2`` added to the loss (the classical penalised Cox model, which on
  eight clinical variables and tens to hundreds of patients is the baseline
  an MLP has to beat).  Imaging features
  are standardised inside the head with the training mean and std (buffers set
  by :func:`fit_survival_head`); the clinical matrix arrives standardised from
  :func:`petite.headneck.clinical.clinical_matrix`.
* :func:`fit_survival_head` - full-batch AdamW on :func:`~petite.prognosis.cox.cox_loss`,
  from a fresh initialisation (and dropout masks) drawn from ``seed`` (the Cox
  likelihood couples all subjects, so full batches are exact for cohorts of hundreds).
  A clinical-only linear head is a convex problem and is solved to its optimum
  with L-BFGS instead (no epochs, no seed dependence).
* :func:`predict_risk` - the head's risk scores as numpy.

Conventions as in :mod:`petite.prognosis.metrics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from petite.prognosis.cox import cox_loss
from petite.prognosis.metrics import concordance_index


#: Clinical branches of :class:`SurvivalHead`: a two-layer MLP, or a ridge-penalised linear Cox term.
CLINICAL_BRANCHES: tuple[str, ...] = ("mlp", "linear")


class SurvivalHead(nn.Module):
    """Risk from imaging features, optionally fused with standardised clinical variables.

    Imaging branch: dropout then a linear projection to ``hidden`` (a linear
    probe: pooled encoder features of a few hundred patients do not support
    more).  Clinical branch: a two-layer ReLU MLP with dropout.  The branch
    outputs are concatenated and a bias-free linear layer gives the risk.
    ``in_features`` may be 0 (clinical only) and ``clinical_features`` 0
    (imaging only), not both.  ``forward(features, clinical=None) -> (B,)``.
    """

    def __init__(self, in_features: int, clinical_features: int = 0, hidden: int = 32, dropout: float = 0.3,
                 clinical_branch: str = "mlp", ridge: float = 0.1) -> None:
        super().__init__()
        if in_features < 0 or clinical_features < 0 or in_features + clinical_features == 0:
            raise ValueError("SurvivalHead needs imaging features, clinical features or both")
        if clinical_branch not in CLINICAL_BRANCHES:
            raise ValueError(f"clinical_branch must be one of {', '.join(CLINICAL_BRANCHES)}, got {clinical_branch!r}")
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        self.in_features, self.clinical_features = in_features, clinical_features
        self.hidden, self.dropout = hidden, dropout
        self.clinical_branch, self.ridge = clinical_branch, float(ridge)
        mlp = clinical_branch == "mlp" and clinical_features > 0
        self.imaging = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, hidden)) if in_features else None
        self.tabular = (nn.Sequential(nn.Linear(clinical_features, hidden), nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout))
                        if mlp else None)
        # The linear Cox term: beta . c, no bias (the partial likelihood ignores a constant).
        self.clinical_linear = (nn.Linear(clinical_features, 1, bias=False)
                                if clinical_features and not mlp else None)
        branches = bool(in_features) + mlp
        self.risk = nn.Linear(hidden * branches, 1, bias=False) if branches else None
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.register_buffer("feature_std", torch.ones(in_features))

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-ready)."""
        return {"in_features": self.in_features, "clinical_features": self.clinical_features,
                "hidden": self.hidden, "dropout": self.dropout, "clinical_branch": self.clinical_branch,
                "ridge": self.ridge}

    def penalty(self) -> torch.Tensor:
        """``ridge / 2 * |beta|^2`` of the linear clinical term (0 for the MLP branch)."""
        if self.clinical_linear is None:
            return torch.zeros(())
        return 0.5 * self.ridge * self.clinical_linear.weight.square().sum()

    def forward(self, features: torch.Tensor | None, clinical: torch.Tensor | None = None) -> torch.Tensor:
        parts = []
        if self.imaging is not None:
            if features is None:
                raise ValueError("this head needs imaging features")
            parts.append(self.imaging((features - self.feature_mean) / self.feature_std))
        if (self.tabular is not None or self.clinical_linear is not None) and clinical is None:
            raise ValueError("this head needs the clinical matrix")
        if self.tabular is not None:
            parts.append(self.tabular(clinical))
        risk = self.risk(torch.cat(parts, dim=1)).squeeze(1) if self.risk is not None else None
        if self.clinical_linear is not None:
            linear = self.clinical_linear(clinical).squeeze(1)
            risk = linear if risk is None else risk + linear
        assert risk is not None
        return risk


def _tensor(values: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    return None if values is None else torch.as_tensor(np.asarray(values), dtype=dtype)


def fit_survival_head(head: SurvivalHead, features: Any, clinical: Any, time: Any, event: Any, *,
                      epochs: int = 200, lr: float = 3e-3, weight_decay: float = 1e-2, seed: int = 0,
                      ties: str = "efron") -> dict[str, Any]:
    """Train ``head`` in place on one full batch with :func:`cox_loss` and AdamW.

    The weights are re-initialised and the dropout masks drawn from ``seed``
    (the global torch RNG is left as it was), and the imaging-feature
    standardisation is fitted on ``features``, so the result depends only on the
    data and the arguments.  ``features`` (n, in_features) or ``None``;
    ``clinical`` (n, clinical_features) standardised, or ``None``.  Returns
    ``{"loss": [per epoch], "final_loss", "train_c_index"}``.
    """
    x = _tensor(features) if head.in_features else None
    c = _tensor(clinical) if head.clinical_features else None
    t = _tensor(time, torch.float64)
    e = _tensor(event, torch.float64)
    if x is not None:
        head.feature_mean.copy_(x.mean(0))
        head.feature_std.copy_(torch.where(x.std(0) > 1e-8, x.std(0), torch.ones_like(x.std(0))))
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for module in head.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        head.train()
        if head.imaging is None and head.clinical_linear is not None:
            # Clinical-only linear Cox: convex, solved to the optimum from beta = 0.
            nn.init.zeros_(head.clinical_linear.weight)
            optimiser_lbfgs = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=200, tolerance_grad=1e-9,
                                                tolerance_change=1e-12, line_search_fn="strong_wolfe")

            def closure() -> torch.Tensor:
                optimiser_lbfgs.zero_grad()
                loss = cox_loss(head(x, c), t, e, ties=ties) + head.penalty()
                loss.backward()
                losses.append(float(loss.detach()))
                return loss

            optimiser_lbfgs.step(closure)
        else:
            # The ridge term is the linear branch's only penalty (AdamW's decay would add a second one).
            linear = [] if head.clinical_linear is None else list(head.clinical_linear.parameters())
            others = [p for p in head.parameters() if all(p is not q for q in linear)]
            groups = [{"params": others, "weight_decay": weight_decay}]
            if linear:
                groups.append({"params": linear, "weight_decay": 0.0})
            optimiser = torch.optim.AdamW(groups, lr=lr)
            for _ in range(int(epochs)):
                optimiser.zero_grad()
                loss = cox_loss(head(x, c), t, e, ties=ties) + head.penalty()
                loss.backward()
                optimiser.step()
                losses.append(float(loss.detach()))
    risk = predict_risk(head, features, clinical)
    return {"loss": losses, "final_loss": losses[-1] if losses else None,
            "train_c_index": concordance_index(np.asarray(time), risk, np.asarray(event))}


def predict_risk(head: SurvivalHead, features: Any, clinical: Any = None) -> np.ndarray:
    """The head's risk scores (n,) as float64 numpy, in eval mode without gradients."""
    head.eval()
    with torch.no_grad():
        x = _tensor(features) if head.in_features else None
        c = _tensor(clinical) if head.clinical_features else None
        return head(x, c).double().numpy()


__all__ = ["CLINICAL_BRANCHES", "SurvivalHead", "fit_survival_head", "predict_risk"]
