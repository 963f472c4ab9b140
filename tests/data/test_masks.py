"""The head mask: the outline of the object, holes filled, the same whatever the noise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from petite.data.masks import head_mask
from petite.errors import UserError


def _head(shape=(40, 40, 32), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r2 = (grid**2).sum(0)
    head = r2 < 0.6
    cold = r2 < 0.05  # a cold ventricle inside the head
    activity = np.where(head, 4.0, 0.0) * np.where(cold, 0.02, 1.0)
    rng = np.random.default_rng(seed)
    return (activity + rng.normal(0, 0.3, shape)).clip(0, None).astype(np.float32), head


def test_mask_is_the_head_with_its_holes_filled() -> None:
    volume, head = _head()
    mask = head_mask(volume)
    # The smoothing (sigma 1 voxel) moves a sharp border outward by about a voxel; the cold centre is inside.
    assert (mask & head).sum() / head.sum() > 0.95
    assert (mask & ~ndimage.binary_dilation(head, iterations=3)).sum() == 0
    assert mask[20, 20, 16]


def test_mask_does_not_depend_on_the_noise_draw() -> None:
    a, _ = _head(seed=1)
    b, _ = _head(seed=2)
    assert (head_mask(a) ^ head_mask(b)).sum() / head_mask(a).sum() < 0.02


def test_isolated_hot_voxels_outside_are_not_the_head() -> None:
    volume, head = _head()
    volume[1, 1, 1] = 1000.0
    assert not head_mask(volume)[1, 1, 1]


def test_constant_volume_is_a_user_error_naming_the_file() -> None:
    with pytest.raises(UserError, match="scan.nii.gz.*constant"):
        head_mask(np.zeros((10, 10, 10)), "scan.nii.gz")
