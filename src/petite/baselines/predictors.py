"""The baselines as predictors: fitted on one split's subjects, evaluated like any network.

A predictor maps a subject's :class:`~petite.engine.evaluate.Scans` to a
prediction in the scan's units (:func:`petite.engine.evaluate.evaluate` scores it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from petite.baselines.calibration import LinearCalibration
from petite.baselines.gaussian import GaussianFilter
from petite.baselines.nlm import NonLocalMeans
from petite.engine.evaluate import Predictor, Scans


def fit_gaussian(subjects: Sequence[Scans]) -> GaussianFilter:
    """The Gaussian filter (sigma, gain) fitted on ``subjects`` inside their head masks."""
    return GaussianFilter.fit([s.short_raw for s in subjects], [s.long_raw for s in subjects],
                              [s.head for s in subjects])


def fit_nlm(subjects: Sequence[Scans]) -> NonLocalMeans:
    """Non-local means (strength, gain) fitted on ``subjects`` inside their head masks."""
    return NonLocalMeans.fit([s.short_raw for s in subjects], [s.long_raw for s in subjects],
                             [s.head for s in subjects])


def filter_predictor(baseline: GaussianFilter | NonLocalMeans) -> Predictor:
    """A fitted filter applied to each subject's short scan."""

    def predict(scans: Scans) -> np.ndarray:
        return baseline.apply(scans.short_raw)

    return predict


def fit_calibration(subjects: Sequence[Scans], predict: Predictor) -> LinearCalibration:
    """The linear calibration of ``predict``'s outputs fitted on ``subjects`` (inside the input's head)."""
    return LinearCalibration.fit([predict(s) for s in subjects], [s.long_raw for s in subjects],
                                 [s.input_head for s in subjects])


def calibrated_predictor(calibration: LinearCalibration, predict: Predictor) -> Predictor:
    """``predict`` followed by the calibration (the head from the input: no target needed)."""

    def calibrated(scans: Scans) -> np.ndarray:
        return calibration.apply(predict(scans), scans.input_head)

    return calibrated


__all__ = ["calibrated_predictor", "filter_predictor", "fit_calibration", "fit_gaussian", "fit_nlm"]
