"""The head (or body) mask: where metrics are measured and where the input's intensity factor is taken.

Whole-volume PSNR/SSIM of PET are dominated by the background (4-5 dB above
head-only PSNR for the same image, BRIEF section 3), so petite reports every
metric inside the head too.  The mask must be the same for every method, so it
is computed from one volume (the target, i.e. the long scan, for metrics; the
input for its own intensity factor), never from a prediction:

1. smooth the volume with a Gaussian of sigma :data:`SMOOTH_VOXELS` voxels (noise
   and isolated hot voxels do not decide the outline);
2. keep voxels above :data:`THRESHOLD` (10 %) of the smoothed volume's 99.5th
   percentile (FDG brain PET: grey matter is the hottest tissue, and scalp and
   white matter sit well above 10 % of it, the air outside well below);
3. keep the largest connected component and fill its holes (ventricles,
   low-uptake regions are inside the head).

The smoothing moves a sharp outline outward by up to ~1.3 sigma (about a voxel): the
mask includes a thin rim of background around the head, where spill-over errors are.

The mask is a boolean array of the volume's shape.  An empty mask (a constant
or all-zero volume) is a :class:`~petite.errors.UserError`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from petite.errors import UserError

SMOOTH_VOXELS = 1.0
THRESHOLD = 0.10
PERCENTILE = 99.5


def head_mask(volume: np.ndarray, source: str | Path | None = None) -> np.ndarray:
    """The head/body mask of a 3D volume (see the module docstring).

    Raises:
        UserError: the volume is constant or nothing lies above the threshold (``source`` names the file).
    """
    data = np.asarray(volume, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"head_mask expects a 3D volume, got shape {data.shape}")
    smooth = ndimage.gaussian_filter(data, SMOOTH_VOXELS)
    peak = float(np.percentile(smooth, PERCENTILE))
    if not np.isfinite(peak) or peak <= float(smooth.min()):
        raise UserError("volume is constant: no head or body to measure", source)
    above = smooth > THRESHOLD * peak
    labels, count = ndimage.label(above)
    if count == 0:
        raise UserError("empty head mask: nothing above 10 % of the volume's peak", source)
    largest = 1 + int(np.argmax(ndimage.sum_labels(above, labels, index=np.arange(1, count + 1))))
    return ndimage.binary_fill_holes(labels == largest)


__all__ = ["PERCENTILE", "SMOOTH_VOXELS", "THRESHOLD", "head_mask"]
