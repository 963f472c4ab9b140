"""Image-quality metrics for PET-to-PET restoration: PSNR, SSIM (3D) and NRMSE, whole-volume and in the head.

:func:`compute_metrics` is what every evaluation in petite reports.  Prediction
and target are in the **target's units** (a prediction is never rescaled by its
own range); both are mapped by the target's min-max to the target's [0, 1]
scale, which is the paper's scale, and the metrics below are computed there,
over the whole volume (the paper's numbers, background included) and inside a
head mask (:func:`petite.data.masks.head_mask` of the target: what a reader of
the scan looks at), plus the prediction's mean in the background.

The individual metrics follow the reference code of the paper (BRIEF section 3)
and agree with scikit-image configured the same way (``tests/test_metrics.py``):

* **PSNR** ``= 10 log10(data_range**2 / MSE)`` over the whole volume, background
  included.  Volumes are expected on the [0, 1] scale the pipeline works on, so
  the default ``data_range=1`` gives ``-10 log10(MSE)``.  Equals
  ``skimage.metrics.peak_signal_noise_ratio(target, pred, data_range=...)``.
* **NRMSE** ``= RMSE / (target.max() - target.min())``.  Equals
  ``skimage.metrics.normalized_root_mse(target, pred, normalization="min-max")``.
* **SSIM** in 3D, window size 7, ``K1=0.01``, ``K2=0.03``, data range
  ``target.max()`` by default.  The local statistics are computed with separable
  filters (:mod:`scipy.ndimage`), and the SSIM map is averaged over the interior
  only, cropping ``(win_size - 1) // 2 = 3`` voxels at every border, exactly as
  ``skimage.metrics.structural_similarity(target, pred, win_size=7,
  data_range=target.max(), K1=0.01, K2=0.03, gaussian_weights=...,
  use_sample_covariance=...)``.

  - ``window="uniform"`` (default, the reference code's): a flat 7^3 box.
  - ``window="gaussian"``: Gaussian weights with sigma 1.5 truncated at 3.5
    sigma (an 11-tap kernel, radius 5), ``reflect`` border mode - what
    scikit-image does with ``gaussian_weights=True`` (its ``win_size=7`` then
    only sets the border crop).
  - ``sample_covariance=True`` (default, scikit-image's default and therefore
    the reference code's): variances and covariance are multiplied by
    ``N / (N - 1)`` with ``N = win_size**3 = 343``.  ``False`` gives the
    population covariance of Wang et al. (2004).

Every function accepts numpy arrays or torch tensors (any device; they are
copied to the CPU) of identical shape.  Leading singleton dimensions, as in a
``(1, D, H, W)`` pipeline item or a ``(1, 1, D, H, W)`` batch of one, are
dropped.  Computation is in float64.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy import ndimage

Window = Literal["uniform", "gaussian"]
WINDOWS: tuple[str, ...] = ("uniform", "gaussian")

SSIM_WIN_SIZE = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03
GAUSSIAN_SIGMA = 1.5
# scikit-image truncates its SSIM Gaussian at 3.5 sigma (11 taps for sigma 1.5, as in Wang et al.).
GAUSSIAN_TRUNCATE = 3.5


def as_volume(x: Any) -> np.ndarray:
    """Return ``x`` (numpy array or torch tensor) as a float64 numpy array.

    Leading singleton dimensions beyond three are dropped, so a ``(1, D, H, W)``
    item or ``(1, 1, D, H, W)`` batch of one becomes ``(D, H, W)``.
    """
    if hasattr(x, "detach"):  # torch.Tensor (including MONAI MetaTensor) without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def _pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = as_volume(pred), as_volume(target)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from target shape {t.shape}")
    if p.size == 0:
        raise ValueError("empty volumes")
    return p, t


def mse(pred: Any, target: Any) -> float:
    """Mean squared error over every voxel."""
    p, t = _pair(pred, target)
    return float(np.mean((p - t) ** 2))


def psnr(pred: Any, target: Any, data_range: float | None = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range**2 / MSE)``.

    ``data_range=1`` (default) is for volumes scaled to [0, 1], giving
    ``-10 log10(MSE)``; ``None`` takes ``target.max() - target.min()``.
    Identical volumes give ``inf``.
    """
    p, t = _pair(pred, target)
    if data_range is None:
        data_range = float(t.max() - t.min())
    err = float(np.mean((p - t) ** 2))
    if err == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / err))


def nrmse(pred: Any, target: Any) -> float:
    """Root mean squared error divided by the target's range ``max - min``."""
    p, t = _pair(pred, target)
    denom = float(t.max() - t.min())
    if denom == 0.0:
        raise ValueError("NRMSE is undefined for a constant target")
    return float(np.sqrt(np.mean((p - t) ** 2)) / denom)


def ssim(
    pred: Any,
    target: Any,
    window: Window = "uniform",
    data_range: float | None = None,
    win_size: int = SSIM_WIN_SIZE,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
    sigma: float = GAUSSIAN_SIGMA,
    sample_covariance: bool = True,
    mask: Any = None,
) -> float:
    """Mean structural similarity of two 3D (or 2D) volumes.

    See the module docstring for the exact definition.  ``data_range=None``
    uses ``target.max()`` as the reference code does.  The mean is over the
    interior, ``(win_size - 1) // 2`` voxels away from every border, so every
    axis must be at least ``win_size`` long; with a boolean ``mask`` of the
    volume's shape, over the interior voxels inside the mask.
    """
    p, t = _pair(pred, target)
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be a positive odd integer, got {win_size}")
    if min(t.shape) < win_size:
        raise ValueError(f"every axis must be at least win_size={win_size} long, got shape {t.shape}")
    if data_range is None:
        data_range = float(t.max())

    if window == "gaussian":

        def smooth(a: np.ndarray) -> np.ndarray:
            return ndimage.gaussian_filter(a, sigma=sigma, truncate=GAUSSIAN_TRUNCATE, mode="reflect")

    else:

        def smooth(a: np.ndarray) -> np.ndarray:
            return ndimage.uniform_filter(a, size=win_size, mode="reflect")

    n = win_size**t.ndim
    cov_norm = n / (n - 1) if sample_covariance else 1.0
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2

    # Only the interior enters the mean: filter the whole volume (the border mode
    # matters for the Gaussian's wider support), then keep the cropped block to
    # halve the memory of the remaining arithmetic.
    pad = (win_size - 1) // 2
    inner = tuple(slice(pad, s - pad) for s in t.shape)
    ux = smooth(t)[inner]  # target plays skimage's im1; SSIM is symmetric anyway
    uy = smooth(p)[inner]
    vx = cov_norm * (smooth(t * t)[inner] - ux * ux)
    vy = cov_norm * (smooth(p * p)[inner] - uy * uy)
    vxy = cov_norm * (smooth(t * p)[inner] - ux * uy)

    num = (2.0 * ux * uy + c1) * (2.0 * vxy + c2)
    den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    if mask is None:
        return float(np.mean(num / den))
    inside = np.asarray(as_volume(mask), dtype=bool)[inner]
    if not inside.any():
        raise ValueError("the mask holds no voxel of the SSIM interior")
    return float(np.mean((num / den)[inside]))


def compute_metrics(pred: Any, target: Any, mask: Any = None, ssim_window: Window = "uniform") -> dict[str, float]:
    """PSNR, SSIM and NRMSE of ``pred`` against ``target``, both in the target's units.

    Both are mapped by the target's min-max to the target's [0, 1] scale (the paper's
    scale; on an already [0, 1]-scaled target this changes nothing), then PSNR (peak 1),
    SSIM (data range 1) and NRMSE are computed over the whole volume: ``psnr``, ``ssim``,
    ``nrmse``.  With a boolean ``mask`` (the head), the same inside it (``psnr_masked``,
    ``ssim_masked``, ``nrmse_masked``) and the prediction's mean outside it
    (``background``, on the same scale: 0 is the target's minimum; NaN if the mask is everything).
    """
    p, t = _pair(pred, target)
    lo, hi = float(t.min()), float(t.max())
    if hi == lo:
        raise ValueError("the metrics are undefined for a constant target")
    p, t = (p - lo) / (hi - lo), (t - lo) / (hi - lo)
    out = {"psnr": psnr(p, t, data_range=1.0), "ssim": ssim(p, t, window=ssim_window, data_range=1.0),
           "nrmse": nrmse(p, t)}
    if mask is not None:
        m = np.asarray(as_volume(mask), dtype=bool)
        if m.shape != t.shape:
            raise ValueError(f"mask shape {m.shape} differs from the volumes' {t.shape}")
        if not m.any():
            raise ValueError("the head mask holds no voxel")
        err = float(np.mean((p[m] - t[m]) ** 2))
        out["psnr_masked"] = float("inf") if err == 0 else float(-10.0 * np.log10(err))
        out["ssim_masked"] = ssim(p, t, window=ssim_window, data_range=1.0, mask=m)
        out["nrmse_masked"] = float(np.sqrt(err))
        out["background"] = float(p[~m].mean()) if not m.all() else float("nan")
    return out


def scale_unit(x: Any) -> np.ndarray:
    """Min-max scale a volume to [0, 1] by its own range (the pipeline's pre-processing)."""
    arr = as_volume(x)
    lo, hi = float(arr.min()), float(arr.max())
    if hi == lo:
        raise ValueError("a constant volume cannot be scaled to [0, 1]")
    return (arr - lo) / (hi - lo)
