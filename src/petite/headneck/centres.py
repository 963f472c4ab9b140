"""The simulated acquisition centres of the synthetic head-and-neck data, and their grid sizes.

A **centre** (:class:`Centre`) fixes how its patients look: CT blur,
calibration (scale, offset) and noise; PET resolution (Gaussian FWHM),
Poisson-like noise (standard deviation ``pet_noise * sqrt(SUV)``, slightly
correlated like a reconstruction) and SUV calibration factor; field of view and
grid.  The table :data:`CENTRES` has six centres, ``A``..``F``, named after
HECKTOR centres they loosely resemble.

Sizes (:data:`SIZES`): ``tiny`` 32^3 (tests), ``small`` 64x64x48 (default;
~3 mm voxels), ``full`` 128x128x96 (~1.6 mm); the field of view stays the centre's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from petite.data.nifti import make_affine
from petite.errors import UserError

SIZES: dict[str, tuple[int, int, int]] = {"tiny": (32, 32, 32), "small": (64, 64, 48), "full": (128, 128, 96)}


@dataclass(frozen=True)
class Centre:
    """One acquisition centre: CT and PET appearance and the voxel grid."""

    id: str
    name: str
    ct_noise_hu: float  # standard deviation of CT noise (HU)
    ct_offset_hu: float  # calibration: HU_observed = ct_scale * HU + ct_offset_hu
    ct_scale: float
    ct_fwhm_mm: float  # CT in-plane/axial blur
    pet_fwhm_mm: float  # PET scanner + reconstruction resolution
    pet_noise: float  # PET noise: std = pet_noise * sqrt(SUV)
    pet_scale: float  # SUV calibration factor
    spacing: tuple[float, float, float]  # mm
    shape: tuple[int, int, int]  # voxels

    @property
    def fov_mm(self) -> tuple[float, float, float]:
        """Field of view (mm) along each axis."""
        return tuple(float(s * n) for s, n in zip(self.spacing, self.shape))  # type: ignore[return-value]

    def resized(self, size: str | Sequence[int]) -> Centre:
        """The same centre on another grid (``tiny``/``small``/``full`` or three ints), same field of view."""
        shape = resolve_size(size)
        spacing = tuple(round(f / n, 4) for f, n in zip(self.fov_mm, shape))
        return dataclasses.replace(self, shape=shape, spacing=spacing)

    def affine(self) -> np.ndarray:
        """The RAS voxel-to-world affine of the grid, origin at its centre."""
        return make_affine(self.spacing, self.shape)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters (the datalist's ``centres`` entry)."""
        data = dataclasses.asdict(self)
        data["spacing"], data["shape"] = list(self.spacing), list(self.shape)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Centre:
        """The centre :meth:`to_dict` describes (unknown keys are ignored)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["spacing"], values["shape"] = tuple(values["spacing"]), tuple(values["shape"])
        return cls(**values)


def _centre(id: str, name: str, fov: tuple[float, float, float], **params: float) -> Centre:
    shape = SIZES["small"]
    return Centre(id=id, name=name, spacing=tuple(round(f / n, 4) for f, n in zip(fov, shape)),  # type: ignore[arg-type]
                  shape=shape, **params)


CENTRES: dict[str, Centre] = {c.id: c for c in (
    _centre("A", "CHUM-like (Montreal)", (200, 200, 160), ct_noise_hu=12, ct_offset_hu=0, ct_scale=1.00,
            ct_fwhm_mm=1.5, pet_fwhm_mm=5.5, pet_noise=0.15, pet_scale=1.00),
    _centre("B", "CHUS-like (Sherbrooke)", (210, 210, 168), ct_noise_hu=20, ct_offset_hu=15, ct_scale=1.02,
            ct_fwhm_mm=2.5, pet_fwhm_mm=7.5, pet_noise=0.30, pet_scale=1.20),
    _centre("C", "HGJ-like (Montreal JGH)", (192, 192, 150), ct_noise_hu=28, ct_offset_hu=-12, ct_scale=0.97,
            ct_fwhm_mm=2.0, pet_fwhm_mm=9.0, pet_noise=0.45, pet_scale=0.85),
    _centre("D", "HMR-like (Maisonneuve-Rosemont)", (204, 204, 156), ct_noise_hu=16, ct_offset_hu=5, ct_scale=1.00,
            ct_fwhm_mm=1.8, pet_fwhm_mm=6.5, pet_noise=0.25, pet_scale=0.95),
    _centre("E", "CHUP-like (Poitiers)", (216, 216, 162), ct_noise_hu=10, ct_offset_hu=-5, ct_scale=1.01,
            ct_fwhm_mm=1.2, pet_fwhm_mm=4.5, pet_noise=0.12, pet_scale=1.10),
    _centre("F", "MDA-like (MD Anderson)", (198, 198, 170), ct_noise_hu=8, ct_offset_hu=3, ct_scale=0.99,
            ct_fwhm_mm=1.0, pet_fwhm_mm=4.0, pet_noise=0.10, pet_scale=1.05),
)}


def resolve_size(size: str | Sequence[int]) -> tuple[int, int, int]:
    """``"tiny"``/``"small"``/``"full"`` or three positive ints -> grid shape."""
    if isinstance(size, str):
        if size not in SIZES:
            raise UserError(f"unknown size {size!r}; choose one of {', '.join(SIZES)} or three integers")
        return SIZES[size]
    try:
        shape = tuple(int(n) for n in size)
    except (TypeError, ValueError):
        raise UserError(f"size must be a preset name or three integers, got {size!r}") from None
    if len(shape) != 3 or min(shape) < 16:
        raise UserError(f"size must be three integers of at least 16, got {size!r}")
    return shape  # type: ignore[return-value]


def get_centre(centre: str | Centre, size: str | Sequence[int] | None = None) -> Centre:
    """A centre from the table (by id) or as given, optionally resized."""
    if not isinstance(centre, Centre):
        if centre not in CENTRES:
            raise UserError(f"unknown centre {centre!r}; built-in centres: {', '.join(CENTRES)}")
        centre = CENTRES[centre]
    return centre if size is None else centre.resized(size)


__all__ = ["CENTRES", "SIZES", "Centre", "get_centre", "resolve_size"]
