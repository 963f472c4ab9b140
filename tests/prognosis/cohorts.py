"""Small survival data sets the prognosis tests share."""

from __future__ import annotations

import numpy as np


def tied_cohort(seed: int, n: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer times in 1..8 (many ties), ~30 % censored, risks with some ties."""
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 9, n).astype(float)
    event = (rng.random(n) < 0.7).astype(float)
    risk = np.round(rng.normal(size=n), 1)
    return time, event, risk
