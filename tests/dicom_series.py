"""Small DICOM series written at test time from a volume and its RAS affine (SimpleITK, one file per slice).

Pixel values are stored as int16 with a Rescale Slope and Intercept: the volume must be
``integer * slope + intercept`` (within int16) for the round trip to be exact.
"""

from __future__ import annotations

import locale
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_series(folder: Path, *args: Any, **kwargs: Any) -> list[Path]:
    """Write ``data`` ((X, Y, Z), or (X, Y, Z, T) with ``frame_times``) as one series in ``folder``.

    GDCM's writer sets the process's locale to "C", after which Python reads and writes text as
    ASCII; the locale is restored so later tests see the one the process started with.
    """
    saved = locale.setlocale(locale.LC_ALL)
    try:
        return _write_series(folder, *args, **kwargs)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_series(folder: Path, data: np.ndarray, affine: np.ndarray, *, slope: float = 1.0, intercept: float = 0.0,
                 series_uid: str = "1.2.826.0.1.3680043.2.1125.1", frame_times: Sequence[float] | None = None,
                 skip_slices: Sequence[int] = (), first_instance: int = 1) -> list[Path]:
    """Write ``data`` ((X, Y, Z), or (X, Y, Z, T) with ``frame_times``) as one series in ``folder``.

    ``skip_slices``: slice indices left out (a broken series).  Returns the files written.
    """
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    lps = _LPS @ np.asarray(affine, dtype=np.float64)
    dx, dy = (float(np.linalg.norm(lps[:3, k])) for k in (0, 1))
    row_dir, col_dir = lps[:3, 0] / dx, lps[:3, 1] / dy
    volumes = [data] if data.ndim == 3 else [data[..., t] for t in range(data.shape[-1])]
    times = list(frame_times) if frame_times is not None else [0.0] * len(volumes)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    instance = first_instance
    for t, volume in enumerate(volumes):
        for k in range(volume.shape[2]):
            if k in skip_slices:
                continue
            position = lps[:3, 3] + k * lps[:3, 2]
            # Stored as whole numbers; GDCM divides by the slope when writing a float slice.
            pixels = np.ascontiguousarray(volume[:, :, k].T, dtype=np.float32)  # (rows, columns)
            image = sitk.GetImageFromArray(pixels)
            image.SetSpacing((dx, dy))
            tags = {
                "0008|0060": "PT", "0008|0016": "1.2.840.10008.5.1.4.1.1.128",
                "0008|0018": f"{series_uid}.{instance}", "0020|000d": "1.2.826.0.1.3680043.2.1125.0",
                "0020|000e": series_uid, "0020|0013": str(instance), "0020|0012": str(t + 1),
                "0054|1300": f"{times[t]:g}",
                "0020|0032": "\\".join(f"{v:.6f}" for v in position),
                "0020|0037": "\\".join(f"{v:.6f}" for v in (*row_dir, *col_dir)),
                "0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "1",
                "0028|1053": f"{slope:g}", "0028|1052": f"{intercept:g}",
            }
            for key, value in tags.items():
                image.SetMetaData(key, value)
            path = folder / f"IM{instance:05d}.dcm"
            writer.SetFileName(str(path))
            writer.Execute(image)
            files.append(path)
            instance += 1
    return files
