"""A linear intensity calibration of a model's predictions, fitted on the target scanner's subjects.

"No-FT + calibration": the source model unchanged, followed by three numbers
fitted on the target's fine-tuning subjects - a gain and an offset inside the
head and a constant outside it.  It is what a single output bias (BitFit's
largest gain, measured in issue 14) can do; a fine-tuning method whose gain over
No-FT this baseline recovers has not adapted anything but the intensity scale.
The head is the input's head mask (computed from the short scan: no target is
needed at test time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from petite.baselines.fitting import check_subjects


@dataclass(frozen=True)
class LinearCalibration:
    """``gain * prediction + offset`` inside the head, ``background`` outside."""

    gain: float
    offset: float
    background: float

    def apply(self, prediction: np.ndarray, head: np.ndarray) -> np.ndarray:
        """The calibrated prediction; ``head`` is the input's head mask."""
        pred = np.asarray(prediction, dtype=np.float64)
        out = np.where(head, self.gain * pred + self.offset, self.background)
        return out.astype(np.float32)

    @classmethod
    def fit(cls, predictions: Sequence[np.ndarray], longs: Sequence[np.ndarray],
            heads: Sequence[np.ndarray]) -> LinearCalibration:
        """Least squares inside the heads (gain, offset) and the mean target outside them (background)."""
        check_subjects("calibration", predictions, longs, heads)
        p_in = np.concatenate([np.asarray(p, np.float64)[h] for p, h in zip(predictions, heads)])
        t_in = np.concatenate([np.asarray(t, np.float64)[h] for t, h in zip(longs, heads)])
        t_out = np.concatenate([np.asarray(t, np.float64)[~h] for t, h in zip(longs, heads)])
        design = np.stack([p_in, np.ones_like(p_in)], axis=1)
        (gain, offset), *_ = np.linalg.lstsq(design, t_in, rcond=None)
        return cls(gain=float(gain), offset=float(offset), background=float(t_out.mean()) if t_out.size else 0.0)


__all__ = ["LinearCalibration"]
