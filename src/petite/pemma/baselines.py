"""The baselines PEMMA is compared with: CT-only, PET-only, early fusion and late fusion.

- **CT-only** / **PET-only**: the 1-channel segmenter of
  :func:`~petite.pemma.segmentation.build_segmenter`, trained fully on one
  modality (input mode ``"ct"`` / ``"pet"``).
- **Early fusion**: the same architecture with a 2-channel input (CT, PET),
  trained fully (input mode ``"ctpet"``).
- **Late fusion**: :class:`LateFusion`, a weighted sum of the logits of a CT-only
  and a PET-only model.  By default the weight is fixed at 0.5 and the two
  members are trained separately and then combined (no training of the
  ensemble needed); with ``learnable=True`` the weight is a parameter
  ``sigmoid(theta)`` (kept in (0, 1), ``theta`` initialised to ``logit(weight)``)
  that trains with whatever else requires gradients.

:data:`BASELINE_MODES` gives the input mode each baseline is trained and
evaluated with (:func:`petite.pemma.train.train_segmenter`'s ``inputs``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from petite.errors import UserError
from petite.pemma.segmentation import build_segmenter

#: Baseline kind -> input mode it is trained and evaluated with.
BASELINE_MODES: dict[str, str] = {"ct": "ct", "pet": "pet", "early": "ctpet", "late": "ctpet"}


class LateFusion(nn.Module):
    """``weight * ct_model(ct) + (1 - weight) * pet_model(pet)`` on logits.

    Args:
        ct_model / pet_model: 1-channel segmenters with the same class count.
        weight: CT weight in (0, 1) (0.5: plain average).
        learnable: make the weight a trained scalar (``sigmoid(theta)``).

    ``forward(ct=None, pet=None)``: with one modality only, that member's logits
    (late fusion degrades gracefully to the single-modality model).
    """

    accepts_modalities = True

    def __init__(self, ct_model: nn.Module, pet_model: nn.Module, weight: float = 0.5, learnable: bool = False) -> None:
        super().__init__()
        if not 0.0 < float(weight) < 1.0:
            raise UserError(f"late-fusion weight must be in (0, 1), got {weight}")
        self.ct_model = ct_model
        self.pet_model = pet_model
        theta = torch.tensor(math.log(weight / (1.0 - weight)))
        if learnable:
            self.theta: torch.Tensor = nn.Parameter(theta)
        else:
            self.register_buffer("theta", theta)
        self.learnable = bool(learnable)
        size = getattr(ct_model, "img_size", None)
        self.img_size: tuple[int, ...] | None = None if size is None else tuple(size)
        self.config: dict[str, Any] = {
            "name": "late_fusion",
            "ct": dict(getattr(ct_model, "config", {}) or {}),
            "pet": dict(getattr(pet_model, "config", {}) or {}),
            "weight": float(weight),
            "learnable": self.learnable,
        }

    @property
    def weight(self) -> torch.Tensor:
        """The CT weight (a 0-d tensor in (0, 1))."""
        return torch.sigmoid(self.theta)

    def forward(self, ct: torch.Tensor | None = None, pet: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted sum of the two models' logits; one member's logits if only one modality is given."""
        if ct is None and pet is None:
            raise UserError("late fusion needs at least one of ct= and pet=")
        if pet is None:
            return self.ct_model(ct)
        if ct is None:
            return self.pet_model(pet)
        w = self.weight
        return w * self.ct_model(ct) + (1.0 - w) * self.pet_model(pet)


def build_baseline(
    kind: str,
    arch: str = "unetr",
    preset: str = "small",
    img_size: int | Sequence[int] | None = None,
    weight: float = 0.5,
    learnable: bool = False,
    **overrides: Any,
) -> nn.Module:
    """A fresh baseline: ``ct`` / ``pet`` (1 channel), ``early`` (2 channels) or ``late`` (:class:`LateFusion`).

    Train it with ``inputs=BASELINE_MODES[kind]``.  For ``late`` the two members
    are built fresh; to combine already-trained models use :class:`LateFusion`.

    Raises:
        UserError: unknown kind, or a bad architecture/preset/argument.
    """
    if kind not in BASELINE_MODES:
        raise UserError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINE_MODES)}")
    if kind == "late":
        return LateFusion(
            build_segmenter(arch, preset, 1, img_size, **overrides),
            build_segmenter(arch, preset, 1, img_size, **overrides),
            weight=weight,
            learnable=learnable,
        )
    return build_segmenter(arch, preset, 2 if kind == "early" else 1, img_size, **overrides)
