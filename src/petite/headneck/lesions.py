"""The tumour parameters of a synthetic head-and-neck patient, shared by the generator profiles.

:class:`Lesion` lives here (not in :mod:`petite.headneck.patient`) so that
:mod:`petite.headneck.realism` (the ``hecktor`` profile's draws) can build
lesions without importing the patient module that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

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


__all__ = ["Lesion", "random_rotation"]
