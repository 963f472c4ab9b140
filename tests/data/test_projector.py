"""The parallel-beam projector: exact adjointness, correct line integrals, and OSEM convergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from petite.data.projector import OsemSensitivity, ParallelProjector, osem


def _disk(projector: ParallelProjector, radius_mm: float, centre_mm: tuple[float, float] = (0.0, 0.0), nz: int = 1) -> torch.Tensor:
    g = projector.geometry
    x = (np.arange(g.nx) - 0.5 * (g.nx - 1)) * g.dx - centre_mm[0]
    y = (np.arange(g.ny) - 0.5 * (g.ny - 1)) * g.dy - centre_mm[1]
    disk = (x[:, None] ** 2 + y[None, :] ** 2) <= radius_mm**2
    return torch.from_numpy(np.repeat(disk[:, :, None], nz, axis=2).astype(np.float64))


@pytest.mark.parametrize(
    ("shape", "spacing", "angles", "subsets"),
    [((40, 40), (4.0, 4.0), 24, 4), ((33, 48), (2.0, 1.5), 15, 3), ((24, 24), (1.0, 1.0), 7, 1)],
)
def test_back_projection_is_the_exact_adjoint(shape, spacing, angles, subsets) -> None:
    projector = ParallelProjector(shape, spacing, angles, subsets, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(*shape, 5, generator=generator, dtype=torch.float64)
    y = torch.rand(projector.n_rays, 5, generator=generator, dtype=torch.float64)
    lhs = float((projector.forward(x) * y).sum())
    rhs = float((x * projector.back(y)).sum())
    assert abs(lhs - rhs) / abs(lhs) < 1e-10
    for subset in range(subsets):
        rows = projector.subset_rows(subset)
        lhs = float((projector.forward(x, subset) * y[rows]).sum())
        rhs = float((x * projector.back(y[rows], subset)).sum())
        assert abs(lhs - rhs) / abs(lhs) < 1e-10


def test_adjointness_in_float32() -> None:
    projector = ParallelProjector((56, 56), (4.0, 4.0), 28, 4)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(56, 56, 8, generator=generator)
    y = torch.rand(projector.n_rays, 8, generator=generator)
    lhs = float((projector.forward(x).double() * y.double()).sum())
    rhs = float((x.double() * projector.back(y).double()).sum())
    assert abs(lhs - rhs) / abs(lhs) < 1e-4


def test_uniform_disk_projects_to_its_chord_lengths_at_every_angle() -> None:
    projector = ParallelProjector((128, 128), (2.0, 2.0), 16, 2, dtype=torch.float64)
    radius = 80.0
    sinogram = projector.sinogram_view(projector.forward(_disk(projector, radius)))[:, :, 0].numpy()
    g = projector.geometry
    t = (np.arange(g.n_bins) - 0.5 * (g.n_bins - 1)) * g.bin_width
    chord = 2 * np.sqrt(np.clip(radius**2 - t**2, 0, None))
    central = np.abs(t) < 0.8 * radius
    for profile in sinogram:  # one row per angle
        np.testing.assert_allclose(profile[central], chord[central], rtol=0.03)
        assert np.all(profile[np.abs(t) > radius + 2 * g.bin_width] == 0)


def test_projection_conserves_mass_and_follows_an_off_centre_object() -> None:
    projector = ParallelProjector((96, 96), (2.0, 2.0), 12, 1, dtype=torch.float64)
    centre = (30.0, -20.0)
    disk = _disk(projector, 12.0, centre)
    sinogram = projector.sinogram_view(projector.forward(disk))[:, :, 0].numpy()
    g = projector.geometry
    # Every angle sees the whole object: sum over bins * bin width = image integral.
    expected_mass = float(disk.sum()) * g.dx * g.dy
    np.testing.assert_allclose(sinogram.sum(axis=1) * g.bin_width, expected_mass, rtol=0.02)
    # The profile's centre of mass sits at the projected position of the disk centre.
    t = (np.arange(g.n_bins) - 0.5 * (g.n_bins - 1)) * g.bin_width
    for theta, profile in zip(g.angles, sinogram):
        expected = centre[0] * math.cos(theta) + centre[1] * math.sin(theta)
        assert abs((profile * t).sum() / profile.sum() - expected) < 0.5 * g.bin_width


def test_images_are_zero_outside_the_field_of_view() -> None:
    projector = ParallelProjector((40, 40), (4.0, 4.0), 20, 4)
    back = projector.back(torch.ones(projector.n_rays, 2))
    mask = projector.fov_mask()
    assert torch.all(back[~mask] == 0) and torch.all(back[mask] > 0)


def test_osem_reduces_the_error_on_noiseless_data() -> None:
    projector = ParallelProjector((48, 48), (4.0, 4.0), 24, 4, dtype=torch.float64)
    activity = 1.0 * _disk(projector, 70.0, nz=2) + 3.0 * _disk(projector, 20.0, (25.0, 0.0), nz=2)
    mu = 0.0096 * _disk(projector, 80.0, nz=2)
    attenuation = torch.exp(-projector.forward(mu))
    scale = 50.0
    trues = scale * attenuation * projector.forward(activity)
    additive = torch.full_like(trues, 0.2 * float(trues.mean()))
    counts = trues + additive  # noiseless
    sensitivity = OsemSensitivity(projector, attenuation)
    inside = projector.fov_mask()
    errors = []
    for iterations in (1, 2, 4, 8):
        image = osem(projector, counts, attenuation, additive, iterations, scale=scale, sensitivity=sensitivity)
        errors.append(float((image - activity)[inside].norm() / activity[inside].norm()))
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.25, errors
    # Attenuation correction and scaling work: the big disk comes out near 1, not attenuated.
    image = osem(projector, counts, attenuation, additive, 8, scale=scale, sensitivity=sensitivity)
    cold_region = _disk(projector, 20.0, (-30.0, 0.0))[:, :, 0].bool()  # inside the big disk, away from edges
    hot_region = _disk(projector, 8.0, (25.0, 0.0))[:, :, 0].bool()
    assert abs(float(image[:, :, 0][cold_region].mean()) - 1.0) < 0.05
    assert abs(float(image[:, :, 0][hot_region].mean()) - 4.0) < 0.4
