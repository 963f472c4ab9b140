"""What the filter baselines share: the least-squares gain and the grid search over a filter's strength."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from petite.errors import UserError


def least_squares_gain(outputs: Sequence[np.ndarray], longs: Sequence[np.ndarray],
                       masks: Sequence[np.ndarray]) -> tuple[float, float]:
    """``(gain, squared error)`` of ``gain * output`` against ``long`` inside the masks, gain in closed form."""
    fl = sum(float((np.asarray(o, np.float64)[m] * np.asarray(t, np.float64)[m]).sum())
             for o, t, m in zip(outputs, longs, masks))
    ff = sum(float((np.asarray(o, np.float64)[m] ** 2).sum()) for o, m in zip(outputs, masks))
    if ff <= 0:
        raise UserError("the filtered short scans are zero inside the head: cannot fit a baseline gain")
    gain = fl / ff
    err = sum(float(((gain * np.asarray(o, np.float64)[m] - np.asarray(t, np.float64)[m]) ** 2).sum())
              for o, t, m in zip(outputs, longs, masks))
    return gain, err


def check_subjects(what: str, *columns: Sequence[object]) -> None:
    """UserError unless every column holds the same, non-zero number of subjects."""
    if not columns[0] or len({len(c) for c in columns}) != 1:
        raise UserError(f"fitting the {what} baseline needs at least one subject with every volume")


def fit_strength_and_gain(what: str, strengths: Sequence[float], smooth: Callable[[np.ndarray, float], np.ndarray],
                          shorts: Sequence[np.ndarray], longs: Sequence[np.ndarray],
                          masks: Sequence[np.ndarray]) -> tuple[float, float]:
    """``(strength, gain)`` from ``strengths`` with the least squared error of ``gain * smooth(short, strength)``
    against the long scans inside the masks (the gain in closed form for each strength)."""
    check_subjects(what, shorts, longs, masks)
    fits = []
    for strength in strengths:
        gain, err = least_squares_gain([smooth(s, strength) for s in shorts], longs, masks)
        fits.append((err, float(strength), gain))
    _, strength, gain = min(fits)
    return strength, gain
