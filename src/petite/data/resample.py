"""Volumes on different voxel grids: compare grids, measure their overlap, resample one onto another.

A grid is a shape and a 4x4 voxel-to-world affine (millimetres), as NIfTI
stores them.  Real multi-modal data comes on several grids (HECKTOR PET voxels
are ~4 mm, CT voxels ~1 mm); these helpers bring them together through the two
affines, whatever the modality.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def same_grid(shape_a: Sequence[int], affine_a: np.ndarray, shape_b: Sequence[int], affine_b: np.ndarray,
              tol_mm: float = 1e-3) -> bool:
    """True when two volumes share shape and affine (to ``tol_mm``)."""
    return tuple(shape_a) == tuple(shape_b) and bool(np.allclose(affine_a, affine_b, atol=tol_mm))


def resample_to(data: np.ndarray, affine: np.ndarray, shape: Sequence[int], target_affine: np.ndarray,
                order: int) -> np.ndarray:
    """Resample ``data`` (with ``affine``) onto the grid ``(shape, target_affine)``; zero outside.

    ``order`` is the spline order: 1 (trilinear) for images, 0 (nearest neighbour) for label maps.
    """
    from scipy.ndimage import affine_transform

    matrix = np.linalg.inv(affine) @ target_affine  # target voxel -> source voxel
    out = affine_transform(data, matrix[:3, :3], offset=matrix[:3, 3], output_shape=tuple(shape),
                           order=order, mode="constant", cval=0.0, prefilter=False)
    return out.astype(np.float32)


def world_overlap(shape_a: Sequence[int], affine_a: np.ndarray, shape_b: Sequence[int], affine_b: np.ndarray) -> float:
    """Fraction of volume A's bounding box (world mm, axis-aligned) that volume B's box covers."""
    def box(shape: Sequence[int], affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ends = [(-0.5, n - 0.5) for n in shape]
        corners = np.array([[i, j, k, 1.0] for i in ends[0] for j in ends[1] for k in ends[2]])
        world = (affine @ corners.T)[:3]
        return world.min(axis=1), world.max(axis=1)

    lo_a, hi_a = box(shape_a, affine_a)
    lo_b, hi_b = box(shape_b, affine_b)
    inter = np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0, None)
    return float(np.prod(inter) / max(np.prod(hi_a - lo_a), 1e-9))


__all__ = ["resample_to", "same_grid", "world_overlap"]
