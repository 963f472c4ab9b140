"""Real data -> a validated datalist (``petite prepare``).

Three ways to describe a scanner's subjects:

* a folder of 4D dynamic NIfTI files, one per subject, ``<subject>.nii[.gz]``
  with ``n_frames`` frames on the last axis (ADNI FDG: six 5-minute frames;
  the pipeline takes frame 0 as the short scan and the mean as the long scan);
* a folder of pairs ``<subject>_short.nii[.gz]`` and ``<subject>_long.nii[.gz]``;
* a CSV with a ``subject`` column and either a ``frames`` column or ``short``
  and ``long`` columns (paths relative to the CSV's folder), and optionally a
  ``split`` column naming each subject's split explicitly.

Wherever a NIfTI file goes, a folder holding one DICOM series may go instead
(:mod:`petite.data.dicom`): ``--frames-dir`` takes sub-folders ``<subject>/``
holding a dynamic series (the rule is the same: short = first frame, long = mean
of the frames), ``--pairs-dir`` sub-folders ``<subject>_short/`` and
``<subject>_long/`` holding one static series each.

Every file is loaded once and checked (readable, 3D or 4D as expected, frame
count, short/long grid agreement, finite, not all zero) before anything is
written; the first problem raises :class:`~petite.errors.UserError` naming the
file.  The datalist is written atomically, last.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from petite.data.datalist import (
    DEFAULT_SPLIT_SIZES,
    SPLITS,
    assign_splits,
    build_datalist,
    write_datalist,
)
from petite.data.dicom import is_dicom_folder
from petite.data.nifti import load_volume
from petite.errors import UserError

log = logging.getLogger(__name__)

N_FRAMES = 6  # ADNI FDG protocol: six 5-minute frames, 0-30 min
NIFTI_SUFFIXES = (".nii.gz", ".nii")
# Affines of a short/long pair must agree to this tolerance (mm); headers written by
# different tools differ in float rounding only.
AFFINE_ATOL = 1e-3


@dataclass
class Source:
    """Subjects found in the input, before validation.

    ``items`` maps a subject to its file paths (``{"frames": ...}`` or
    ``{"short": ..., "long": ...}``); ``splits`` is set when the input named
    each subject's split.
    """

    items: dict[str, dict[str, str]]
    splits: dict[str, list[str]] | None = None
    origin: Path = field(default_factory=Path)


def _nifti_stem(path: Path) -> str | None:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _nifti_files(folder: Path) -> list[tuple[str, Path]]:
    """``(stem, path)`` of the NIfTI files and DICOM series sub-folders directly in ``folder``."""
    if not folder.is_dir():
        raise UserError("folder not found", folder)
    found = []
    for path in sorted(folder.iterdir()):
        stem = path.name if is_dicom_folder(path) else _nifti_stem(path)
        if stem is not None and not stem.startswith("."):  # skip hidden/temporary files
            found.append((stem, path))
    if not found:
        raise UserError("no .nii or .nii.gz files (or DICOM series sub-folders) found", folder)
    return found


def scan_frames_dir(folder: str | Path) -> Source:
    """One 4D file per subject; the subject ID is the file name without ``.nii[.gz]``."""
    folder = Path(folder)
    items: dict[str, dict[str, str]] = {}
    for stem, path in _nifti_files(folder):
        if stem in items:
            raise UserError(f"subject {stem!r} has two files (also {Path(items[stem]['frames']).name})", path)
        items[stem] = {"frames": str(path)}
    return Source(items=items, origin=folder)


def scan_pairs_dir(folder: str | Path) -> Source:
    """Files ``<subject>_short.nii[.gz]`` and ``<subject>_long.nii[.gz]``; other files are ignored."""
    folder = Path(folder)
    pairs: dict[str, dict[str, str]] = {}
    for stem, path in _nifti_files(folder):
        for key in ("short", "long"):
            if stem.endswith(f"_{key}") and len(stem) > len(key) + 1:
                subject = stem[: -len(key) - 1]
                entry = pairs.setdefault(subject, {})
                if key in entry:
                    raise UserError(f"subject {subject!r} has two {key} files (also {Path(entry[key]).name})", path)
                entry[key] = str(path)
    if not pairs:
        raise UserError("no <subject>_short.nii[.gz] / <subject>_long.nii[.gz] files found", folder)
    for subject, entry in pairs.items():
        for key, other in (("short", "long"), ("long", "short")):
            if key not in entry:
                raise UserError(f"subject {subject!r} has a {other} scan but no {key} scan", entry[other])
    return Source(items=dict(sorted(pairs.items())), origin=folder)


def scan_csv(csv_path: str | Path) -> Source:
    """Rows of ``subject`` + ``frames`` or ``short,long`` (+ optional ``split``).

    Relative paths are resolved against the CSV's folder.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise UserError("CSV file not found", csv_path)
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: tolerate a BOM
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = [(c or "").strip() for c in (reader.fieldnames or [])]
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"cannot read CSV ({err})", csv_path) from None
    if not rows:
        raise UserError("CSV has no rows", csv_path)
    if "subject" not in columns:
        raise UserError(f"CSV needs a 'subject' column, got columns {columns}", csv_path)
    has_frames = "frames" in columns
    has_pairs = "short" in columns and "long" in columns
    if has_frames == has_pairs:
        raise UserError("CSV needs either a 'frames' column or 'short' and 'long' columns (not both)", csv_path)
    keys = ("frames",) if has_frames else ("short", "long")
    has_split = "split" in columns

    items: dict[str, dict[str, str]] = {}
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    split_of: dict[str, str] = {}
    for line, raw in enumerate(rows, start=2):  # line 1 is the header
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        subject = row.get("subject", "")
        if not subject:
            raise UserError(f"line {line}: empty subject", csv_path)
        entry = {}
        for key in keys:
            if not row.get(key):
                raise UserError(f"line {line}: subject {subject!r} has no {key!r} path", csv_path)
            path = Path(row[key]).expanduser()
            entry[key] = str(path if path.is_absolute() else csv_path.parent / path)
        if has_split:
            split = row.get("split", "")
            if split not in SPLITS:
                raise UserError(f"line {line}: split {split!r} of {subject!r} is not one of {', '.join(SPLITS)}", csv_path)
            if subject in split_of:
                raise UserError(
                    f"line {line}: subject {subject!r} appears in both {split_of[subject]!r} and {split!r}", csv_path
                )
            split_of[subject] = split
            splits[split].append(subject)
        elif subject in items:
            raise UserError(f"line {line}: subject {subject!r} is listed twice", csv_path)
        items[subject] = entry
    return Source(items=items, splits={k: sorted(v) for k, v in splits.items()} if has_split else None, origin=csv_path)


def validate_item(subject: str, item: dict[str, str], n_frames: int = N_FRAMES) -> dict[str, Any]:
    """Load an item's files once and check them; return a summary (shape, spacing).

    Raises :class:`UserError` naming the offending file.
    """
    if "frames" in item:
        path = Path(item["frames"])
        data, affine = load_volume(path, ndim=4)  # missing, unreadable, 3D, NaN/Inf, all-zero
        if data.shape[3] != n_frames:
            raise UserError(f"expected {n_frames} frames, got {data.shape[3]} (shape {data.shape})", path)
        # The short scan is frame 0: an empty first frame would give an all-zero input.
        if not np.any(data[..., 0]):
            raise UserError("first frame (the short scan) is all zeros", path)
        return {"shape": tuple(data.shape[:3]), "affine": affine}
    short_path, long_path = Path(item["short"]), Path(item["long"])
    short, short_affine = load_volume(short_path, ndim=3)
    short_shape = short.shape
    del short  # keep at most one volume in memory
    long, long_affine = load_volume(long_path, ndim=3)
    if long.shape != short_shape:
        raise UserError(f"long scan shape {long.shape} differs from short scan shape {short_shape} ({short_path.name})", long_path)
    if not np.allclose(long_affine, short_affine, atol=AFFINE_ATOL):
        raise UserError(f"long scan affine differs from the short scan's ({short_path.name})", long_path)
    return {"shape": tuple(short_shape), "affine": short_affine}


def prepare_datalist(
    source: Source,
    out: str | Path,
    scanner: str,
    seed: int = 0,
    split_sizes: Sequence[int] = DEFAULT_SPLIT_SIZES,
    n_frames: int = N_FRAMES,
) -> dict[str, Any]:
    """Validate every file of ``source``, then atomically write the datalist to ``out``.

    Splits come from the source when it names them, otherwise from
    :func:`petite.data.datalist.assign_splits` with ``seed`` and
    ``split_sizes``.  Returns the datalist written.
    """
    out = Path(out)
    if not source.items:
        raise UserError("no subjects found", source.origin)
    for i, (subject, item) in enumerate(source.items.items(), start=1):
        summary = validate_item(subject, item, n_frames=n_frames)
        log.debug("%d/%d %s ok: shape %s", i, len(source.items), subject, summary["shape"])
    splits = source.splits if source.splits is not None else assign_splits(list(source.items), split_sizes, seed)
    used = {s for names in splits.values() for s in names}
    if len(used) < len(source.items):
        log.info("%d of %d subjects are not in any split (split sizes %s)", len(source.items) - len(used), len(source.items), tuple(split_sizes))
    datalist = build_datalist(source.items, splits, scanner=scanner, seed=seed, root=out.parent)
    write_datalist(out, datalist)
    return datalist
