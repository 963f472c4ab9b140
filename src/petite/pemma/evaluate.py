"""Whole-volume evaluation of CT/PET segmenters: Dice and HD95 per class (GTVp, GTVn), per case and mean.

Predictions come from MONAI's ``sliding_window_inference`` over the whole
volume (window = the model's crop size), argmax over the 3 classes.  Metrics use
MONAI (``compute_dice``, ``compute_hausdorff_distance(percentile=95)``) with
these documented conventions for empty masks, per class and case:

- **Dice**: defined only where the class is present in the ground truth
  (``NaN`` otherwise, whatever is predicted): a case without nodes tells
  nothing about how well nodes are delineated, and scoring it 1 (nothing
  predicted) or 0 (a false positive) would move the mean by how many such
  cases a split happens to have.  Those cases are counted separately by
  :func:`petite.pemma.aggregate.aggregate` (false positives, true negatives).
  ``dice_mean`` of a case is the mean over the classes present (``NaN`` if
  none); a prediction that misses a present class scores 0 there.
- **Voxel counts** ``inter_<c>``, ``pred_<c>``, ``gt_<c>`` (|P and G|, |P|, |G|)
  are kept per case so the aggregated Dice (DSCagg, HECKTOR's ranking metric)
  can be computed over patients.
- **HD95**: undefined when either mask is empty -> ``NaN``; NaNs are left out of
  every mean (``hd95_mean`` of a case, and the means over cases), and
  ``hd95_<c>_n`` in the summary says how many cases a class mean is over.
- **Units**: HD95 is in mm when the case has a ``"spacing"`` entry (3 voxel
  sizes, array axis order), else in voxels (``hd95_unit`` says which).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from petite.device import resolve_device
from petite.errors import UserError
from petite.pemma.aggregate import aggregate
from petite.pemma.segmentation import (
    CLASSES,
    NUM_CLASSES,
    check_mode,
    predict,
    resolve_window,
    stack_inputs,
)



def _one_hot(mask: torch.Tensor) -> torch.Tensor:
    # (X, Y, Z) class indices -> (1, C, X, Y, Z) float one-hot, as MONAI's metrics expect.
    return torch.nn.functional.one_hot(mask.long(), NUM_CLASSES).movedim(-1, 0)[None].float()


def case_metrics(
    pred: torch.Tensor,
    label: torch.Tensor,
    spacing: Sequence[float] | None = None,
    classes: Sequence[int] = CLASSES,
) -> dict[str, float]:
    """Dice and HD95 per class of one predicted label map against the ground truth (see module docstring).

    ``pred`` and ``label`` are ``(X, Y, Z)`` (or ``(1, X, Y, Z)``) class-index
    volumes.  Returns ``dice_<c>``, ``hd95_<c>`` for each class, the voxel
    counts ``inter_<c>``, ``pred_<c>``, ``gt_<c>``, and the means ``dice_mean``,
    ``hd95_mean`` (NaN-excluding; NaN if every class is NaN).
    """
    from monai.metrics import compute_dice, compute_hausdorff_distance

    pred = torch.as_tensor(pred).reshape(torch.as_tensor(pred).shape[-3:]).cpu()
    label = torch.as_tensor(label).reshape(torch.as_tensor(label).shape[-3:]).cpu()
    if pred.shape != label.shape:
        raise UserError(f"prediction {list(pred.shape)} and label {list(label.shape)} differ in shape")
    p1, g1 = _one_hot(pred), _one_hot(label)
    dice = compute_dice(p1, g1, include_background=True, ignore_empty=False)[0]
    spacing_arg = None if spacing is None else [float(s) for s in spacing]
    out: dict[str, float] = {}
    counts: dict[str, int] = {}
    dices, hds = [], []
    for c in classes:
        p, g = p1[0, c].bool(), g1[0, c].bool()
        counts.update({f"inter_{c}": int((p & g).sum()), f"pred_{c}": int(p.sum()), f"gt_{c}": int(g.sum())})
        out[f"dice_{c}"] = float(dice[c]) if counts[f"gt_{c}"] else math.nan
        dices.append(out[f"dice_{c}"])
        if p1[:, c].any() and g1[:, c].any():
            with warnings.catch_warnings():  # MONAI 1.5 deprecation noise from its own get_mask_edges call
                warnings.simplefilter("ignore", FutureWarning)
                hd = compute_hausdorff_distance(
                    p1[:, [0, c]], g1[:, [0, c]], include_background=False, percentile=95, spacing=spacing_arg
                )
            out[f"hd95_{c}"] = float(hd.reshape(-1)[0])
        else:
            out[f"hd95_{c}"] = math.nan
        hds.append(out[f"hd95_{c}"])
    present = [d for d in dices if not math.isnan(d)]
    out["dice_mean"] = float(np.mean(present)) if present else math.nan
    finite = [h for h in hds if not math.isnan(h)]
    out["hd95_mean"] = float(np.mean(finite)) if finite else math.nan
    return {**out, **counts}  # type: ignore[dict-item]


def mean_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean over cases of every metric column, NaNs excluded; ``<col>_n`` counts the cases behind each mean.

    Dice columns are NaN where the class is absent in the ground truth and HD95
    columns where either mask is empty, so ``dice_<c>_n`` and ``hd95_<c>_n``
    differ from the number of cases whenever that happens.
    """
    out: dict[str, float] = {}
    if not rows:
        return out
    keys = [k for k, v in rows[0].items() if k.startswith(("dice_", "hd95_")) and isinstance(v, float)]
    for key in keys:
        values = [float(r[key]) for r in rows if not math.isnan(float(r[key]))]
        out[key] = float(np.mean(values)) if values else math.nan
        out[f"{key}_n"] = len(values)
    return out


@torch.no_grad()
def predict_case(
    model: nn.Module,
    case: Mapping[str, Any],
    mode: str,
    roi: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    blend: str = "constant",
    device: torch.device | None = None,
) -> torch.Tensor:
    """Logits ``(1, 3, X, Y, Z)`` of a whole case by sliding windows (``model`` in eval mode, on ``device``)."""
    from monai.inferers import sliding_window_inference

    device = device or next(model.parameters()).device
    x = stack_inputs(case, mode)[None].float().to(device)
    return sliding_window_inference(
        x, roi_size=tuple(int(s) for s in roi), sw_batch_size=sw_batch_size,
        predictor=lambda t: predict(model, t, mode), overlap=overlap, mode=blend,
    )


def evaluate_segmenter(
    model: nn.Module,
    cases: Sequence[Mapping[str, Any]],
    mode: str,
    roi: Sequence[int] | int | None = None,
    overlap: float = 0.5,
    *,
    sw_batch_size: int = 1,
    blend: str = "constant",
    device: str | torch.device | None = None,
    progress: bool = False,
    bootstrap_seed: int = 0,
) -> dict[str, Any]:
    """Segment every case with ``mode``'s images and score it (see the module docstring).

    Args:
        model: any segmenter (plain ones need the channels of ``mode``).
        cases: loaded cases (``ct``/``pet``/``label`` as ``(1, X, Y, Z)``; optional ``spacing``).
        mode: ``"ctpet"``, ``"ct"`` or ``"pet"``.
        roi: window size (default: the model's fixed input size; required for Swin UNETR).
        overlap, sw_batch_size, blend: ``sliding_window_inference`` options (``blend`` is its ``mode``).
        device: None/``"auto"``, ``"cpu"`` or ``"cuda"``; the model is moved there.
        bootstrap_seed: seed of the bootstrap over patients (:func:`petite.pemma.aggregate.aggregate`).

    Returns:
        ``{"mode", "roi", "cases": [{"patient", "centre", "dice_1", "dice_2", "dice_mean",
        "hd95_1", "hd95_2", "hd95_mean", "inter_1", "pred_1", "gt_1", ..., "hd95_unit"}, ...],
        "mean": {...}, "hecktor": {...}}`` (``hecktor``: DSCagg, absent-class outcomes,
        HD95 coverage and bootstrap intervals).
    """
    check_mode(mode)
    window = resolve_window(model, roi)
    dev = resolve_device(device)
    model.to(dev)
    was_training = model.training
    model.eval()
    rows: list[dict[str, Any]] = []
    try:
        for case in tqdm(cases, desc=f"evaluate {mode}", disable=not progress, leave=False):
            if case.get("label") is None:
                raise UserError(f"case {case.get('patient', '?')!r} has no label to evaluate against")
            logits = predict_case(model, case, mode, window, overlap, sw_batch_size, blend, dev)
            pred = logits.argmax(dim=1)[0].cpu()
            spacing = case.get("spacing")
            row: dict[str, Any] = {"patient": case.get("patient"), "centre": case.get("centre")}
            row.update(case_metrics(pred, torch.as_tensor(case["label"]), spacing))
            row["hd95_unit"] = "mm" if spacing is not None else "voxel"
            rows.append(row)
    finally:
        model.train(was_training)
    return {"mode": mode, "roi": list(window), "cases": rows, "mean": mean_metrics(rows),
            "hecktor": aggregate(rows, seed=bootstrap_seed)}


def validation_dice(
    model: nn.Module,
    cases: Sequence[Mapping[str, Any]],
    mode: str,
    roi: Sequence[int] | int | None = None,
    overlap: float = 0.5,
    *,
    sw_batch_size: int = 1,
    device: str | torch.device | None = None,
    classes: Sequence[int] = CLASSES,
) -> dict[str, float]:
    """The score training stops on: mean foreground Dice over the classes, from whole-volume predictions.

    The same predictions as :func:`evaluate_segmenter` (sliding windows, argmax),
    but only Dice, computed from voxel counts: no HD95 and no bootstrap, which cost
    more than the inference on small volumes and are not needed to pick a step.
    Per class, the Dice is averaged over the cases that have the class (the
    convention of :func:`case_metrics`, so ``dice_<c>`` equals
    :func:`evaluate_segmenter`'s mean); ``dice`` is the mean of those class
    means over the classes present in at least one case (GTVp and GTVn weigh
    the same however many cases have nodes).

    Returns:
        ``{"dice": float, "dice_1": float, "dice_2": float, ...}`` (a class no case has: NaN).

    Raises:
        UserError: no cases, a case without a label, or no case with any foreground class.
    """
    check_mode(mode)
    if not cases:
        raise UserError("validation needs at least one case")
    window = resolve_window(model, roi)
    dev = resolve_device(device)
    model.to(dev)
    was_training = model.training
    model.eval()
    per_class: dict[int, list[float]] = {c: [] for c in classes}
    try:
        for case in cases:
            if case.get("label") is None:
                raise UserError(f"case {case.get('patient', '?')!r} has no label to validate against")
            pred = predict_case(model, case, mode, window, overlap, sw_batch_size, device=dev).argmax(dim=1)[0].cpu()
            label = torch.as_tensor(case["label"]).reshape(pred.shape)
            for c in classes:
                p, g = pred == c, label == c
                gt = int(g.sum())
                if gt:
                    per_class[c].append(2.0 * int((p & g).sum()) / (int(p.sum()) + gt))
    finally:
        model.train(was_training)
    out = {f"dice_{c}": float(np.mean(v)) if v else math.nan for c, v in per_class.items()}
    present = [out[f"dice_{c}"] for c in classes if per_class[c]]
    if not present:
        raise UserError("no validation case has a tumour (GTVp or GTVn) to score Dice on")
    return {"dice": float(np.mean(present)), **out}
