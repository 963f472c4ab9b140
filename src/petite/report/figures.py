"""Paper-style figures from volumes (numpy arrays on the [0, 1] scale).

:func:`error_map_figure` draws the layout of the paper's Fig. 4 for one subject:

    row 1:  short scan | method 1 | method 2 | ... | long scan (reference)
    row 2:  |short - long| | |method 1 - long| | ...  | colour bar

Every image of row 1 shares one grey scale, every error map of row 2 shares
one colour scale (so the maps can be compared by eye), and each panel title
carries the PSNR (and SSIM) of that volume against the long scan.  The
function takes plain arrays, so ``petite demo`` and a later ``petite report``
can both call it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petite.atomic import atomic_path
from petite.errors import UserError

# Axis that is sliced for each view: volumes are (x, y, z) in RAS order.
VIEWS = {"axial": 2, "coronal": 1, "sagittal": 0}


def pick_slice(volume: np.ndarray, view: str = "axial") -> int:
    """A representative slice: the one holding the most activity of ``volume`` along ``view``."""
    axis = VIEWS[view]
    other = tuple(a for a in range(3) if a != axis)
    return int(np.argmax(np.asarray(volume, dtype=np.float64).sum(axis=other)))


def _slice(volume: np.ndarray, view: str, index: int) -> np.ndarray:
    """A 2D slice in display orientation (anterior / superior at the top)."""
    plane = np.take(np.asarray(volume, dtype=np.float32), index, axis=VIEWS[view])
    return np.rot90(plane)


def _aspect(spacing: Sequence[float] | None, view: str) -> float:
    """Pixel aspect (height / width) of a slice after :func:`_slice`'s rotation."""
    if spacing is None:
        return 1.0
    axes = [a for a in range(3) if a != VIEWS[view]]
    return float(spacing[axes[1]]) / float(spacing[axes[0]])


def error_map_figure(
    path: str | Path,
    short: np.ndarray,
    outputs: Mapping[str, np.ndarray],
    long: np.ndarray,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    *,
    short_label: str = "Short scan (input)",
    long_label: str = "Long scan (reference)",
    title: str | None = None,
    view: str = "axial",
    slice_index: int | None = None,
    spacing: Sequence[float] | None = None,
    error_max: float | None = None,
    dpi: int = 150,
) -> dict[str, Any]:
    """Write a Fig. 4 style comparison (images over absolute error maps) to a PNG.

    Args:
        path: the PNG to write (atomically).
        short, long: the input and reference volumes, shape (x, y, z).
        outputs: method label -> predicted volume, in column order.
        metrics: label -> ``{"psnr": .., "ssim": ..}`` (or with ``psnr_masked``/``ssim_masked``,
            shown instead: inside the head) for the panel titles; the short scan's entry is
            looked up under ``short_label``.  Missing entries are computed here with
            :func:`petite.metrics.compute_metrics` (whole volume).
        view: ``axial``, ``coronal`` or ``sagittal``; ``slice_index`` defaults to
            the slice of the long scan holding the most activity.
        spacing: voxel size (x, y, z) so anisotropic voxels display with the right aspect.
        error_max: top of the shared error colour scale (default: the 99.9th
            percentile of all error maps on the slice shown).

    Returns a description of what was drawn (columns, slice, error scale, metrics).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from petite.metrics import compute_metrics

    if view not in VIEWS:
        raise UserError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    volumes = {short_label: np.asarray(short), **{k: np.asarray(v) for k, v in outputs.items()}}
    long = np.asarray(long)
    for label, volume in volumes.items():
        if volume.shape != long.shape or volume.ndim != 3:
            raise UserError(f"{label}: volume shape {volume.shape} differs from the long scan's {long.shape}")
    if not outputs:
        raise UserError("no method output to draw")
    index = pick_slice(long, view) if slice_index is None else int(slice_index)
    if not 0 <= index < long.shape[VIEWS[view]]:
        raise UserError(f"slice {index} outside the volume ({long.shape[VIEWS[view]]} slices along {view})")

    scores: dict[str, dict[str, float]] = {}
    for label, volume in volumes.items():
        given = dict((metrics or {}).get(label, {}))
        scores[label] = given if "psnr" in given else {**compute_metrics(volume, long), **given}

    ref = _slice(long, view, index)
    images = {label: _slice(volume, view, index) for label, volume in volumes.items()}
    errors = {label: np.abs(image - ref) for label, image in images.items()}
    vmax_img = float(max(ref.max(), *(im.max() for im in images.values()))) or 1.0
    if error_max is None:
        error_max = float(np.percentile(np.concatenate([e.ravel() for e in errors.values()]), 99.9)) or 1e-6
    aspect = _aspect(spacing, view)

    n_cols = len(volumes) + 1
    height, width = ref.shape
    panel = 2.1
    fig_w = panel * n_cols
    fig_h = panel * 2 * max(height * aspect / width, 0.5) + (0.55 if title else 0.25)
    fig, axes = plt.subplots(2, n_cols, figsize=(fig_w, fig_h), squeeze=False,
                             gridspec_kw={"wspace": 0.04, "hspace": 0.22})
    labels = [*volumes, long_label]
    for col, label in enumerate(labels):
        top, bottom = axes[0, col], axes[1, col]
        if label == long_label:
            top.imshow(ref, cmap="gray", vmin=0, vmax=vmax_img, aspect=aspect, interpolation="nearest")
            top.set_title(f"{long_label}\ntarget", fontsize=8.5)
            bottom.axis("off")
            continue
        score = scores[label]
        top.imshow(images[label], cmap="gray", vmin=0, vmax=vmax_img, aspect=aspect, interpolation="nearest")
        if "psnr_masked" in score:  # inside the head: what methods are ranked on
            top.set_title(f"{label}\n{score['psnr_masked']:.2f} dB / {score['ssim_masked']:.3f} (head)", fontsize=8.5)
        else:
            ssim = f" / {score['ssim']:.3f}" if "ssim" in score else ""
            top.set_title(f"{label}\n{score['psnr']:.2f} dB{ssim}", fontsize=8.5)
        err_im = bottom.imshow(errors[label], cmap="inferno", vmin=0, vmax=error_max, aspect=aspect,
                               interpolation="nearest")
        bottom.set_title(f"|{'input' if label == short_label else label} - long|", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    axes[0, 0].set_ylabel("image", fontsize=9)
    axes[1, 0].set_ylabel("error map", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.03, right=0.99, bottom=0.02, top=0.86 if title else 0.92)
    # The colour bar of the shared error scale sits in the empty cell under the long scan.
    corner = axes[1, -1]
    box = corner.get_position()
    cax = fig.add_axes((box.x0 + 0.1 * box.width, box.y0 + 0.08 * box.height, 0.09 * box.width, 0.84 * box.height))
    bar = fig.colorbar(err_im, cax=cax)
    bar.ax.tick_params(labelsize=7)
    bar.set_label("absolute error ([0, 1] scale)", fontsize=7.5)

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", facecolor="white")
    plt.close(fig)
    return {"path": str(path), "grid": [2, n_cols], "columns": labels, "view": view, "slice": index, "error_max": error_max,
            "metrics": {k: {m: float(v) for m, v in s.items()} for k, s in scores.items()}}
