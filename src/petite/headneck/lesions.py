"""The tumour parameters of a synthetic head-and-neck patient, shared by the generator profiles.

:class:`Lesion` lives here (not in :mod:`petite.headneck.patient`) so that
:mod:`petite.headneck.realism` (the ``hecktor`` profile's draws) can build
lesions without importing the patient module that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Lesion:
    """One tumour (label 1 GTVp, label 2 GTVn), in anatomical millimetres.

    ``mass_effect`` (``hecktor`` profile only; 0 = none): the fraction of the
    tumour's volume that grew by pushing the surrounding soft tissue aside
    rather than by replacing it (:func:`petite.headneck.realism.displacement`).
    """

    label: int
    site: str
    centre: tuple[float, float, float]
    radius: float
    axes: tuple[float, float, float]
    rotation: np.ndarray
    lobes: list[tuple[np.ndarray, float]]
    suv: float
    necrotic: bool
    ct_delta_hu: float
    ct_visible: bool
    mass_effect: float = 0.0


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A random 3x3 rotation (QR of a Gaussian matrix, signs fixed so the draw is uniform)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def primary_position(rng: np.random.Generator, site: str, side: float, y_air: float) -> tuple[Any, Any, Any]:
    """Where a primary tumour of ``site`` sits (anatomical mm; ``side`` -1 or +1 picks the half of the neck).

    Oropharynx behind the tongue, larynx lower down the airway, anything else (oral cavity) in front of
    it.  Draws 3 uniforms from ``rng``, in the order every profile's patients were pinned with.
    """
    if site == "oropharynx":
        return side * rng.uniform(5, 14), y_air + rng.uniform(0, 8), rng.uniform(12, 32)
    if site == "larynx":
        return side * rng.uniform(3, 12), y_air + rng.uniform(-4, 8), rng.uniform(-28, -2)
    return side * rng.uniform(0, 15), y_air + rng.uniform(18, 30), rng.uniform(22, 36)


__all__ = ["Lesion", "primary_position", "random_rotation"]
