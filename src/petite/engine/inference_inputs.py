"""The user's inputs to whole-volume inference, checked before any model is loaded or volume predicted.

Shared by ``petite evaluate`` / ``petite predict`` and :mod:`petite.api`, so both
refuse the same things with the same one-line :class:`~petite.errors.UserError`:
a sliding-window overlap outside ``[0, 1)`` or a window that is not three sizes, an
unknown SSIM window, an output folder whose place is taken by a file, a missing
input, a folder without NIfTI files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from petite.data.dicom import is_dicom_folder
from petite.errors import UserError
from petite.metrics import WINDOWS

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def check_overlap(overlap: float) -> float:
    """``overlap`` if it is a fraction of the window in ``[0, 1)`` (MONAI's sliding window needs it)."""
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not math.isfinite(overlap) \
            or not 0 <= overlap < 1:
        raise UserError(f"overlap must be in [0, 1), got {overlap!r}")
    return float(overlap)


def check_roi(roi: Sequence[int] | None) -> tuple[int, int, int] | None:
    """A sliding-window size of three positive integers (``None``: the model's or the run's own)."""
    if roi is None:
        return None
    size = tuple(roi) if isinstance(roi, Sequence) and not isinstance(roi, str) else ()
    if len(size) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise UserError(f"roi must be three positive integers like (64, 64, 32), got {roi!r}")
    return size  # type: ignore[return-value]


def check_ssim_window(window: str) -> str:
    """An SSIM window :func:`petite.metrics.compute_metrics` knows (checked before the first prediction)."""
    if window not in WINDOWS:
        raise UserError(f"ssim_window must be one of {', '.join(WINDOWS)}, got {window!r}")
    return window


def _blocking_file(path: Path) -> Path | None:
    """``path`` or the nearest of its existing ancestors when that is a file (no folder can be made there)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def check_output_folder_path(out: str | Path) -> Path:
    """``out`` as a Path if it is, or can become, a folder (files in it may be replaced)."""
    out = Path(out)
    blocking = _blocking_file(out)
    if blocking is not None:
        where = "output" if blocking == out else f"{blocking} (a parent of the output)"
        raise UserError(f"{where} exists and is not a folder", out)
    return out


def prediction_pairs(src: str | Path, dst: str | Path) -> list[tuple[Path, Path]]:
    """``(input, output)`` pairs: one file (or one DICOM series folder) to one NIfTI file, or every NIfTI in
    folder ``src`` into folder ``dst``.  A folder holding DICOM files directly is one series, not a batch."""
    source, target = Path(src), Path(dst)
    if not source.exists():
        raise UserError("input not found", source)
    if source.is_dir() and not is_dicom_folder(source):
        inputs = sorted(p for p in source.iterdir() if p.name.endswith(NIFTI_SUFFIXES))
        if not inputs:
            raise UserError("no .nii or .nii.gz files in the input folder", source)
        check_output_folder_path(target)
        return [(p, target / p.name) for p in inputs]
    if target.is_dir():
        raise UserError("output is a folder; give a file name for one input file or DICOM series", target)
    if not target.name.endswith(NIFTI_SUFFIXES):
        raise UserError("output must be a .nii or .nii.gz file", target)
    check_output_folder_path(target.parent)
    return [(source, target)]


__all__ = ["check_output_folder_path", "check_overlap", "check_roi", "check_ssim_window", "prediction_pairs"]
