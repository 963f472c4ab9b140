"""Effective resolution and noise of a simulated scan, measured against the phantom it was simulated from.

Used to check that simulated scanners differ the way real ones do (and by the tests of the
reconstruction settings): a resolution-modelling (PSF) reconstruction must come out sharper, a
post-filter smoother, more OSEM iterations noisier.

* :func:`effective_fwhm_mm`: the isotropic Gaussian FWHM (mm) that, applied to the true activity
  on the scanner grid (before any blur), best matches the reconstruction inside a mask, with a
  least-squares gain.  It folds the scanner's PSF, the reconstruction's partial recovery of it
  (few iterations, no PSF model) and the post-filter into one number.  The long scan is used:
  its noise is the smaller, so the fit measures blur rather than noise.
* :func:`white_matter_cov`: coefficient of variation inside pure white matter, a noise measure
  (the white-matter core is uniform in the phantom, so what varies there is noise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

# Candidate FWHMs (mm): 0.25 mm steps cover every scanner from the HRRT (~2.5 mm) to blurred
# old scanners with a post-filter and under-converged reconstructions (~15-20 mm).
FWHM_GRID_MM = tuple(np.round(np.arange(0.0, 20.01, 0.25), 2))
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def effective_fwhm_mm(reconstruction: np.ndarray, truth: np.ndarray, mask: np.ndarray,
                      spacing: Sequence[float], fwhms_mm: Sequence[float] = FWHM_GRID_MM) -> float:
    """The FWHM (mm, from ``fwhms_mm``) of the Gaussian that best turns ``truth`` into ``reconstruction``.

    Args:
        reconstruction: a reconstructed scan (any units).
        truth: the noise-free activity on the same grid, before the scanner's blur.
        mask: where to compare (e.g. the head mask of the reconstruction).
        spacing: voxel size (x, y, z) in mm, so that the FWHM is in mm on anisotropic grids.
        fwhms_mm: candidates; the best one with a least-squares gain wins.
    """
    recon = np.asarray(reconstruction, dtype=np.float64)[mask]
    truth = np.asarray(truth, dtype=np.float64)
    best_error, best_fwhm = math.inf, 0.0
    for fwhm in fwhms_mm:
        sigma = [fwhm * _FWHM_TO_SIGMA / s for s in spacing]
        blurred = (ndimage.gaussian_filter(truth, sigma) if fwhm > 0 else truth)[mask]
        gain = float(blurred @ recon) / max(float(blurred @ blurred), 1e-30)
        error = float(((gain * blurred - recon) ** 2).sum())
        if error < best_error:
            best_error, best_fwhm = error, float(fwhm)
    return best_fwhm


def white_matter_cov(scan: np.ndarray, white_core: np.ndarray) -> float:
    """Standard deviation / mean of ``scan`` inside the pure-white-matter mask ``white_core``."""
    values = np.asarray(scan, dtype=np.float64)[white_core]
    if values.size < 2 or values.mean() <= 0:
        raise ValueError("the white-matter mask is empty or the scan is zero there")
    return float(values.std() / values.mean())


__all__ = ["FWHM_GRID_MM", "effective_fwhm_mm", "white_matter_cov"]
