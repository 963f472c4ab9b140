"""The non-local-means baseline: scikit-image's 3D NLM, its strength and a gain fitted on training subjects.

Why NLM: it is the strongest classical 3D denoiser in a maintained, permissively
licensed package on PyPI (scikit-image, BSD).  BM4D (``bm4d`` on PyPI) is
stronger but its licence forbids commercial use, which petite's Apache-2.0 users
may need.  Speed on 2 CPU cores: ~1.3 s for a 64x64x45 volume, ~3.3 s for
96x96x68 (patch 3, search distance 3, fast mode).

Fitting: the filter strength ``h`` is tried as multiples of the noise level
scikit-image estimates on each scan (:data:`H_FACTORS`), the gain is the closed-form
least-squares one inside the head masks, and the pair with the lowest error wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from petite.baselines.fitting import fit_strength_and_gain

#: Filter strengths tried, as multiples of each scan's estimated noise standard deviation.
H_FACTORS: tuple[float, ...] = (0.15, 0.25, 0.4, 0.6, 0.8, 1.0)  # below 0.4 too: it won on the demo data
PATCH_SIZE = 3
PATCH_DISTANCE = 3


def noise_level(volume: np.ndarray) -> float:
    """A robust noise standard deviation: 1.4826 x the median absolute deviation of the volume minus its
    Gaussian-smoothed self (sigma 1 voxel), over the voxels above 10 % of the maximum.

    (scikit-image's ``estimate_sigma`` needs PyWavelets, one more dependency for one number.)
    """
    data = np.asarray(volume, dtype=np.float64)
    detail = data - ndimage.gaussian_filter(data, 1.0)
    inside = data > 0.1 * data.max()
    values = detail[inside] if inside.any() else detail.ravel()
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def _denoise(short: np.ndarray, h_factor: float) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    data = np.asarray(short, dtype=np.float32)
    sigma = noise_level(data)
    return denoise_nl_means(data, h=h_factor * sigma, sigma=sigma, patch_size=PATCH_SIZE,
                            patch_distance=PATCH_DISTANCE, fast_mode=True, channel_axis=None).astype(np.float64)


@dataclass(frozen=True)
class NonLocalMeans:
    """``gain * NLM(short)`` with strength ``h_factor`` times the scan's estimated noise level."""

    h_factor: float
    gain: float

    def apply(self, short: np.ndarray) -> np.ndarray:
        return (self.gain * _denoise(short, self.h_factor)).astype(np.float32)

    @classmethod
    def fit(cls, shorts: Sequence[np.ndarray], longs: Sequence[np.ndarray], masks: Sequence[np.ndarray],
            h_factors: Sequence[float] = H_FACTORS) -> NonLocalMeans:
        """The strength (from ``h_factors``) and gain with the least squared error inside the masks."""
        h, gain = fit_strength_and_gain("NLM", h_factors, _denoise, shorts, longs, masks)
        return cls(h_factor=h, gain=gain)


__all__ = ["H_FACTORS", "NonLocalMeans"]
