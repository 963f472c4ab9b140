"""Train a CT/PET segmenter (PEMMA or a baseline) on loaded cases: a plain, seeded function.

:func:`train_segmenter` is deliberately small: no run folders, resume or
checkpoints (the CLI layer adds those).  It takes cases already loaded by
:func:`petite.headneck.datalist.load_case` (dicts of ``(1, X, Y, Z)`` tensors),
so it is testable with tensors built in memory.

Per step: ``batch_size`` cases are drawn with replacement, each cropped by
:func:`petite.headneck.datalist.random_crop` (foreground-biased), the input
mode of the batch is fixed or drawn (see ``inputs`` / ``mode_probs``), and
MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True)`` is minimised by AdamW
over the parameters that require gradients (PEMMA: its trainable groups).
Everything random (case order, crops, modes) comes from one
``numpy.random.default_rng(seed)``, and ``torch.manual_seed(seed)`` is set for
anything random inside the model (dropout), so a run is reproducible on a
given device.
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
from petite.errors import UserError
from petite.headneck.datalist import random_crop
from petite.pemma.evaluate import evaluate_segmenter
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


def _batch(cases: Sequence[Mapping[str, Any]], crop: tuple[int, int, int], batch_size: int,
           rng: np.random.Generator, foreground_prob: float) -> dict[str, torch.Tensor]:
    picks = [random_crop(cases[int(rng.integers(len(cases)))], crop, rng, foreground_prob) for _ in range(batch_size)]
    out: dict[str, torch.Tensor] = {}
    for key in ("ct", "pet", "label"):
        if all(key in p and p[key] is not None for p in picks):
            out[key] = torch.stack([torch.as_tensor(p[key]) for p in picks])
    if "label" not in out:
        raise UserError("every training case needs a 'label'")
    return out


def train_segmenter(
    model: nn.Module,
    cases: Sequence[Mapping[str, Any]],
    *,
    inputs: str = "ctpet",
    steps: int = 100,
    crop: int | Sequence[int] | None = None,
    batch_size: int = 2,
    lr: float = 1e-3,
    seed: int = 0,
    mode_probs: Mapping[str, float] | None = None,
    val_cases: Sequence[Mapping[str, Any]] | None = None,
    progress: bool = False,
    weight_decay: float = 1e-5,
    foreground_prob: float = 0.7,
    device: str | torch.device | None = None,
    val_overlap: float = 0.5,
) -> dict[str, Any]:
    """Train ``model`` in place for ``steps`` AdamW steps on random crops of ``cases``.

    Args:
        model: a plain segmenter (CT-only, PET-only, early fusion) or a
            modality-aware model (PEMMA, late fusion).  Only parameters with
            ``requires_grad`` train (set PEMMA's with :func:`~petite.pemma.upgrade.set_trainable`).
        cases: loaded cases ``{"ct", "pet", "label": (1, X, Y, Z) tensors, ...}``.
        inputs: the images available: ``"ct"``, ``"pet"`` or ``"ctpet"`` (a plain model
            gets those channels; early fusion needs ``"ctpet"``).
        steps, batch_size, lr, weight_decay: optimisation.
        crop: patch size (default: the model's fixed input size, UNETR's ``img_size``).
        seed: seeds case order, crops, modes and ``torch``.
        mode_probs: per-batch input mode distribution, e.g. ``{"ctpet": .6, "ct": .2, "pet": .2}``
            (default: PEMMA with ``inputs="ctpet"`` uses :data:`PEMMA_MODE_PROBS`; anything else ``inputs``).
        val_cases: evaluated once at the end (:func:`~petite.pemma.evaluate.evaluate_segmenter`,
            mode ``inputs``, window = crop).
        progress: a tqdm bar.
        foreground_prob: chance a crop is centred to contain tumour.
        device: ``"cpu"``, ``"cuda"``, or None/``"auto"``; the model is moved there.

    Returns:
        ``{"losses": [float per step], "modes": [mode per step], "mode_counts", "steps",
        "trainable": n, "seconds", "device", "val": evaluation dict or None}``.

    Raises:
        UserError: no cases, nothing to train, bad sizes or modes.
    """
    if not cases:
        raise UserError("train_segmenter needs at least one training case")
    if steps < 0 or batch_size < 1:
        raise UserError(f"steps must be >= 0 and batch_size >= 1, got {steps} and {batch_size}")
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
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    mode_names, mode_p = list(probs), np.asarray(list(probs.values()))

    losses: list[float] = []
    modes: list[str] = []
    start = time.perf_counter()
    model.train()
    for _ in tqdm(range(steps), desc="train", disable=not progress, dynamic_ncols=True):
        mode = mode_names[int(rng.choice(len(mode_names), p=mode_p))] if len(mode_names) > 1 else mode_names[0]
        batch = _batch(cases, patch, batch_size, rng, foreground_prob)
        x = stack_inputs(batch, mode).to(dev)
        y = batch["label"].to(dev)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(predict(model, x, mode), y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        modes.append(mode)
    seconds = time.perf_counter() - start

    val = None
    if val_cases:
        val = evaluate_segmenter(model, val_cases, inputs, roi=patch, overlap=val_overlap, device=dev)
        model.train()
    return {
        "losses": losses,
        "modes": modes,
        "mode_counts": {m: modes.count(m) for m in probs},
        "steps": steps,
        "trainable": sum(p.numel() for p in params),
        "seconds": seconds,
        "device": str(dev),
        "val": val,
    }
