"""Slice-wise parallel-beam projector with an exactly adjoint back-projector, and OSEM.

The system matrix of one transaxial slice (rays x pixels) is built once per
geometry with Joseph's method: each ray is sampled once per pixel column (or
row, whichever axis it runs along more steeply), and each sample is linearly
interpolated between the two nearest pixels, weighted by the path length of
the step.  The matrix is stored as torch sparse CSR matrices, one per OSEM
subset (subset ``s`` holds the angles ``s, s + S, s + 2S, ...``), together with
their explicit transposes.  Forward projection of a whole volume is one sparse
x dense product with the volume seen as a ``(pixels, slices)`` matrix; back
projection uses the transpose of the same matrix, so
``<A x, y> == <x, A^T y>`` holds up to floating-point rounding.

Only pixels whose centre lies inside the circle inscribed in the transaxial
grid (the scanner's field of view) exist for the projector; the images it
reconstructs are zero outside that circle, as on real scanners.

Sinogram layout: ``(n_rays, n_slices)`` where ray ``r`` belongs to angle
``angles[r // n_bins]`` and detector bin ``r % n_bins``; the angles are ordered
subset by subset, so each subset is a contiguous block of rows
(:meth:`ParallelProjector.subset_rows`).

Resolution modelling ("PSF reconstruction", Siemens TrueX / HD, GE SharpIR,
Philips' PSF option): :func:`osem` can model the scanner's blur as an
image-space Gaussian ``H`` applied before projection, ``A H``, and after
back-projection, ``H A^T``.  A Gaussian with zero padding is a symmetric
matrix, so ``H^T = H`` and the pair stays exactly adjoint.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse
import torch
from scipy import ndimage


@dataclass(frozen=True)
class ProjectorGeometry:
    """Geometry of one transaxial slice and its sinogram."""

    nx: int
    ny: int
    dx: float
    dy: float
    n_angles: int
    n_subsets: int = 1

    @property
    def radius(self) -> float:
        """Radius (mm) of the circular field of view inscribed in the grid."""
        return 0.5 * min(self.nx * self.dx, self.ny * self.dy)

    @property
    def bin_width(self) -> float:
        """Detector bin width (mm): the finer in-plane pixel size."""
        return min(self.dx, self.dy)

    @property
    def n_bins(self) -> int:
        """Detector bins per angle, covering the field-of-view diameter."""
        return int(math.ceil(2 * self.radius / self.bin_width - 1e-9))

    @property
    def angle_order(self) -> np.ndarray:
        """Angle indices (of ``n_angles`` equally spaced over 180 degrees) in sinogram order."""
        return np.concatenate([np.arange(s, self.n_angles, self.n_subsets) for s in range(self.n_subsets)])

    @property
    def angles(self) -> np.ndarray:
        """Projection angles (radians) in sinogram order."""
        return self.angle_order * (math.pi / self.n_angles)

    def fov_mask(self) -> np.ndarray:
        """``(nx, ny)`` boolean mask of the pixels inside the field of view."""
        x, y = self._pixel_centres()
        return (x[:, None] ** 2 + y[None, :] ** 2) <= self.radius**2

    def _pixel_centres(self) -> tuple[np.ndarray, np.ndarray]:
        # Same convention as petite.data.nifti.make_affine: world origin at the grid centre.
        x = (np.arange(self.nx) - 0.5 * (self.nx - 1)) * self.dx
        y = (np.arange(self.ny) - 0.5 * (self.ny - 1)) * self.dy
        return x, y


def _joseph_rows(geometry: ProjectorGeometry, theta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse entries (bin, pixel, weight) of one projection angle."""
    g = geometry
    xs, ys = g._pixel_centres()
    inside = g.fov_mask()
    # Matrix columns are the field-of-view pixels only, in C order of (x, y).
    column_of_pixel = np.cumsum(inside.ravel()).reshape(inside.shape) - 1
    t = (np.arange(g.n_bins) - 0.5 * (g.n_bins - 1)) * g.bin_width  # signed distance of each ray from the centre
    normal = np.array([math.cos(theta), math.sin(theta)])
    direction = np.array([-math.sin(theta), math.cos(theta)])
    # Step along the axis the ray crosses most pixels of; interpolate along the other one.
    if abs(direction[0]) / g.dx >= abs(direction[1]) / g.dy:
        major, step_pos, minor_size, minor_spacing = 0, xs, g.ny, g.dy
    else:
        major, step_pos, minor_size, minor_spacing = 1, ys, g.nx, g.dx
    minor = 1 - major
    step_length = (g.dx if major == 0 else g.dy) / abs(direction[major])
    # s: position along the ray where it crosses each major-axis pixel centre line.
    s = (step_pos[None, :] - t[:, None] * normal[major]) / direction[major]  # (bins, steps)
    minor_pos = t[:, None] * normal[minor] + s * direction[minor]
    within = (t[:, None] ** 2 + s**2) <= g.radius**2
    fractional = minor_pos / minor_spacing + 0.5 * (minor_size - 1)
    lower = np.floor(fractional).astype(np.int64)
    upper_weight = fractional - lower
    bins = np.broadcast_to(np.arange(g.n_bins)[:, None], s.shape)
    steps = np.broadcast_to(np.arange(step_pos.size)[None, :], s.shape)
    rows, cols, vals = [], [], []
    for offset, weight in ((0, 1.0 - upper_weight), (1, upper_weight)):
        index = lower + offset
        keep = within & (index >= 0) & (index < minor_size) & (weight > 1e-12)
        i_major, i_minor, b = steps[keep], index[keep], bins[keep]
        ix, iy = (i_major, i_minor) if major == 0 else (i_minor, i_major)
        in_fov = inside[ix, iy]
        rows.append(b[in_fov])
        cols.append(column_of_pixel[ix, iy][in_fov])
        vals.append((weight[keep] * step_length)[in_fov])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def _to_torch_csr(matrix: scipy.sparse.csr_matrix, dtype: torch.dtype) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        # int32 indices: half the memory of int64 and ~15 % faster products (nnz stays far below 2**31).
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(np.int32)),
            torch.from_numpy(matrix.indices.astype(np.int32)),
            torch.from_numpy(matrix.data).to(dtype),
            size=matrix.shape,
        )


@lru_cache(maxsize=2)  # jobs run scanner by scanner; each entry is up to ~200 MB
def _system_matrices(geometry: ProjectorGeometry, dtype: torch.dtype) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Per-subset (A_s, A_s^T) CSR pairs; cached because building takes about a second."""
    n_pixels = int(geometry.fov_mask().sum())
    subsets = []
    angles = geometry.angles
    # Positions (in sinogram order) of each subset's angles: consecutive blocks.
    sizes = [len(range(s, geometry.n_angles, geometry.n_subsets)) for s in range(geometry.n_subsets)]
    starts = np.cumsum([0, *sizes])
    for start, stop in zip(starts[:-1], starts[1:]):
        positions = range(int(start), int(stop))
        rows, cols, vals = [], [], []
        for local, position in enumerate(positions):
            r, c, v = _joseph_rows(geometry, float(angles[position]))
            rows.append(r + local * geometry.n_bins)
            cols.append(c)
            vals.append(v)
        shape = (len(positions) * geometry.n_bins, n_pixels)
        matrix = scipy.sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
        matrix.sum_duplicates()
        matrix.sort_indices()
        subsets.append((_to_torch_csr(matrix, dtype), _to_torch_csr(matrix.T.tocsr(), dtype)))
    return tuple(subsets)


class ParallelProjector:
    """Parallel-beam projector for volumes ``(nx, ny, nz)``, slice by slice along z.

    Args:
        shape_xy: transaxial grid ``(nx, ny)``.
        spacing_xy: transaxial pixel size ``(dx, dy)`` in mm.
        n_angles: projection angles, equally spaced over 180 degrees.
        n_subsets: OSEM subsets (row blocks by angle); 1 for plain projection.
        dtype: torch floating dtype of the matrix and of the results.

    Line integrals are in mm, so projecting an attenuation map in 1/mm gives
    the exponent of the attenuation factors.  Internally images are
    ``(fov_pixels, nz)`` column matrices (:meth:`to_columns`, :meth:`from_columns`);
    OSEM works in that form to skip the pixels outside the field of view.
    """

    def __init__(self, shape_xy: tuple[int, int], spacing_xy: tuple[float, float], n_angles: int,
                 n_subsets: int = 1, dtype: torch.dtype = torch.float32) -> None:
        if n_angles < 1 or not 1 <= n_subsets <= n_angles:
            raise ValueError(f"need 1 <= n_subsets <= n_angles, got {n_subsets} subsets of {n_angles} angles")
        self.geometry = ProjectorGeometry(int(shape_xy[0]), int(shape_xy[1]), float(spacing_xy[0]),
                                          float(spacing_xy[1]), int(n_angles), int(n_subsets))
        self.dtype = dtype
        self.matrices = _system_matrices(self.geometry, dtype)
        starts = np.cumsum([0] + [m.shape[0] for m, _ in self.matrices])
        self._rows = [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]
        self._fov_pixels = torch.from_numpy(np.flatnonzero(self.geometry.fov_mask()))

    @property
    def n_rays(self) -> int:
        """Rows of the sinogram: angles x bins."""
        return self.geometry.n_angles * self.geometry.n_bins

    @property
    def n_subsets(self) -> int:
        """Number of OSEM subsets (row blocks)."""
        return self.geometry.n_subsets

    def subset_rows(self, subset: int) -> slice:
        """Rows of the sinogram that belong to ``subset``."""
        return self._rows[subset]

    def fov_mask(self) -> torch.Tensor:
        """``(nx, ny)`` boolean mask of the field of view."""
        return torch.from_numpy(self.geometry.fov_mask())

    def forward(self, image: torch.Tensor, subset: int | None = None) -> torch.Tensor:
        """Project ``(nx, ny, nz)`` to a sinogram ``(rays, nz)`` (only ``subset``'s rays if given)."""
        return self.forward_columns(self.to_columns(image), subset)

    def back(self, sinogram: torch.Tensor, subset: int | None = None) -> torch.Tensor:
        """Back-project ``(rays, nz)`` (or one subset's rows) to ``(nx, ny, nz)``: the exact adjoint of :meth:`forward`."""
        return self.from_columns(self.back_columns(sinogram, subset))

    def forward_columns(self, columns: torch.Tensor, subset: int | None = None) -> torch.Tensor:
        """:meth:`forward` for an image already in ``(fov_pixels, nz)`` form."""
        if subset is not None:
            return self.matrices[subset][0] @ columns
        return torch.cat([matrix @ columns for matrix, _ in self.matrices], dim=0)

    def back_columns(self, sinogram: torch.Tensor, subset: int | None = None) -> torch.Tensor:
        """:meth:`back` returning the ``(fov_pixels, nz)`` form."""
        sinogram = sinogram.to(self.dtype)
        if sinogram.dim() != 2:
            raise ValueError(f"sinogram must be (rays, slices), got {tuple(sinogram.shape)}")
        if subset is not None:
            return self.matrices[subset][1] @ sinogram.contiguous()
        if sinogram.shape[0] != self.n_rays:
            raise ValueError(f"sinogram has {sinogram.shape[0]} rays, expected {self.n_rays}")
        total = None
        for (_, transposed), rows in zip(self.matrices, self._rows):
            part = transposed @ sinogram[rows].contiguous()
            total = part if total is None else total.add_(part)
        return total

    def to_columns(self, image: torch.Tensor) -> torch.Tensor:
        """``(nx, ny, nz)`` -> ``(fov_pixels, nz)``; pixels outside the field of view are dropped."""
        g = self.geometry
        if image.dim() != 3 or image.shape[0] != g.nx or image.shape[1] != g.ny:
            raise ValueError(f"image must be ({g.nx}, {g.ny}, nz), got {tuple(image.shape)}")
        return image.to(self.dtype).reshape(g.nx * g.ny, -1).index_select(0, self._fov_pixels)

    def from_columns(self, columns: torch.Tensor) -> torch.Tensor:
        """``(fov_pixels, nz)`` -> ``(nx, ny, nz)``, zero outside the field of view."""
        g = self.geometry
        image = columns.new_zeros(g.nx * g.ny, columns.shape[1])
        image.index_copy_(0, self._fov_pixels, columns)
        return image.reshape(g.nx, g.ny, -1)

    def sinogram_view(self, sinogram: torch.Tensor) -> torch.Tensor:
        """Reshape ``(rays, nz)`` to ``(angles, bins, nz)`` (angles in sinogram order)."""
        return sinogram.reshape(self.geometry.n_angles, self.geometry.n_bins, -1)


class ImageBlur:
    """The symmetric image-space Gaussian ``H`` of resolution modelling, on a projector's column form.

    Args:
        projector: gives the column layout (field-of-view pixels x slices).
        sigma_voxels: Gaussian sigma per axis (x, y, z) in voxels.

    Zero padding (``mode="constant"``) keeps the matrix symmetric; scipy's filter runs in float32
    on numpy, so the result does not depend on torch's thread count.
    """

    def __init__(self, projector: ParallelProjector, sigma_voxels: tuple[float, float, float]) -> None:
        self.projector = projector
        self.sigma = tuple(float(v) for v in sigma_voxels)

    def __call__(self, columns: torch.Tensor) -> torch.Tensor:
        """``H`` applied to a ``(fov_pixels, nz)`` image."""
        image = self.projector.from_columns(columns).numpy()
        blurred = ndimage.gaussian_filter(image, self.sigma, mode="constant", cval=0.0)
        return self.projector.to_columns(torch.from_numpy(np.ascontiguousarray(blurred, dtype=np.float32)))


class OsemSensitivity:
    """Per-subset sensitivity ``A_s^T a_s`` (``H A_s^T a_s`` with resolution modelling), stored as its safe inverse.

    Compute it once per attenuation map and share it between every scan of
    that subject (short, long, frames): it costs a full back-projection.
    """

    def __init__(self, projector: ParallelProjector, attenuation: torch.Tensor, blur: ImageBlur | None = None) -> None:
        attenuation = attenuation.to(projector.dtype)
        self.total = 0.0
        self.blur = blur
        self.inverse: list[torch.Tensor] = []
        for subset in range(projector.n_subsets):
            sens = projector.back_columns(attenuation[projector.subset_rows(subset)], subset=subset)
            if blur is not None:
                sens = blur(sens)
            self.total += float(sens.numpy().sum(dtype=np.float64))  # numpy: thread-count independent
            # A pixel no ray of the subset sees (sensitivity 0) is set to zero, not divided by zero.
            self.inverse.append(torch.where(sens > 0, 1.0 / sens.clamp_min(torch.finfo(sens.dtype).tiny),
                                            torch.zeros_like(sens)))


def osem(projector: ParallelProjector, counts: torch.Tensor, attenuation: torch.Tensor, additive: torch.Tensor,
         iterations: int, scale: float = 1.0, sensitivity: OsemSensitivity | None = None,
         blur: ImageBlur | None = None) -> torch.Tensor:
    """Ordered-subsets expectation maximisation for ``counts ~ Poisson(scale * attenuation * A x + additive)``.

    With ``blur`` (resolution modelling) the system model is ``A H`` instead of ``A``.

    Args:
        projector: the system model; its subsets are the OSEM subsets.
        counts: measured sinogram ``(rays, nz)``.
        attenuation: attenuation factors ``exp(-A mu)`` per ray (attenuation correction in the model).
        additive: expected scatter + randoms per ray (must be > 0 where counts > 0).
        iterations: full passes over all subsets.
        scale: counts per unit of ``A x`` (calibration x acquisition time), so ``x`` comes out in activity units.
        sensitivity: :class:`OsemSensitivity` of ``attenuation``, to share between scans; computed if not given.
            It must have been built with the same ``blur``.
        blur: the image-space PSF ``H`` (:class:`ImageBlur`), or ``None`` for no resolution modelling.

    Returns:
        The image ``(nx, ny, nz)``; zero outside the field of view.
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if sensitivity is None:
        sensitivity = OsemSensitivity(projector, attenuation, blur)
    if (sensitivity.blur is None) != (blur is None):
        raise ValueError("the sensitivity was computed with a different resolution model than the reconstruction")
    dtype = projector.dtype
    counts, attenuation, additive = (v.to(dtype) for v in (counts, attenuation, additive))
    nz = counts.shape[1]
    n_columns = sensitivity.inverse[0].shape[0]
    # Start from the uniform image whose expected trues match the measured ones:
    # sum(a * A 1) = sum(A^T a) = the total sensitivity, so no projection is needed.
    trues = float((counts - additive).clamp_min(0).numpy().sum(dtype=np.float64))
    level = trues / max(scale * float(sensitivity.total), 1e-30)
    image = torch.full((n_columns, nz), level, dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    for _ in range(iterations):
        for subset in range(projector.n_subsets):
            rows = projector.subset_rows(subset)
            matrix, transposed = projector.matrices[subset]
            a_s = attenuation[rows]
            if blur is None:
                expected = (matrix @ image).mul_(a_s).mul_(scale).add_(additive[rows]).clamp_min_(tiny)
                ratio = torch.div(counts[rows], expected).mul_(a_s)
                image.mul_(transposed @ ratio).mul_(sensitivity.inverse[subset])
            else:
                expected = (matrix @ blur(image)).mul_(a_s).mul_(scale).add_(additive[rows]).clamp_min_(tiny)
                ratio = torch.div(counts[rows], expected).mul_(a_s)
                image.mul_(blur(transposed @ ratio)).mul_(sensitivity.inverse[subset])
    return projector.from_columns(image)
