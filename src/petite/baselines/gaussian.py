"""The Gaussian-filter baseline: ``gain * G_sigma * short``, sigma and gain fitted on training subjects.

Low-count PET is mostly noise on a smooth image, so a Gaussian filter with a
fitted width removes much of it; the gain absorbs any global intensity
difference between short and long scans.  Fitting: for each sigma of a grid
(voxels), the gain that minimises the squared error inside the head masks of
all training subjects has a closed form (``sum f*l / sum f*f``); the pair with
the lowest error wins.  Measured on the study's data (issue 14): sigma ~0.6
voxel and one gain beat every network trained before convergence was enforced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from petite.baselines.fitting import fit_strength_and_gain

#: Filter widths tried by :meth:`GaussianFilter.fit`, in voxels (0 = no smoothing, gain only).
SIGMAS: tuple[float, ...] = (0.0, 0.25, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)


@dataclass(frozen=True)
class GaussianFilter:
    """``gain * gaussian_filter(short, sigma)`` with ``sigma`` in voxels."""

    sigma: float
    gain: float

    def apply(self, short: np.ndarray) -> np.ndarray:
        """The filtered scan, in the short scan's units times the gain."""
        data = np.asarray(short, dtype=np.float64)
        smooth = ndimage.gaussian_filter(data, self.sigma) if self.sigma > 0 else data
        return (self.gain * smooth).astype(np.float32)

    @classmethod
    def fit(cls, shorts: Sequence[np.ndarray], longs: Sequence[np.ndarray], masks: Sequence[np.ndarray],
            sigmas: Sequence[float] = SIGMAS) -> GaussianFilter:
        """The sigma (from ``sigmas``) and gain with the least squared error inside the masks."""
        sigma, gain = fit_strength_and_gain("Gaussian", sigmas, lambda s, sigma: cls(sigma, 1.0).apply(s),
                                            shorts, longs, masks)
        return cls(sigma=sigma, gain=gain)


__all__ = ["SIGMAS", "GaussianFilter"]
