"""Intensity normalisation: what the network sees, and how its output goes back to the scan's units.

Two modes (``--normalise``):

``input`` (default)
    One factor per subject, taken from the **input**: the mean of the short scan
    inside its own head mask (:func:`petite.data.masks.head_mask`).  Short and long
    scans are both divided by it, so the network sees the true input-to-target
    relation (a gain of 1 where short and long are in the same units, as a
    reconstructed 5-minute frame is), and a prediction times the same factor is
    in the scan's units.  The mean over ~1e5 head voxels is robust to the short
    scan's noise; it needs no target, so ``petite predict`` computes it the same way.
``paper``
    The paper's protocol: each volume scaled to [0, 1] by its **own** minimum and
    maximum.  Kept to reproduce the paper.  Not the default because the short
    scan's maximum is a noisy extreme (1.16-1.23x the long scan's on our scanners):
    dividing each scan by its own maximum invents an input-to-target gain that
    differs per scanner (a "scanner shift" one bias can fix) and removes any real
    calibration difference.  A prediction is mapped back with the target's range
    when a target exists (the paper's evaluation) and with the input's otherwise.

Every item keeps ``<key>_scale`` and ``<key>_offset`` so that
``scan = normalised * scale + offset`` (:func:`denormalise`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from petite.data.masks import head_mask
from petite.errors import UserError

MODES = ("input", "paper")


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`, else a UserError."""
    if mode not in MODES:
        raise UserError(f"normalise must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def input_factor(short: np.ndarray, source: str | Path | None = None) -> float:
    """The ``input`` mode's factor: the short scan's mean inside its own head mask."""
    data = np.asarray(short, dtype=np.float64)
    factor = float(data[head_mask(data, source)].mean())
    if not factor > 0:
        raise UserError(f"the input's mean inside the head is {factor:g}, not positive: cannot normalise", source)
    return factor


def scale_and_offset(volume: np.ndarray, mode: str, factor: float | None = None,
                     source: str | Path | None = None) -> tuple[float, float]:
    """``(scale, offset)`` with ``volume = normalised * scale + offset`` for one volume.

    ``input`` mode: ``(factor, 0)`` (``factor`` from :func:`input_factor`, shared by short and long);
    ``paper`` mode: ``(max - min, min)`` of the volume itself.
    """
    if check_mode(mode) == "input":
        if factor is None:
            raise ValueError("the input mode needs the input's factor")
        return float(factor), 0.0
    lo, hi = float(np.min(volume)), float(np.max(volume))
    if hi <= lo:
        raise UserError("volume is constant; cannot scale it to [0, 1]", source)
    return hi - lo, lo


def denormalise(volume: Any, scale: float, offset: float) -> Any:
    """A normalised volume (numpy or torch) back in the scan's units."""
    return volume * scale + offset


__all__ = ["MODES", "check_mode", "denormalise", "input_factor", "scale_and_offset"]
