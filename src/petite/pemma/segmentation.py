"""Head-and-neck tumour segmenters and the one place that knows how each model takes CT/PET.

Segmentation here has 3 classes: 0 background, 1 primary tumour (GTVp), 2 nodes
(GTVn), as in HECKTOR 2022.  :func:`build_segmenter` is a thin layer over
:func:`petite.models.build_model` (``unetr`` or ``swin_unetr``) that fixes the
class count, so every segmenter still carries the model contract (``config``,
``components``, ``peft_roles``) the PEFT library needs.

Two kinds of model take images:

- *plain* segmenters (CT-only, PET-only, early fusion) take one tensor whose
  channels are the modalities of their input mode: ``"ct"`` (1 channel),
  ``"pet"`` (1) or ``"ctpet"`` (2, CT first);
- *modality-aware* models (:class:`~petite.pemma.upgrade.PEMMA`,
  :class:`~petite.pemma.baselines.LateFusion`) set
  ``accepts_modalities = True`` and are called as ``model(ct=..., pet=...)``
  with either modality possibly missing.

:func:`stack_inputs` and :func:`predict` translate between the two, so training
(:mod:`petite.pemma.train`), evaluation (:mod:`petite.pemma.evaluate`)
and MONAI's single-tensor sliding-window inference treat every model alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from petite.errors import UserError
from petite.models import build_model
from petite.models.swin import SWIN_MULTIPLE, SwinUNETR

#: Input modes: both modalities, CT alone, PET alone.
MODES: tuple[str, ...] = ("ctpet", "ct", "pet")
#: Output classes: background, primary tumour (GTVp), lymph nodes (GTVn).
NUM_CLASSES = 3
#: Foreground classes scored: 1 primary tumour (GTVp), 2 nodes (GTVn).
CLASSES: tuple[int, ...] = (1, 2)
#: Architectures :func:`build_segmenter` knows.
ARCHS: tuple[str, ...] = ("unetr", "swin_unetr")


def build_segmenter(
    arch: str,
    preset: str = "small",
    in_channels: int = 1,
    img_size: int | Sequence[int] | None = None,
    **overrides: Any,
) -> nn.Module:
    """A 3-class (bg, GTVp, GTVn) ``unetr`` or ``swin_unetr`` from :func:`petite.models.build_model`.

    ``in_channels`` is 1 for CT-only / PET-only models and 2 for early fusion.
    ``img_size`` is UNETR's crop size (its learnable position embedding; default:
    the preset's); Swin UNETR takes any size and ignores it.  ``overrides`` go to
    ``build_model`` unchanged.

    Raises:
        UserError: unknown architecture, preset or argument.
    """
    if arch not in ARCHS:
        raise UserError(f"unknown segmentation architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    args: dict[str, Any] = dict(overrides)
    args.update(in_channels=int(in_channels), out_channels=NUM_CLASSES)
    if arch == "unetr" and img_size is not None:
        args["img_size"] = [int(img_size)] * 3 if isinstance(img_size, int) else [int(s) for s in img_size]
    return build_model(arch, preset, **args)


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`, else UserError."""
    if mode not in MODES:
        raise UserError(f"unknown input mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def mode_channels(mode: str) -> int:
    """Number of image channels of an input mode (2 for ``ctpet``)."""
    return 2 if check_mode(mode) == "ctpet" else 1


def accepts_modalities(model: nn.Module) -> bool:
    """Whether ``model`` is called as ``model(ct=..., pet=...)`` (PEMMA, late fusion)."""
    return bool(getattr(model, "accepts_modalities", False))


def crop_size(model: nn.Module) -> tuple[int, int, int] | None:
    """The fixed input size of a model (UNETR's ``img_size``; PEMMA/late fusion: their UNETR's), else None."""
    size = getattr(model, "img_size", None)
    return None if size is None else tuple(int(s) for s in size)  # type: ignore[return-value]


def resolve_window(model: nn.Module, size: int | Sequence[int] | None, name: str = "roi") -> tuple[int, int, int]:
    """The window (``name``: ``roi``) or training crop (``crop``) a model runs on.

    ``size`` (one int or three) if given, else the model's fixed input size;
    UserError when neither is known, when ``size`` is not three positive
    integers, or when it differs from the model's fixed size.
    """
    fixed = crop_size(model)
    if size is None:
        if fixed is None:
            raise UserError(f"give a {name} size (this model takes any input size)")
        return fixed
    window = (int(size),) * 3 if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if len(window) != 3 or min(window) < 1:
        raise UserError(f"{name} must be three positive integers, got {size!r}")
    if fixed is not None and window != fixed:
        raise UserError(f"{name} {list(window)} differs from the model's input size {list(fixed)}")
    return check_window(model, window, name)  # type: ignore[arg-type]


def uses_swin(model: nn.Module) -> bool:
    """Whether a Swin UNETR runs inside ``model`` (itself, PEMMA's backbone, a late-fusion member)."""
    return any(isinstance(m, SwinUNETR) for m in model.modules())


def check_window(model: nn.Module, window: Sequence[int], name: str = "crop") -> tuple[int, int, int]:
    """``window`` if ``model`` can run on it; UserError naming the minimum otherwise.

    Swin UNETR pads its input to a multiple of 32 (patch 2, four 2x merges),
    so a window of at most 32 voxels on every side leaves a 1x1x1 bottleneck,
    where the InstanceNorm of its last encoder block has one value per channel
    and fails (a raw ``ValueError`` deep inside torch).  One side of 33 voxels
    or more is enough; multiples of 32 waste nothing on padding.
    """
    size = tuple(int(s) for s in window)
    if uses_swin(model) and math.prod(-(-s // SWIN_MULTIPLE) for s in size) <= 1:
        raise UserError(f"{name} {list(size)} is too small for Swin UNETR: it downsamples by {SWIN_MULTIPLE} and "
                        f"needs more than one bottleneck voxel; the minimum is {SWIN_MULTIPLE + 1} voxels along one "
                        f"axis (e.g. {SWIN_MULTIPLE},{SWIN_MULTIPLE},{2 * SWIN_MULTIPLE} or 64,64,64)")
    return size  # type: ignore[return-value]


def stack_inputs(case: Mapping[str, Any], mode: str) -> torch.Tensor:
    """The channels of ``mode`` from a case or batch dict with ``"ct"`` / ``"pet"`` tensors (CT first).

    Works for a single case ``(1, X, Y, Z)`` and for a batch ``(B, 1, X, Y, Z)``
    (concatenation is along the channel axis, dim -4).
    """
    check_mode(mode)
    keys = ("ct", "pet") if mode == "ctpet" else (mode,)
    parts = []
    for key in keys:
        if key not in case or case[key] is None:
            raise UserError(f"input mode {mode!r} needs a {key!r} image, but the case has none")
        parts.append(torch.as_tensor(case[key]))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-4)


def predict(model: nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """Logits ``(B, 3, X, Y, Z)`` of ``model`` for ``x`` holding the channels of ``mode`` (see :func:`stack_inputs`).

    Modality-aware models get ``ct=`` / ``pet=`` keyword inputs; plain segmenters
    get ``x`` itself, which must have their ``in_channels``.
    """
    check_mode(mode)
    if x.shape[1] != mode_channels(mode):
        raise UserError(f"input mode {mode!r} needs {mode_channels(mode)} channel(s), got {x.shape[1]}")
    if accepts_modalities(model):
        if mode == "ctpet":
            return model(ct=x[:, :1], pet=x[:, 1:])
        return model(**{mode: x})
    expected = (getattr(model, "config", None) or {}).get("in_channels")
    if expected is not None and int(expected) != x.shape[1]:
        raise UserError(
            f"this segmenter takes {expected} input channel(s) but input mode {mode!r} gives {x.shape[1]}; "
            "CT-only/PET-only models use mode 'ct'/'pet', early fusion 'ctpet'"
        )
    return model(x)
