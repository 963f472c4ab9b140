"""Train a CT/PET segmenter (PEMMA or a baseline) on loaded cases: a plain, seeded function.

:func:`train_segmenter` is deliberately small: no run folders, resume or
checkpoints (the CLI layer adds those).  It takes cases already loaded by
:func:`petite.headneck.datalist.load_case` (dicts of ``(1, X, Y, Z)`` tensors),
so it is testable with tensors built in memory.

Per step: ``batch_size`` cases are drawn with replacement, each cropped by
:func:`petite.headneck.datalist.random_crop` (foreground-biased) and, unless
``augment=False``, transformed by a random symmetry of the axial plane
(:func:`augment_axial`: flips and 90-degree rotations, the same for CT, PET and
label); the input mode of the batch is fixed or drawn (see ``inputs`` /
``mode_probs``), and MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True)`` is
minimised by AdamW over the parameters that require gradients (PEMMA: its
trainable groups), the learning rate following a linear warm-up and a cosine
decay (:func:`petite.engine.optim.build_scheduler`, the PET engine's schedule).

How long it trains, like the PET engine (:mod:`petite.engine.train`):

- **to convergence** (``max_steps``, the default): every ``val_every`` steps the
  validation cases are segmented whole (sliding windows) and scored by
  :func:`petite.pemma.evaluate.validation_dice` (mean foreground Dice over the
  classes); the best state is kept, training stops after ``patience``
  validations without an improvement of more than ``min_delta``
  (*converged*) or at ``max_steps`` (*capped*), and the best state is restored.
  A segmenter from scratch often predicts background only for hundreds of
  steps, and validations tied at Dice 0 would count as "no improvement" and
  end it before it learns anything, so patience only counts once the best
  Dice is above 0, and training never stops before ``min_steps`` (default a
  quarter of the cap).  The schedule spans ``max_steps``.
- **a fixed budget** (``steps``): exactly that many steps and no stopping; the
  validation cases, if any, are scored once at the end (the behaviour before
  validation-based stopping existed).

Everything random (case order, crops, augmentation, modes) comes from one
``numpy.random.default_rng(seed)``, and ``torch.manual_seed(seed)`` is set for
anything random inside the model (dropout); validation draws nothing, so a run
is reproducible on a given device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from petite.device import resolve_device
from petite.engine.optim import build_optimizer, build_scheduler
from petite.errors import UserError
from petite.headneck.datalist import random_crop
from petite.pemma.evaluate import evaluate_segmenter, validation_dice
from petite.pemma.segmentation import (
    MODES,
    accepts_modalities,
    check_mode,
    predict,
    resolve_window,
    stack_inputs,
)
from petite.pemma.upgrade import PEMMA

#: PEMMA's per-batch input modes when both modalities are available (BRIEF section 7).
PEMMA_MODE_PROBS: dict[str, float] = {"ctpet": 0.6, "ct": 0.2, "pet": 0.2}
#: Default cap of a training to convergence.
MAX_STEPS = 1000
#: Default validations without improvement before stopping (the PET engine waits 10 epochs; segmentation
#: validations are spaced further apart, see ``val_every``).
PATIENCE = 5
#: Default fraction of the steps (the cap, or the fixed budget) with a linearly rising learning rate
#: (the PET engine's ``warmup``).
WARMUP = 0.05
#: The learning-rate schedules (:func:`petite.engine.optim.lr_factor`).
SCHEDULES = ("warmup-cosine", "cosine", "constant")


def _available_modes(inputs: str) -> tuple[str, ...]:
    return ("ctpet", "ct", "pet") if inputs == "ctpet" else (inputs,)


def resolve_mode_probs(model: nn.Module, inputs: str, mode_probs: Mapping[str, float] | None) -> dict[str, float]:
    """The per-batch mode distribution: ``mode_probs`` if given; PEMMA with both modalities:
    :data:`PEMMA_MODE_PROBS`; otherwise always ``inputs``.  Probabilities are normalised.

    Raises:
        UserError: a mode the data (``inputs``) cannot give, a plain segmenter with
            varying modes, or bad probabilities.
    """
    check_mode(inputs)
    if mode_probs is None:
        mode_probs = PEMMA_MODE_PROBS if isinstance(model, PEMMA) and inputs == "ctpet" else {inputs: 1.0}
    probs = {str(k): float(v) for k, v in mode_probs.items() if float(v) != 0.0}
    for mode, p in probs.items():
        check_mode(mode)
        if mode not in _available_modes(inputs):
            raise UserError(f"mode {mode!r} needs images that inputs={inputs!r} does not provide")
        if not math.isfinite(p) or p < 0:
            raise UserError(f"mode probability for {mode!r} must be >= 0, got {p}")
    if not probs:
        raise UserError("mode_probs gives every mode probability 0")
    if set(probs) != {inputs} and not accepts_modalities(model):
        raise UserError("only modality-aware models (PEMMA, late fusion) can train with varying input modes")
    total = sum(probs.values())
    return {m: probs[m] / total for m in MODES if m in probs}


def augment_axial(sample: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A random symmetry of the axial plane applied alike to every image of ``sample`` and its label.

    The axial plane is the first two spatial axes (X, Y of the canonical RAS
    grid :func:`~petite.headneck.datalist.load_case` gives; Z runs head to
    foot and is never flipped or rotated, so slices stay slices).  X and Y are
    each flipped with probability 1/2 and the plane is then rotated by
    ``k`` x 90 degrees, ``k`` uniform in 0..3: uniform over the 8 symmetries of
    the square.  A crop whose X and Y sizes differ only rotates by 0 or 180
    degrees (the shape must stay that of the batch).  Every tensor whose last
    three sizes are the sample's label's is transformed; anything else is
    copied.  Nearest-voxel exact (flips and rotations only permute voxels), so
    a label stays a label and stays aligned with its images.  Draws 3 numbers
    from ``rng``.
    """
    shape = tuple(sample["label"].shape[-3:])
    flip_x, flip_y = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    k = int(rng.integers(4)) if shape[0] == shape[1] else 2 * int(rng.integers(2))
    dims = [d for d, flip in ((-3, flip_x), (-2, flip_y)) if flip]
    out: dict[str, Any] = {}
    for key, value in sample.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 3 and tuple(value.shape[-3:]) == shape:
            value = torch.flip(value, dims) if dims else value
            out[key] = torch.rot90(value, k, dims=(-3, -2)) if k else value
        else:
            out[key] = value
    return out


def _batch(cases: Sequence[Mapping[str, Any]], crop: tuple[int, int, int], batch_size: int,
           rng: np.random.Generator, foreground_prob: float, augment: bool) -> dict[str, torch.Tensor]:
    picks = []
    for _ in range(batch_size):
        pick = random_crop(cases[int(rng.integers(len(cases)))], crop, rng, foreground_prob)
        picks.append(augment_axial(pick, rng) if augment else pick)
    out: dict[str, torch.Tensor] = {}
    for key in ("ct", "pet", "label"):
        if all(key in p and p[key] is not None for p in picks):
            out[key] = torch.stack([torch.as_tensor(p[key]) for p in picks])
    if "label" not in out:
        raise UserError("every training case needs a 'label'")
    return out


def _length(steps: int | None, max_steps: int | None, val_every: int | None, patience: int, has_val: bool
            ) -> tuple[int, int, bool]:
    """``(total steps, validation interval, whether validation decides when to stop)``; checks the options."""
    if steps is not None and max_steps is not None:
        raise UserError("give steps (a fixed budget) or max_steps (a cap, stopping on validation), not both")
    if steps is not None:
        if steps < 0:
            raise UserError(f"steps must be >= 0, got {steps}")
        return steps, max(steps, 1), False
    cap = MAX_STEPS if max_steps is None else max_steps
    if cap < 1:
        raise UserError(f"max_steps must be >= 1, got {cap}")
    if patience < 0:
        raise UserError(f"patience must be >= 0, got {patience}")
    if val_every is not None and val_every < 1:
        raise UserError(f"val_every must be >= 1, got {val_every}")
    if not has_val:
        raise UserError("training to convergence needs validation cases; give a fixed budget (steps) without them")
    # About 20 validations over the cap unless told otherwise.
    return cap, val_every if val_every is not None else max(1, cap // 20), True


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    # Every entry, buffers included: PEMMA's frozen tensors do not change, but copying them is cheap and
    # makes restoring exact whatever trains.
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_segmenter(
    model: nn.Module,
    cases: Sequence[Mapping[str, Any]],
    *,
    inputs: str = "ctpet",
    steps: int | None = None,
    max_steps: int | None = None,
    val_every: int | None = None,
    patience: int = PATIENCE,
    min_delta: float = 0.0,
    min_steps: int | None = None,
    crop: int | Sequence[int] | None = None,
    batch_size: int = 2,
    lr: float = 1e-3,
    schedule: str = "warmup-cosine",
    warmup: float = WARMUP,
    augment: bool = True,
    seed: int = 0,
    mode_probs: Mapping[str, float] | None = None,
    val_cases: Sequence[Mapping[str, Any]] | None = None,
    progress: bool = False,
    weight_decay: float = 1e-5,
    foreground_prob: float = 0.7,
    device: str | torch.device | None = None,
    val_overlap: float = 0.5,
    final_eval: bool = True,
) -> dict[str, Any]:
    """Train ``model`` in place on random crops of ``cases``: to convergence on ``val_cases``, or for ``steps``.

    Args:
        model: a plain segmenter (CT-only, PET-only, early fusion) or a
            modality-aware model (PEMMA, late fusion).  Only parameters with
            ``requires_grad`` train (set PEMMA's with :func:`~petite.pemma.upgrade.set_trainable`).
        cases: loaded cases ``{"ct", "pet", "label": (1, X, Y, Z) tensors, ...}``.
        inputs: the images available: ``"ct"``, ``"pet"`` or ``"ctpet"`` (a plain model
            gets those channels; early fusion needs ``"ctpet"``).  Validation uses this mode.
        steps: a fixed budget: exactly this many steps, no validation-based stopping.
        max_steps: the cap of a training to convergence (default :data:`MAX_STEPS`; the
            default when ``steps`` is not given).  Needs ``val_cases``.
        val_every: steps between validations (default: ``max_steps // 20``).
        patience: validations without improvement before stopping (0: train to the cap,
            still keeping the best state).
        min_delta: the Dice gain that counts as an improvement.
        min_steps: no stopping on patience before this step (default ``max_steps // 4``).
        batch_size, lr, weight_decay: optimisation (AdamW).
        schedule, warmup: ``warmup-cosine`` (linear rise over ``warmup`` x the steps, then
            cosine to 0 at the cap), ``cosine`` or ``constant``.
        augment: random axial flips and 90-degree rotations (:func:`augment_axial`).
        crop: patch size (default: the model's fixed input size, UNETR's ``img_size``).
        seed: seeds case order, crops, augmentation, modes and ``torch``.
        mode_probs: per-batch input mode distribution, e.g. ``{"ctpet": .6, "ct": .2, "pet": .2}``
            (default: PEMMA with ``inputs="ctpet"`` uses :data:`PEMMA_MODE_PROBS`; anything else ``inputs``).
        val_cases: validation cases: scored every ``val_every`` steps (to convergence) and, with
            ``final_eval``, once at the end by :func:`~petite.pemma.evaluate.evaluate_segmenter`
            (mode ``inputs``, window = crop) with the returned state.
        progress: a tqdm bar.
        foreground_prob: chance a crop is centred to contain tumour.
        device: ``"cpu"``, ``"cuda"``, or None/``"auto"``; the model is moved there.
        val_overlap: sliding-window overlap of every validation.

    Returns:
        ``{"losses": [float per step], "modes": [mode per step], "mode_counts", "steps" (done),
        "max_steps", "val_every", "patience", "min_delta", "min_steps", "stopped" (``"patience"``: converged,
        ``"max_steps"``: capped, ``"steps"``: a fixed budget), "converged", "best_step",
        "best_val_dice", "curve": [{"step", "loss" (mean since the last validation), "lr",
        "val_dice", "val_dice_1", "val_dice_2", "time_s"}, ...], "trainable", "seconds",
        "device", "val": evaluation dict or None}``.  To convergence, the model holds the
        state of ``best_step`` when this returns.

    Raises:
        UserError: no cases, nothing to train, bad sizes, modes or lengths, to convergence without
            validation cases, a loss that is not finite.
    """
    if not cases:
        raise UserError("train_segmenter needs at least one training case")
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    if schedule not in SCHEDULES:
        raise UserError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if not 0 <= warmup < 1:
        raise UserError(f"warmup must be a fraction of the steps in [0, 1), got {warmup}")
    if not math.isfinite(min_delta) or min_delta < 0:
        raise UserError(f"min_delta must be >= 0, got {min_delta}")
    total, every, validating = _length(steps, max_steps, val_every, patience, bool(val_cases))
    floor = total // 4 if min_steps is None else min_steps
    if floor < 0:
        raise UserError(f"min_steps must be >= 0, got {min_steps}")
    probs = resolve_mode_probs(model, inputs, mode_probs)
    patch = resolve_window(model, crop, "crop")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UserError("the model has no trainable parameters")

    from monai.losses import DiceCELoss

    dev = resolve_device(device)
    model.to(dev)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = build_optimizer(params, "adamw", lr, weight_decay)
    warmup_steps = round(warmup * total) if schedule == "warmup-cosine" else 0
    scheduler = build_scheduler(optimizer, schedule, total, warmup_steps)
    mode_names, mode_p = list(probs), np.asarray(list(probs.values()))

    losses: list[float] = []
    modes: list[str] = []
    curve: list[dict[str, Any]] = []
    best: dict[str, Any] = {"dice": None, "step": 0, "state": None}
    since_best, done, stopped = 0, 0, "max_steps" if validating else "steps"
    start = t0 = time.perf_counter()
    model.train()
    bar = tqdm(total=total, desc="train", disable=not progress, dynamic_ncols=True)
    while done < total:
        mode = mode_names[int(rng.choice(len(mode_names), p=mode_p))] if len(mode_names) > 1 else mode_names[0]
        batch = _batch(cases, patch, batch_size, rng, foreground_prob, augment)
        x = stack_inputs(batch, mode).to(dev)
        y = batch["label"].to(dev)
        lr_now = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(predict(model, x, mode), y)
        if not torch.isfinite(loss):
            raise UserError(f"training diverged: the loss became {float(loss)} at step {done + 1}; "
                            f"lower the learning rate")
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        modes.append(mode)
        done += 1
        bar.update(1)
        if not validating or (done % every and done < total):
            continue
        score = validation_dice(model, val_cases or (), inputs, roi=patch, overlap=val_overlap, sw_batch_size=4,
                                device=dev)
        model.train()
        since = losses[curve[-1]["step"] if curve else 0:]
        record = {"step": done, "loss": float(np.mean(since)), "lr": lr_now, "val_dice": score["dice"],
                  **{f"val_{k}": v for k, v in score.items() if k != "dice"},
                  "time_s": round(time.perf_counter() - t0, 3)}  # training and this validation since the last
        t0 = time.perf_counter()
        curve.append(record)
        if best["dice"] is None or score["dice"] > best["dice"] + min_delta:
            best = {"dice": score["dice"], "step": done, "state": _snapshot(model)}
            since_best = 0
        elif best["dice"] > 0:  # nothing found yet is not a plateau (see the module docstring)
            since_best += 1
        bar.set_postfix(val_dice=f"{score['dice']:.3f}", best=f"{best['dice']:.3f}@{best['step']}")
        if patience and since_best >= patience and done >= floor:
            stopped = "patience"
            break
    bar.close()
    seconds = time.perf_counter() - start
    if best["state"] is not None:
        model.load_state_dict(best["state"])

    val = None
    if val_cases and final_eval:
        val = evaluate_segmenter(model, val_cases, inputs, roi=patch, overlap=val_overlap, device=dev)
        model.train()
    return {
        "losses": losses,
        "modes": modes,
        "mode_counts": {m: modes.count(m) for m in probs},
        "steps": done,
        "max_steps": total if validating else None,
        "val_every": every if validating else None,
        "patience": patience if validating else None,
        "min_delta": min_delta if validating else None,
        "min_steps": floor if validating else None,
        "stopped": stopped,
        "converged": stopped == "patience",
        "best_step": best["step"] if validating else done,
        "best_val_dice": best["dice"],
        "curve": curve,
        "schedule": schedule,
        "warmup_steps": warmup_steps,
        "augment": bool(augment),
        "trainable": sum(p.numel() for p in params),
        "seconds": seconds,
        "device": str(dev),
        "val": val,
    }
