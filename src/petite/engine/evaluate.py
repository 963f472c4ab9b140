"""Evaluation on whole volumes: per-subject PSNR/SSIM/NRMSE, mean and std, CSV and JSON."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn
from tqdm import tqdm

from petite.atomic import write_json, write_text
from petite.data.transforms import make_dataset
from petite.engine.infer import predict_volume
from petite.metrics import compute_metrics

METRICS = ("psnr", "ssim", "nrmse")


def evaluate_split(
    model: nn.Module | None,
    datalist: dict[str, Any],
    split: str,
    roi: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    ssim_window: str = "uniform",
    progress: bool = True,
    on_prediction: Callable[[str, Any, Any, Any], None] | None = None,
) -> list[dict[str, Any]]:
    """Metrics of ``model`` on every subject of ``split`` (on the [0, 1] scale).

    ``model=None`` scores the short scan itself against the long scan (the
    do-nothing reference).  ``on_prediction(subject, short, pred, long)`` is
    called with numpy volumes, e.g. to draw figures.
    """
    dataset = make_dataset(datalist, split, train=False, cache_rate=0.0)
    rows = []
    for item in tqdm(dataset, desc=f"evaluate {split}", disable=not progress, leave=False):
        short = item["short"][None]
        pred = short if model is None else predict_volume(model, short, roi, overlap, sw_batch_size)
        pred_np = pred[0, 0].detach().cpu().numpy().clip(0, 1)
        long_np = item["long"][0].numpy()
        rows.append({"subject": item["subject"], **compute_metrics(pred_np, long_np, ssim_window=ssim_window)})
        if on_prediction is not None:
            on_prediction(item["subject"], short[0, 0].numpy(), pred_np, long_np)
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation (ddof 0) of each metric over subjects."""
    out: dict[str, Any] = {"n": len(rows)}
    for metric in METRICS:
        values = np.array([row[metric] for row in rows], dtype=np.float64)
        out[metric] = float(values.mean()) if len(values) else float("nan")
        out[f"{metric}_std"] = float(values.std()) if len(values) else float("nan")
    return out


def write_results(out_dir: str | Path, rows: list[dict[str, Any]], name: str = "metrics") -> dict[str, Any]:
    """Write ``<name>.csv`` (one row per subject) and ``<name>.json`` (rows + summary); return the summary."""
    out_dir = Path(out_dir)
    summary = summarize(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["subject", *METRICS])
    writer.writeheader()
    writer.writerows(rows)
    write_text(out_dir / f"{name}.csv", buffer.getvalue())
    write_json(out_dir / f"{name}.json", {"summary": summary, "subjects": rows})
    return summary
