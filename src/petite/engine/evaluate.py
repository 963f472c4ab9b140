"""Evaluation on whole volumes: per-subject metrics in the scan's units, whole-volume and inside the head.

Every method - a network, the short scan itself, a classical baseline - is a
*predictor*: a function from one subject's :class:`Scans` to a prediction in
the scan's units.  :func:`evaluate` scores any predictor the same way
(:func:`petite.metrics.compute_metrics` against the long scan, with the long
scan's head mask), so tables compare like with like.

A network sees normalised volumes (:mod:`petite.data.normalise`); its output is
mapped back with the input's factor (``input`` mode) or, in the paper's mode,
with the target's range (the paper's evaluation protocol).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from petite.atomic import write_json, write_text
from petite.data.masks import head_mask
from petite.data.normalise import denormalise
from petite.data.transforms import make_dataset
from petite.engine.infer import predict_volume
from petite.metrics import compute_metrics

#: Reported per subject; the ``_masked`` ones (inside the head) rank methods.
METRICS = ("psnr", "ssim", "nrmse", "psnr_masked", "ssim_masked", "nrmse_masked", "background")


@dataclass
class Scans:
    """One subject as the evaluation needs it.

    ``short``: the network's input, normalised, ``(1, 1, D, H, W)``; ``short_raw`` /
    ``long_raw``: the scans in their units (RAS); ``head``: the long scan's head mask
    (where metrics are measured); ``input_head``: the short scan's (usable without a target).
    """

    subject: str
    short: torch.Tensor
    short_raw: np.ndarray
    long_raw: np.ndarray
    head: np.ndarray
    input_head: np.ndarray
    normalise: str
    short_scale: float
    short_offset: float
    long_scale: float
    long_offset: float

    def to_units(self, normalised: np.ndarray) -> np.ndarray:
        """A network output back in the scan's units: the input's factor, or (paper) the target's range."""
        if self.normalise == "paper":
            return denormalise(np.clip(normalised, 0.0, 1.0), self.long_scale, self.long_offset)
        return denormalise(np.clip(normalised, 0.0, None), self.short_scale, self.short_offset)


def iter_scans(datalist: dict[str, Any], split: str, normalise: str = "input") -> Iterator[Scans]:
    """The subjects of ``split``, loaded one at a time."""
    for item in make_dataset(datalist, split, train=False, cache_rate=0.0, normalise=normalise):
        short, long = item["short"][0].numpy(), item["long"][0].numpy()
        short_raw = denormalise(short, item["short_scale"], item["short_offset"]).astype(np.float32)
        long_raw = denormalise(long, item["long_scale"], item["long_offset"]).astype(np.float32)
        yield Scans(
            subject=item["subject"], short=item["short"][None], short_raw=short_raw, long_raw=long_raw,
            head=head_mask(long_raw, f"subject {item['subject']} (long)"),
            input_head=head_mask(short_raw, f"subject {item['subject']} (short)"), normalise=normalise,
            short_scale=float(item["short_scale"]), short_offset=float(item["short_offset"]),
            long_scale=float(item["long_scale"]), long_offset=float(item["long_offset"]),
        )


Predictor = Callable[[Scans], np.ndarray]


def model_predictor(model: nn.Module, roi: Sequence[int], overlap: float = 0.5, sw_batch_size: int = 2) -> Predictor:
    """A network as a predictor: sliding windows on the normalised input, output back in the scan's units."""

    def predict(scans: Scans) -> np.ndarray:
        out = predict_volume(model, scans.short, roi, overlap, sw_batch_size)
        return scans.to_units(out[0, 0].detach().cpu().numpy())

    return predict


def input_predictor(scans: Scans) -> np.ndarray:
    """The do-nothing reference: the short scan as the network would see it, mapped back as a prediction."""
    return scans.to_units(scans.short[0, 0].numpy())


def evaluate(
    scans: Iterator[Scans] | Sequence[Scans],
    predict: Predictor,
    ssim_window: str = "uniform",
    progress: bool = False,
    desc: str = "evaluate",
    on_prediction: Callable[[Scans, np.ndarray], None] | None = None,
) -> list[dict[str, Any]]:
    """Metrics (:data:`METRICS`) of ``predict`` on every subject, as rows ``{"subject", ...}``.

    ``on_prediction(scans, prediction)`` sees each prediction (in the scan's units), e.g. to draw figures.
    """
    rows = []
    for subject in tqdm(scans, desc=desc, disable=not progress, leave=False):
        pred = np.asarray(predict(subject), dtype=np.float64)
        rows.append({"subject": subject.subject,
                     **compute_metrics(pred, subject.long_raw, mask=subject.head, ssim_window=ssim_window)})
        if on_prediction is not None:
            on_prediction(subject, pred)
    return rows


def evaluate_split(
    model: nn.Module | None,
    datalist: dict[str, Any],
    split: str,
    roi: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    normalise: str = "input",
    ssim_window: str = "uniform",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Metrics of ``model`` on every subject of ``split``; ``model=None`` scores the short scan itself."""
    predict = input_predictor if model is None else model_predictor(model, roi, overlap, sw_batch_size)
    return evaluate(iter_scans(datalist, split, normalise), predict, ssim_window, progress, f"evaluate {split}")


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation (ddof 0) of each metric over subjects."""
    out: dict[str, Any] = {"n": len(rows)}
    for metric in METRICS:
        values = np.array([row[metric] for row in rows if metric in row], dtype=np.float64)
        out[metric] = float(values.mean()) if len(values) else float("nan")
        out[f"{metric}_std"] = float(values.std()) if len(values) else float("nan")
    return out


def write_results(out_dir: str | Path, rows: list[dict[str, Any]], name: str = "metrics") -> dict[str, Any]:
    """Write ``<name>.csv`` (one row per subject) and ``<name>.json`` (rows + summary); return the summary."""
    out_dir = Path(out_dir)
    summary = summarize(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["subject", *METRICS], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out_dir / f"{name}.csv", buffer.getvalue())
    write_json(out_dir / f"{name}.json", {"summary": summary, "subjects": rows})
    return summary
