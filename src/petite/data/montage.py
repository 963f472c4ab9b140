"""A PNG montage of a dataset so a person can look at it: one row per scanner, short vs long scans.

Columns: axial short, axial long, coronal short, coronal long (central slices),
drawn in millimetres so anisotropic voxels keep their true aspect.  Short and
long share one intensity window per row, so the difference seen is noise, not
scaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from petite.atomic import atomic_path
from petite.data.datalist import SPLITS
from petite.data.nifti import load_volume, voxel_spacing


@dataclass(frozen=True)
class MontageRow:
    """One row of the montage: a scanner's (or any dataset's) short and long volume of one subject."""

    label: str
    short: np.ndarray
    long: np.ndarray
    spacing: tuple[float, float, float]


def montage_rows_from_datalists(datasets: Sequence[tuple[str, Path, dict[str, Any]]]) -> list[MontageRow]:
    """One row per ``(label, folder, datalist)``, showing the datalist's first subject (by ID).

    Relative item paths are resolved against ``folder``; a ``frames`` item shows
    frame 0 as the short scan and the mean of the frames as the long scan.
    """
    rows = []
    for label, folder, datalist in datasets:
        items = sorted((item for name in SPLITS for item in datalist.get(name, [])), key=lambda item: item["subject"])
        if not items:
            continue
        item = items[0]
        if "frames" in item:
            frames, affine = load_volume(Path(folder) / item["frames"], ndim=4)
            short, long = frames[..., 0], frames.mean(axis=-1)
        else:
            short, affine = load_volume(Path(folder) / item["short"])
            long, _ = load_volume(Path(folder) / item["long"])
        rows.append(MontageRow(f"{label}: {item['subject']}", short, long, voxel_spacing(affine)))
    return rows


def save_montage(path: str | Path, rows: Sequence[MontageRow]) -> None:
    """Draw ``rows`` and write the PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ("axial short", "axial long", "coronal short", "coronal long")
    figure, axes = plt.subplots(max(len(rows), 1), len(columns), figsize=(3.0 * len(columns), 3.0 * max(len(rows), 1)),
                                squeeze=False, facecolor="black")
    for r, row in enumerate(rows):
        vmax = float(np.percentile(row.long, 99.8)) or 1.0
        panels = (_axial(row.short, row.spacing), _axial(row.long, row.spacing),
                  _coronal(row.short, row.spacing), _coronal(row.long, row.spacing))
        for c, (image, extent) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(image, origin="lower", extent=extent, cmap="gray", vmin=0.0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{row.label}\n{columns[c]}" if c == 0 else columns[c], color="white", fontsize=8)
            ax.axis("off")
    for ax in axes.ravel()[len(rows) * len(columns):]:
        ax.axis("off")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        # tight_layout places the panels before imshow's equal aspect shrinks them, so a two-line title
        # over a full-height panel can end above the figure; a tight bounding box keeps all of it.
        figure.savefig(tmp, format="png", dpi=80, facecolor="black", bbox_inches="tight", pad_inches=0.1)
    plt.close(figure)


def _axial(volume: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, list[float]]:
    image = volume[:, :, volume.shape[2] // 2].T  # rows: y (posterior at the bottom), columns: x
    return image, [0.0, volume.shape[0] * spacing[0], 0.0, volume.shape[1] * spacing[1]]


def _coronal(volume: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, list[float]]:
    image = volume[:, volume.shape[1] // 2, :].T  # rows: z (inferior at the bottom), columns: x
    return image, [0.0, volume.shape[0] * spacing[0], 0.0, volume.shape[2] * spacing[2]]
