"""The survival head: imaging features (and clinical variables) -> Cox risk, and its full-batch training.

* :class:`SurvivalHead` - imaging features (pooled encoder features) -> risk,
  optionally fused with a clinical MLP (the "tabular encoder").  Fusion is by
  concatenation: ``risk = w . [A f, relu(B2 relu(B1 c))]`` (dropout omitted),
  one linear layer without bias (the Cox likelihood ignores a constant).  Imaging features
  are standardised inside the head with the training mean and std (buffers set
  by :func:`fit_survival_head`); the clinical matrix arrives standardised from
  :func:`petite.headneck.clinical.clinical_matrix`.
* :func:`fit_survival_head` - full-batch AdamW on :func:`~petite.prognosis.cox.cox_loss`,
  from a fresh initialisation (and dropout masks) drawn from ``seed`` (the Cox
  likelihood couples all subjects, so full batches are exact for cohorts of hundreds).
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


class SurvivalHead(nn.Module):
    """Risk from imaging features, optionally fused with standardised clinical variables.

    Imaging branch: dropout then a linear projection to ``hidden`` (a linear
    probe: pooled encoder features of a few hundred patients do not support
    more).  Clinical branch: a two-layer ReLU MLP with dropout.  The branch
    outputs are concatenated and a bias-free linear layer gives the risk.
    ``in_features`` may be 0 (clinical only) and ``clinical_features`` 0
    (imaging only), not both.  ``forward(features, clinical=None) -> (B,)``.
    """

    def __init__(self, in_features: int, clinical_features: int = 0, hidden: int = 32, dropout: float = 0.3) -> None:
        super().__init__()
        if in_features < 0 or clinical_features < 0 or in_features + clinical_features == 0:
            raise ValueError("SurvivalHead needs imaging features, clinical features or both")
        self.in_features, self.clinical_features = in_features, clinical_features
        self.hidden, self.dropout = hidden, dropout
        self.imaging = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, hidden)) if in_features else None
        self.tabular = (nn.Sequential(nn.Linear(clinical_features, hidden), nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout))
                        if clinical_features else None)
        self.risk = nn.Linear(hidden * (bool(in_features) + bool(clinical_features)), 1, bias=False)
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.register_buffer("feature_std", torch.ones(in_features))

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-ready)."""
        return {"in_features": self.in_features, "clinical_features": self.clinical_features,
                "hidden": self.hidden, "dropout": self.dropout}

    def forward(self, features: torch.Tensor | None, clinical: torch.Tensor | None = None) -> torch.Tensor:
        parts = []
        if self.imaging is not None:
            if features is None:
                raise ValueError("this head needs imaging features")
            parts.append(self.imaging((features - self.feature_mean) / self.feature_std))
        if self.tabular is not None:
            if clinical is None:
                raise ValueError("this head needs the clinical matrix")
            parts.append(self.tabular(clinical))
        return self.risk(torch.cat(parts, dim=1)).squeeze(1)


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
        optimiser = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
        head.train()
        for _ in range(int(epochs)):
            optimiser.zero_grad()
            loss = cox_loss(head(x, c), t, e, ties=ties)
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


__all__ = ["SurvivalHead", "fit_survival_head", "predict_risk"]
