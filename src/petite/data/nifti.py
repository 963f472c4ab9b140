"""Reading and writing NIfTI volumes, with the validation users need.

Every loader here raises :class:`petite.errors.UserError` naming the file for
the problems a user can cause (missing, unreadable, wrong dimensionality,
NaN/Inf, all-zero), and every writer is atomic.  :func:`load_volume` is the one
reader: a folder holding one DICOM series is read by :mod:`petite.data.dicom`
and checked the same way, so every command that takes a NIfTI file takes such a folder.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from petite.atomic import atomic_path
from petite.data.dicom import read_dicom_series
from petite.errors import UserError

#: How one volume is taken from dynamic frames: the short scan is the first frame, the long scan their mean (ADNI).
FRAME_CHOICES = ("first", "mean")


def load_volume(path: str | Path, ndim: int | None = 3, *, what: str = "volume", canonical: bool = False,
                allow_zero: bool = False, check_values: bool = True,
                frames: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI file, or a folder holding one DICOM series, as ``(float32 array, 4x4 affine)``.

    ``ndim`` is the required number of dimensions (3 for a volume, 4 for
    dynamic frames; ``None`` accepts either).  Trailing singleton dimensions
    beyond ``ndim`` are squeezed.  ``frames`` (``"first"`` or ``"mean"``) turns
    dynamic frames into the one volume ``ndim=3`` asks for: the first frame (a
    short scan) or their mean (a long scan).  ``canonical`` reorients to the closest RAS+
    orientation (as MONAI's ``Orientation("RAS")`` does for whole axes);
    ``allow_zero`` accepts an all-zero volume (a label without a tumour);
    ``check_values=False`` accepts NaN/Inf and all-zero data (for tools that report them).
    ``what`` names the file's role in error messages ("CT", "label", ...).

    Raises:
        UserError: the file is missing or unreadable, has the wrong dimensionality,
            holds NaN/Inf, or (unless ``allow_zero``) is all zeros.
    """
    path = Path(path)
    role = "" if what == "volume" else f"{what} "  # "CT file not found", "file not found"
    if frames is not None and frames not in FRAME_CHOICES:
        raise UserError(f"frames must be one of {', '.join(FRAME_CHOICES)}, got {frames!r}")
    if path.is_dir():
        img = nib.Nifti1Image(*read_dicom_series(path))
    elif not path.is_file():
        raise UserError(f"{role}file not found", path)
    else:
        img = None
    try:
        if img is None:
            img = nib.load(str(path))
        if canonical:
            img = nib.as_closest_canonical(img)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:  # nibabel raises many types for corrupt files
        reading = f"cannot read {what} as NIfTI" if role else "cannot read NIfTI"
        raise UserError(f"{reading} ({type(err).__name__}: {err})", path) from None
    while ndim is not None and data.ndim > ndim and data.shape[-1] == 1:
        data = data[..., 0]
    if ndim == 3 and data.ndim == 4 and frames is not None:
        data = data[..., 0] if frames == "first" else data.mean(axis=-1, dtype=np.float64).astype(np.float32)
    if ndim is not None and data.ndim != ndim:
        kind = {3: "a 3D volume", 4: "4D dynamic frames"}.get(ndim, f"{ndim}D data")
        hint = " (dynamic frames: choose the first frame or their mean, --frames first|mean)" \
            if ndim == 3 and data.ndim == 4 else ""
        raise UserError(f"{role}expected {kind}, got shape {data.shape}{hint}", path)
    if check_values and not np.all(np.isfinite(data)):
        raise UserError(f"{role}contains NaN or Inf values", path)
    if check_values and not allow_zero and not np.any(data):
        raise UserError(f"{role}volume is all zeros", path)
    return data, np.asarray(img.affine, dtype=np.float64)


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing (mm) along the three array axes of ``affine``."""
    return tuple(float(v) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))


def make_affine(spacing: tuple[float, float, float], shape: tuple[int, int, int]) -> np.ndarray:
    """RAS affine with the given spacing whose world origin is the volume centre."""
    affine = np.diag([*spacing, 1.0]).astype(np.float64)
    affine[:3, 3] = -0.5 * (np.asarray(shape) - 1) * np.asarray(spacing)
    return affine


def save_volume(path: str | Path, data: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header | None = None) -> None:
    """Atomically write ``data`` (3D or 4D, saved as float32) with ``affine``.

    Passing the ``header`` of an input volume keeps its metadata (units,
    descriptions) while the data type and shape follow ``data``.
    """
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine, header=header)
    img.set_data_dtype(np.float32)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
