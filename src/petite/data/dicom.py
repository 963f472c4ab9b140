"""Reading one DICOM series from a folder, as :func:`petite.data.nifti.load_volume` returns a NIfTI file.

Why SimpleITK (ITK's GDCM reader): it is maintained, ships wheels for every platform, groups files
into series by their Series Instance UID (``ImageSeriesReader.GetGDCMSeriesIDs``), and applies each
slice's Rescale Slope/Intercept when it decodes the pixels, including compressed transfer syntaxes
that pydicom alone cannot decode without extra plugins.  The geometry is computed here from the
standard tags (Image Position/Orientation (Patient), Pixel Spacing), because this module must also
check what ITK silently accepts: missing slices, uneven spacing and several frames per position.

The result is nibabel's convention: an array indexed ``(column, row, slice)`` and a RAS+ affine
(DICOM's patient coordinates are LPS+, so the first two world axes change sign).

A dynamic series (the same slice positions acquired several times, as ADNI's six 5-minute FDG frames)
comes back 4D with the frames on the last axis, ordered by Frame Reference Time, Temporal Position
Identifier, Acquisition Number, Acquisition Time or Instance Number (the first that tells a position's
files apart).  :func:`petite.data.nifti.load_volume` takes the first frame (``frames="first"``, the short
scan) or the mean of the frames (``"mean"``, the long scan) when one volume is wanted.

Every problem a user can cause raises :class:`~petite.errors.UserError` naming the folder: an empty
folder, no readable DICOM series, several series in one folder, a file without pixel data, slices of
different sizes or orientations, missing slices or uneven spacing, uneven frames.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petite.errors import UserError

#: Relative tolerance on the distance between neighbouring slices (missing slice = a gap twice as large).
SPACING_RTOL = 0.01
#: Tags ordering the files of one slice position in time, most specific first.
TIME_TAGS = (
    ("0054|1300", "Frame Reference Time"),
    ("0020|0100", "Temporal Position Identifier"),
    ("0020|9128", "Temporal Position Index"),
    ("0020|0012", "Acquisition Number"),
    ("0008|0032", "Acquisition Time"),
    ("0020|0013", "Instance Number"),
)
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_PREAMBLE = 128  # a DICOM Part 10 file: 128-byte preamble, then b"DICM"


def _sitk():  # noqa: ANN202 - SimpleITK has no type stubs; imported late, it takes a second to load
    import SimpleITK as sitk

    return sitk


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a DICOM Part 10 file (preamble + ``DICM``) or a ``.dcm`` file."""
    if not path.is_file() or path.name.startswith("."):
        return False
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as handle:
            handle.seek(_PREAMBLE)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding at least one DICOM file directly (a series, maybe a bad one)."""
    path = Path(path)
    return path.is_dir() and any(is_dicom_file(p) for p in path.iterdir())


@dataclass
class _Slice:
    path: Path
    position: np.ndarray  # Image Position (Patient), LPS mm
    orientation: np.ndarray  # Image Orientation (Patient): row direction, column direction
    spacing: tuple[float, float]  # (between rows, between columns), mm
    size: tuple[int, int]  # (columns, rows)
    times: dict[str, float]


def _numbers(text: str) -> list[float]:
    return [float(v) for v in text.replace(" ", "").strip("\\").split("\\") if v]


def _time_value(tag: str, text: str) -> float:
    text = text.strip()
    if tag == "0008|0032" and text:  # HHMMSS.frac -> seconds
        hours, minutes, seconds = float(text[:2] or 0), float(text[2:4] or 0), float(text[4:] or 0)
        return hours * 3600 + minutes * 60 + seconds
    return float(text)


def _read_slice(path: Path, folder: Path) -> _Slice:
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise UserError(f"cannot read {path.name} as DICOM", folder) from None
    if reader.GetDimension() == 3 and reader.GetSize()[2] > 1:
        raise UserError(f"{path.name} is a multi-frame DICOM file; petite reads series of single-slice files",
                        folder)
    for tag, name in (("0020|0032", "Image Position (Patient)"), ("0020|0037", "Image Orientation (Patient)")):
        if not reader.HasMetaDataKey(tag):
            raise UserError(f"{path.name} has no {name} (0020,{tag[5:]}); cannot place the slice", folder)
    try:
        position = np.array(_numbers(reader.GetMetaData("0020|0032")), dtype=np.float64)
        orientation = np.array(_numbers(reader.GetMetaData("0020|0037")), dtype=np.float64)
        if reader.HasMetaDataKey("0028|0030"):
            spacing = tuple(_numbers(reader.GetMetaData("0028|0030")))
        else:  # ITK's reading of the slice's spacing (it falls back to Imager Pixel Spacing)
            spacing = (float(reader.GetSpacing()[1]), float(reader.GetSpacing()[0]))
    except ValueError:
        raise UserError(f"{path.name}: malformed position, orientation or pixel spacing", folder) from None
    if position.shape != (3,) or orientation.shape != (6,) or len(spacing) != 2:
        raise UserError(f"{path.name}: malformed position, orientation or pixel spacing", folder)
    times = {}
    for tag, _name in TIME_TAGS:
        if reader.HasMetaDataKey(tag):
            try:
                times[tag] = _time_value(tag, reader.GetMetaData(tag))
            except ValueError:
                pass  # an unparsable time tag cannot order frames; another tag may
    size = (int(reader.GetSize()[0]), int(reader.GetSize()[1]))
    return _Slice(path, position, orientation, (float(spacing[0]), float(spacing[1])), size, times)


def _series_files(folder: Path) -> list[Path]:
    sitk = _sitk()
    if not folder.is_dir():
        raise UserError("DICOM folder not found", folder)
    entries = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    if not entries:
        raise UserError("empty folder: no DICOM files", folder)
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise UserError(f"no DICOM series found among {len(entries)} file(s) (none is a DICOM image with pixel data)",
                        folder)
    if len(series) > 1:
        shown = ", ".join(series[:3]) + (", ..." if len(series) > 3 else "")
        raise UserError(f"holds {len(series)} DICOM series ({shown}); put each series in its own folder", folder)
    files = [Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])]
    # GDCM leaves out files it cannot decode as images; a slice dropped silently would be a hole in the volume.
    named = {f.name for f in files}
    left_out = [p for p in sorted(entries) if p.name not in named and is_dicom_file(p)]
    if left_out:
        more = f" (and {len(left_out) - 1} more)" if len(left_out) > 1 else ""
        raise UserError(f"{left_out[0].name}{more}: no pixel data, or not a readable DICOM image", folder)
    return files


def _frames(slices: list[_Slice], normal: np.ndarray, folder: Path) -> list[list[_Slice]]:
    """The series' slices as frames, each sorted along ``normal``; positions must repeat evenly in time."""
    by_position: dict[float, list[_Slice]] = defaultdict(list)
    for item in slices:
        by_position[round(float(item.position @ normal), 3)].append(item)
    counts = {len(group) for group in by_position.values()}
    if len(counts) > 1:
        fewest = min(by_position, key=lambda k: len(by_position[k]))
        raise UserError(f"uneven frames: slice positions appear {min(counts)} to {max(counts)} times "
                        f"(e.g. {len(by_position[fewest])} at {fewest:g} mm); a frame is missing slices", folder)
    n_frames = counts.pop()
    if n_frames > 1:
        order = next((tag for tag, _ in TIME_TAGS if all(
            len({s.times.get(tag) for s in group}) == n_frames and None not in {s.times.get(tag) for s in group}
            for group in by_position.values())), None)
        if order is None:
            raise UserError(f"each slice position appears {n_frames} times and no time tag "
                            f"({', '.join(name for _, name in TIME_TAGS)}) tells the frames apart", folder)
        for group in by_position.values():
            group.sort(key=lambda s: s.times[order])
    positions = sorted(by_position)
    return [[by_position[p][t] for p in positions] for t in range(n_frames)]


def _check_spacing(frame: list[_Slice], normal: np.ndarray, folder: Path) -> None:
    offsets = np.array([s.position @ normal for s in frame])
    gaps = np.diff(offsets)
    median = float(np.median(gaps))
    uneven = np.abs(gaps - median) > SPACING_RTOL * median
    if np.any(uneven):
        k = int(np.argmax(uneven))
        raise UserError(f"missing slices or inconsistent slice spacing: {gaps[k]:.3g} mm between slices {k} and "
                        f"{k + 1} ({frame[k].path.name}, {frame[k + 1].path.name}) where the others are "
                        f"{median:.3g} mm", folder)
    # Slices must lie along the normal (no shear): every position on the line through the first.
    step = (frame[-1].position - frame[0].position) / (len(frame) - 1)
    drift = max(float(np.linalg.norm(s.position - (frame[0].position + k * step))) for k, s in enumerate(frame))
    if drift > SPACING_RTOL * median + 1e-3:
        raise UserError(f"slice positions do not lie on a line (off by {drift:.3g} mm); a sheared or mixed stack",
                        folder)


def _pixels(item: _Slice, folder: Path) -> np.ndarray:
    sitk = _sitk()
    try:
        # GDCM applies this slice's Rescale Slope and Intercept while decoding, in float precision.
        image = sitk.ReadImage(str(item.path), sitk.sitkFloat32, imageIO="GDCMImageIO")
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise UserError(f"{item.path.name} has no readable pixel data ({first[:120]})", folder) from None
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array = array.reshape(array.shape[-2:])  # (rows, columns)
    return array.T  # (columns, rows): nibabel's first axis runs along a row


def read_dicom_series(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The one DICOM series in ``folder`` as ``(float32 array, 4x4 RAS affine)``.

    The array is ``(X, Y, Z)`` for a static series and ``(X, Y, Z, T)`` for a dynamic one (frames in
    time order); ``X`` runs along a row (DICOM columns), ``Y`` down the columns, ``Z`` along the slice
    normal in increasing position.  Values are rescaled (slope, intercept) per slice.

    Raises:
        UserError: naming ``folder`` and the problem (see the module docstring).
    """
    folder = Path(folder)
    files = _series_files(folder)
    slices = [_read_slice(path, folder) for path in files]
    first = slices[0]
    for item in slices[1:]:
        if item.size != first.size:
            raise UserError(f"slices of different sizes: {item.path.name} is {item.size[0]}x{item.size[1]}, "
                            f"{first.path.name} {first.size[0]}x{first.size[1]}", folder)
        if not np.allclose(item.orientation, first.orientation, atol=1e-4):
            raise UserError(f"slices of different orientations ({item.path.name}, {first.path.name})", folder)
        if not np.allclose(item.spacing, first.spacing, rtol=1e-4):
            raise UserError(f"slices of different pixel spacings ({item.path.name}, {first.path.name})", folder)
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row_dir, col_dir)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise UserError(f"{first.path.name}: Image Orientation (Patient) is not two unit, orthogonal vectors", folder)
    frames = _frames(slices, normal, folder)
    if len(frames[0]) < 2:
        raise UserError("a single slice, not a volume", folder)
    for frame in frames:
        _check_spacing(frame, normal, folder)
    data = np.stack([np.stack([_pixels(s, folder) for s in frame], axis=-1) for frame in frames], axis=-1)
    if data.shape[-1] == 1:
        data = data[..., 0]
    row_spacing, col_spacing = first.spacing  # DICOM Pixel Spacing: between rows, then between columns
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing  # +1 along X = next column of a row
    lps[:3, 1] = col_dir * row_spacing  # +1 along Y = next row
    lps[:3, 2] = (frames[0][-1].position - frames[0][0].position) / (len(frames[0]) - 1)
    lps[:3, 3] = frames[0][0].position
    return np.ascontiguousarray(data, dtype=np.float32), _LPS_TO_RAS @ lps


__all__ = ["is_dicom_file", "is_dicom_folder", "read_dicom_series"]
