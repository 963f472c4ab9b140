"""Fig. 4 style error maps recomputed from run folders (shared by ``petite demo`` and ``petite report``).

:func:`run_error_maps` takes one test subject of a datalist, predicts it with
each run folder's saved weights (:func:`petite.engine.infer.load_predictor`:
full weights, or the base checkpoint plus the merged adapter; whole volume by
Gaussian-blended sliding windows) and draws
:func:`petite.report.figures.error_map_figure`.  Each prediction's PSNR is
checked against the same subject's number in the run's own
``test_metrics.json``; a difference above 1e-3 dB is logged as a warning (the
figure shows what the saved weights give now).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petite.data.nifti import load_volume, voxel_spacing
from petite.errors import UserError


log = logging.getLogger("petite.report")


def run_error_maps(
    path: str | Path,
    datalist: Mapping[str, Any] | str | Path,
    runs: Mapping[str, str | Path],
    *,
    split: str = "test",
    subject_index: int = 0,
    roi: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    title: str | Callable[[str], str] | None = None,
    short_label: str = "Short scan (input)",
) -> dict[str, Any]:
    """Write the error-map figure of ``runs`` (label -> run folder, in column order) for one subject.

    Args:
        path: the PNG to write.
        datalist: a datalist dictionary (absolute paths) or its JSON file.
        runs: method label -> run folder; columns follow this order.
        split, subject_index: which subject (default: the first test subject).
        roi: sliding-window size; ``None`` uses each run's own (the model's fixed
            input size, else the run's training crop).
        spacing: voxel size for the display aspect; ``None`` reads it from the volume.
        title: the figure title, or a function of the subject id returning it.

    Returns :func:`~petite.report.figures.error_map_figure`'s description plus ``subject``.
    """
    from petite.data.datalist import read_datalist
    from petite.engine.evaluate import input_predictor, iter_scans, model_predictor
    from petite.engine.infer import inference_roi, load_predictor, run_settings
    from petite.metrics import compute_metrics
    from petite.report.figures import error_map_figure

    data = read_datalist(datalist) if not isinstance(datalist, Mapping) else dict(datalist)
    normalise = {run_settings(run)["normalise"] for run in runs.values()}
    if len(normalise) > 1:
        raise UserError(f"the runs were trained with different normalisations ({', '.join(sorted(normalise))})")
    scans = list(iter_scans(data, split, normalise.pop() if normalise else "input"))[subject_index]
    lo, hi = float(scans.long_raw.min()), float(scans.long_raw.max())

    def on_target_scale(volume: np.ndarray) -> np.ndarray:
        return (volume - lo) / (hi - lo)  # the target's [0, 1] scale, where the metrics are computed

    outputs, metrics = {}, {}
    for label, run in runs.items():
        run = Path(run)
        model = load_predictor(run)
        window = roi if roi is not None else inference_roi(model, run_settings(run)["crop_size"])
        pred = model_predictor(model, window, _run_overlap(run))(scans)
        outputs[label] = on_target_scale(pred)
        metrics[label] = compute_metrics(pred, scans.long_raw, mask=scans.head)
        # The same subject's numbers in the run's own test results, as a consistency check.
        saved_path = run / "test_metrics.json"
        saved = json.loads(saved_path.read_text())["subjects"] if saved_path.is_file() else []
        match = [r for r in saved if r["subject"] == scans.subject]
        if match and abs(match[0]["psnr"] - metrics[label]["psnr"]) > 1e-3:
            log.warning("%s: figure PSNR %.4f differs from the run's test PSNR %.4f for %s", label,
                        metrics[label]["psnr"], match[0]["psnr"], scans.subject)
    short = input_predictor(scans)
    metrics[short_label] = compute_metrics(short, scans.long_raw, mask=scans.head)
    if spacing is None:
        item = data[split][subject_index]
        spacing = voxel_spacing(load_volume(item["long"] if "long" in item else item["frames"], ndim=None)[1])
    text = title(scans.subject) if callable(title) else title
    info = error_map_figure(path, on_target_scale(short), outputs, on_target_scale(scans.long_raw), metrics,
                            spacing=spacing, title=text, short_label=short_label)
    info["subject"] = scans.subject
    return info


def _run_overlap(run: Path) -> float:
    """The sliding-window overlap the run was tested with (its config.yaml), so the figure matches its numbers."""
    from petite.documents import read_yaml

    config = run / "config.yaml"
    value = (read_yaml(config, "run config") or {}).get("overlap") if config.is_file() else None
    return float(value) if value is not None else 0.5


__all__ = ["run_error_maps"]
