"""Synthetic FDG brain phantoms (activity and attenuation) built from nilearn's MNI152 templates.

The anatomy is the ICBM152 2009 template shipped inside the nilearn wheel (no
network): grey and white matter probability maps, the brain mask, and CSF as
brain mask minus grey and white matter.  Around the brain, shells at a given
distance from its surface stand in for the outer CSF (0-2 mm), the skull
(2-8 mm) and the scalp (8-13 mm).

Each subject varies (BRIEF section 8): a GM:WM uptake ratio drawn from
U(3.2, 4.5), a smooth random +-12 % modulation of grey-matter uptake, in about
a third of subjects a hypometabolic region (-10 to -30 %), a global uptake
level, and a random affine pose (+-6 degrees per axis, +-8 % scale per axis,
+-4 mm shift).  The subject is built in template space and resampled once,
straight onto a scanner's grid, by composing the pose with the scanner's affine.

Opt-in anatomical variation (``make_subject_phantom(rng, vary_anatomy=True)``,
``petite simulate --anatomy varied``): without it every subject is the same
MNI brain in another pose, and a network can learn the template instead of the
task.  With it each subject also gets

* a thinner or thicker cortex: grey matter next to the CSF turns into CSF
  (atrophy) or white matter next to the grey turns into grey matter, by up to
  about a millimetre (a morphological change of the tissue maps);
* larger or smaller ventricles: a smooth radial deformation centred on the
  lateral ventricles scales them linearly by about 0.9-1.4 (volume 0.7-2.7x,
  the range between young adults and atrophied elderly brains);
* a smooth random deformation (up to ~2.5 mm, features ~24 mm wide) of the
  whole head, so that gyri, ventricles and skull shape differ between subjects.

The two deformations are stored as one displacement field on a coarse (4 mm)
grid and folded into the single resampling onto the scanner grid; they are
small and smooth enough to stay invertible (the tests check that the Jacobian
determinant stays positive).  The default (``vary_anatomy=False``) draws no
extra random numbers and resamples exactly as before.

Units: activity in kBq/mL, attenuation coefficients in 1/mm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import ndimage

from petite.data.scanners import Scanner

# Linear attenuation at 511 keV (1/mm): soft tissue ~0.096/cm, cortical bone ~0.146/cm.
MU_TISSUE = 0.0096
MU_BONE = 0.0146
# Uptake relative to white matter (FDG).
CSF_UPTAKE = 0.05
SKULL_UPTAKE = 0.2
SCALP_UPTAKE = 0.5
# Shell boundaries, mm from the brain surface.
CSF_SHELL_MM, SKULL_SHELL_MM, SCALP_SHELL_MM = 2.0, 8.0, 13.0
_PAD = int(SCALP_SHELL_MM) + 3


@dataclass(frozen=True)
class TemplateTissues:
    """Tissue maps on the (cropped, 1 mm) MNI grid; float32 fractions in [0, 1]."""

    grey: np.ndarray
    white: np.ndarray
    csf: np.ndarray
    skull: np.ndarray
    scalp: np.ndarray
    affine: np.ndarray  # voxel -> MNI mm
    centre_mm: np.ndarray  # centre of the brain's bounding box, MNI mm: lands at the scanner's centre

    @property
    def head(self) -> np.ndarray:
        """Everything that attenuates (fraction)."""
        return np.clip(self.grey + self.white + self.csf + self.skull + self.scalp, 0, 1)


@lru_cache(maxsize=1)
def load_template_tissues() -> TemplateTissues:
    """Load and prepare the MNI152 tissue maps (cached: takes a few seconds)."""
    from nilearn import datasets  # imported lazily: nilearn is slow to import

    grey_img = datasets.load_mni152_gm_template(resolution=1)
    grey = np.asarray(grey_img.get_fdata(), dtype=np.float32)
    white = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=1).get_fdata()) > 0.5
    affine = np.asarray(grey_img.affine, dtype=np.float64)

    # Pad so that the shells around the brain fit inside the grid.
    grey, white, mask = (np.pad(v, _PAD) for v in (grey, white, mask))
    affine = affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.full(3, _PAD)
    brain = ndimage.binary_fill_holes(mask | (grey + white > 0.5))
    # Crop to the brain plus the shells before the (costly) distance transform.
    brain_voxels = np.argwhere(brain)
    low = np.maximum(brain_voxels.min(axis=0) - _PAD, 0)
    high = np.minimum(brain_voxels.max(axis=0) + _PAD + 1, brain.shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    grey, white, brain = grey[crop], white[crop], brain[crop]
    affine[:3, 3] += affine[:3, :3] @ low
    grey = np.where(brain, grey, 0).astype(np.float32)
    white = np.where(brain, white, 0).astype(np.float32)
    total = grey + white
    over = total > 1
    grey[over] /= total[over]
    white[over] /= total[over]
    inner_csf = np.where(brain, np.clip(1 - grey - white, 0, 1), 0).astype(np.float32)

    voxel_mm = float(np.sqrt((affine[:3, :3] ** 2).sum(axis=0)).mean())
    distance = ndimage.distance_transform_edt(~brain) * voxel_mm  # mm outside the brain
    csf = (inner_csf + ((distance > 0) & (distance <= CSF_SHELL_MM))).astype(np.float32)
    skull = ((distance > CSF_SHELL_MM) & (distance <= SKULL_SHELL_MM)).astype(np.float32)
    scalp = ((distance > SKULL_SHELL_MM) & (distance <= SCALP_SHELL_MM)).astype(np.float32)

    head_voxels = np.argwhere(distance <= SCALP_SHELL_MM)
    low = np.maximum(head_voxels.min(axis=0) - 1, 0)
    high = np.minimum(head_voxels.max(axis=0) + 2, distance.shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    affine[:3, 3] += affine[:3, :3] @ low
    brain_voxels = np.argwhere(brain[crop])
    centre_voxel = 0.5 * (brain_voxels.min(axis=0) + brain_voxels.max(axis=0))
    centre_mm = affine[:3, :3] @ centre_voxel + affine[:3, 3]
    return TemplateTissues(
        grey=np.ascontiguousarray(grey[crop]), white=np.ascontiguousarray(white[crop]),
        csf=np.ascontiguousarray(csf[crop]), skull=np.ascontiguousarray(skull[crop]),
        scalp=np.ascontiguousarray(scalp[crop]), affine=affine, centre_mm=centre_mm,
    )


@dataclass(frozen=True)
class SubjectParameters:
    """The random draws that make one subject (recorded for reproducibility)."""

    gm_wm_ratio: float
    white_matter_kbq_ml: float
    rotation_deg: tuple[float, float, float]
    scale: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    hypometabolism: dict[str, Any] | None = None
    anatomy: dict[str, float] | None = None  # None: the template's anatomy (see AnatomyVariation)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (``anatomy`` only when the anatomy was varied, so old records are unchanged)."""
        out = {
            "gm_wm_ratio": self.gm_wm_ratio, "white_matter_kbq_ml": self.white_matter_kbq_ml,
            "rotation_deg": list(self.rotation_deg), "scale": list(self.scale),
            "translation_mm": list(self.translation_mm), "hypometabolism": self.hypometabolism,
        }
        if self.anatomy is not None:
            out["anatomy"] = dict(self.anatomy)
        return out


@dataclass(frozen=True)
class AnatomyVariation:
    """Ranges of the per-subject anatomical variation (``vary_anatomy=True``).

    Attributes:
        cortex_change_mm: (low, high) of a uniform draw; negative thins the cortex (grey matter within
            that distance of the CSF becomes CSF), positive thickens it (white matter within that distance
            of the grey matter becomes grey).  Cortex is ~2.5 mm thick; ageing and Alzheimer's disease
            thin it by a few tenths of a millimetre up to about a millimetre.
        ventricle_strength: (low, high) of ``s`` in the radial deformation around the ventricles; near
            their centre lengths scale by ``1 / (1 - s)``.
        ventricle_sigma_mm: width of the Gaussian window of that deformation (the lateral ventricles
            reach ~35 mm from their centre).
        warp_amplitude_mm: largest displacement of the smooth random deformation, per axis.
        warp_spacing_mm: feature size of the random deformation.
        grid_mm: spacing of the coarse grid that stores the displacement (the template is 1 mm).
    """

    cortex_change_mm: tuple[float, float] = (-0.8, 0.6)
    ventricle_strength: tuple[float, float] = (-0.1, 0.3)
    ventricle_sigma_mm: float = 25.0
    warp_amplitude_mm: float = 2.5
    warp_spacing_mm: float = 24.0
    grid_mm: int = 4


DEFAULT_ANATOMY = AnatomyVariation()


@dataclass(frozen=True)
class _Morphology:
    """Template measurements the anatomical variation needs (subject-independent, so computed once)."""

    inside_parenchyma_mm: np.ndarray  # distance (mm) to the nearest voxel with under 5 % grey + white
    inside_white_mm: np.ndarray  # distance (mm) to the nearest voxel with under 5 % white matter
    ventricle_centre: np.ndarray  # template voxel indices of the lateral ventricles' centre


@lru_cache(maxsize=1)
def _template_morphology() -> _Morphology:
    tissues = load_template_tissues()
    # Distances from the (nearly) pure CSF / pure non-white voxels: every voxel with a trace (>= 5 %) of
    # parenchyma or white matter is at least 1 mm away, so a change of 0 mm keeps the maps as they are.
    inside_parenchyma = ndimage.distance_transform_edt(tissues.grey + tissues.white >= 0.05).astype(np.float32)
    inside_white = ndimage.distance_transform_edt(tissues.white >= 0.05).astype(np.float32)
    # Ventricles: CSF-dominated voxels deep (> 15 mm) inside the CSF-bounded brain.
    depth = ndimage.distance_transform_edt(tissues.grey + tissues.white + tissues.csf > 0.5)
    ventricles = (tissues.csf > 0.5) & (depth > 15)
    if not ventricles.any():  # cannot happen with the MNI template; keeps the function total
        ventricles = depth >= depth.max() - 1
    return _Morphology(inside_parenchyma, inside_white, np.argwhere(ventricles).mean(axis=0))


@dataclass
class SubjectPhantom:
    """One subject's activity and attenuation in template space, with its pose.

    Build with :func:`make_subject_phantom`; sample onto a scanner grid with
    :meth:`activity`, :meth:`attenuation` and :meth:`white_matter`.
    """

    parameters: SubjectParameters
    activity_template: np.ndarray  # kBq/mL
    attenuation_template: np.ndarray  # 1/mm
    tissues: TemplateTissues = field(repr=False)
    # Varied anatomy only: the subject's grey and white matter maps (template grid) and the pull-back
    # displacement (3, coarse grid), in template voxels, sampled every ``grid`` voxels.
    grey: np.ndarray | None = field(default=None, repr=False)
    white: np.ndarray | None = field(default=None, repr=False)
    displacement: np.ndarray | None = field(default=None, repr=False)
    grid: int = 4
    _coordinates: dict[Any, np.ndarray] = field(default_factory=dict, repr=False)

    def scanner_to_template(self, scanner: Scanner) -> np.ndarray:
        """4x4 map from scanner voxel indices to template voxel indices (pose included)."""
        p = self.parameters
        rotation = _rotation_matrix(np.deg2rad(p.rotation_deg))
        pose = np.eye(4)  # subject pose: template mm (centred) -> scanner world mm
        pose[:3, :3] = rotation @ np.diag(p.scale)
        pose[:3, 3] = np.asarray(p.translation_mm) - pose[:3, :3] @ self.tissues.centre_mm
        return np.linalg.inv(self.tissues.affine) @ np.linalg.inv(pose) @ scanner.affine()

    def activity(self, scanner: Scanner) -> np.ndarray:
        """Activity (kBq/mL) sampled on ``scanner``'s grid, before any resolution loss."""
        return self._resample(self.activity_template, scanner)

    def attenuation(self, scanner: Scanner) -> np.ndarray:
        """Linear attenuation coefficients (1/mm) on ``scanner``'s grid."""
        return self._resample(self.attenuation_template, scanner)

    def white_matter(self, scanner: Scanner) -> np.ndarray:
        """White-matter probability on ``scanner``'s grid (for measurements)."""
        return self._resample(self.tissues.white if self.white is None else self.white, scanner)

    def white_matter_core(self, scanner: Scanner, erosion_voxels: int = 2) -> np.ndarray:
        """Boolean mask of pure white matter on ``scanner``'s grid, for noise measurements.

        White matter above 90 % with under 2 % grey matter, eroded by ``erosion_voxels``
        so that grey-matter spill-in through the resolution blur stays small: the
        coefficient of variation inside it is mostly noise.
        """
        core = (self.white_matter(scanner) > 0.9) & (self.grey_matter(scanner) < 0.02)
        return ndimage.binary_erosion(core, iterations=erosion_voxels) if erosion_voxels > 0 else core

    def grey_matter(self, scanner: Scanner) -> np.ndarray:
        """Grey-matter probability on ``scanner``'s grid (for measurements)."""
        return self._resample(self.tissues.grey if self.grey is None else self.grey, scanner)

    def template_coordinates(self, scanner: Scanner) -> np.ndarray:
        """``(3, *scanner.shape)`` template voxel coordinates each scanner voxel samples (pose and deformation).

        Cached per scanner: activity, attenuation and the tissue maps share them.
        """
        if scanner not in self._coordinates:
            matrix = self.scanner_to_template(scanner).astype(np.float32)
            grid = np.indices(scanner.shape, dtype=np.float32).reshape(3, -1)
            coords = matrix[:3, :3] @ grid + matrix[:3, 3:4]
            if self.displacement is not None:
                # Pull-back: the subject at template point q shows the template at q - u(q).
                where = coords / self.grid
                coords -= np.stack([ndimage.map_coordinates(component, where, order=1, mode="nearest",
                                                            prefilter=False) for component in self.displacement])
            self._coordinates[scanner] = coords.reshape(3, *scanner.shape)
        return self._coordinates[scanner]

    def _resample(self, volume: np.ndarray, scanner: Scanner) -> np.ndarray:
        if self.displacement is None:  # the template's anatomy: one affine resampling, as it always was
            matrix = self.scanner_to_template(scanner)
            out = ndimage.affine_transform(volume, matrix[:3, :3], offset=matrix[:3, 3], output_shape=scanner.shape,
                                           order=1, mode="constant", cval=0.0, prefilter=False)
        else:
            out = ndimage.map_coordinates(volume, self.template_coordinates(scanner), order=1, mode="constant",
                                          cval=0.0, prefilter=False)
        return np.clip(out, 0, None).astype(np.float32, copy=False)


def make_subject_phantom(rng: np.random.Generator, vary_anatomy: bool = False,
                         variation: AnatomyVariation = DEFAULT_ANATOMY) -> SubjectPhantom:
    """Draw one subject from ``rng`` (the draws happen in a fixed order: same rng state, same subject).

    With ``vary_anatomy`` the subject's cortex thickness, ventricle size and shape also vary
    (``variation``'s ranges; see the module docstring).  Those draws come after all the others, so the
    pose and uptake of subject ``i`` are the same with and without them.
    """
    tissues = load_template_tissues()
    ratio = float(rng.uniform(3.2, 4.5))
    white_level = float(rng.uniform(4.5, 6.5))  # kBq/mL: dose and body-weight differences
    rotation = tuple(float(v) for v in rng.uniform(-6, 6, 3))
    scale = tuple(float(v) for v in rng.uniform(0.92, 1.08, 3))
    translation = tuple(float(v) for v in rng.uniform(-4, 4, 3))

    grey_uptake = ratio * (1.0 + smooth_field(tissues.grey.shape, rng, amplitude=0.12, spacing_vox=14))
    hypo = None
    if rng.uniform() < 0.35:
        hypo = _hypometabolic_region(tissues, rng)
        grey_uptake *= 1.0 - hypo["depth"] * _gaussian_blob(tissues.grey.shape, hypo["centre_voxel"], hypo["sigma_mm"])

    grey, white, csf = tissues.grey, tissues.white, tissues.csf
    displacement, anatomy = None, None
    if vary_anatomy:
        grey, white, csf, displacement, anatomy = _vary_anatomy(tissues, rng, variation)
    activity = (grey * grey_uptake + white + CSF_UPTAKE * csf
                + SKULL_UPTAKE * tissues.skull + SCALP_UPTAKE * tissues.scalp) * white_level
    attenuation = MU_TISSUE * tissues.head + (MU_BONE - MU_TISSUE) * tissues.skull
    parameters = SubjectParameters(ratio, white_level, rotation, scale, translation, hypo, anatomy)
    if not vary_anatomy:
        return SubjectPhantom(parameters, activity.astype(np.float32), attenuation.astype(np.float32), tissues)
    return SubjectPhantom(parameters, activity.astype(np.float32), attenuation.astype(np.float32), tissues,
                          grey=grey, white=white, displacement=displacement, grid=variation.grid_mm)


def _vary_anatomy(tissues: TemplateTissues, rng: np.random.Generator, variation: AnatomyVariation
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """The subject's (grey, white, csf) maps, its coarse pull-back displacement and the draws' record."""
    morphology = _template_morphology()
    cortex_change = float(rng.uniform(*variation.cortex_change_mm))
    ventricle_strength = float(rng.uniform(*variation.ventricle_strength))
    grey, white, csf = tissues.grey, tissues.white, tissues.csf
    if cortex_change < 0:  # (a draw of exactly 0 changes nothing)
        # Thinner cortex: grey matter within |change| mm of the CSF (sulci, the outer surface, ventricle
        # walls) turns into CSF.  The ramp over one voxel keeps the maps fractional, and change 0 is the identity.
        keep = np.clip(morphology.inside_parenchyma_mm + cortex_change, 0, 1)
        csf = csf + grey * (1 - keep)
        grey = grey * keep
    elif cortex_change > 0:
        # Thicker cortex: white matter within ``change`` mm of the grey matter turns into grey matter.
        keep = np.clip(morphology.inside_white_mm - cortex_change, 0, 1)
        grey = grey + white * (1 - keep)
        white = white * keep

    grid = variation.grid_mm
    coarse_shape = tuple(int(math.ceil(n / grid)) + 1 for n in tissues.grey.shape)
    spacing = max(2, int(round(variation.warp_spacing_mm / grid)))
    warp = np.stack([smooth_field(coarse_shape, rng, amplitude=variation.warp_amplitude_mm, spacing_vox=spacing)
                     for _ in range(3)])
    # Radial field s (x - c) exp(-|x - c|^2 / 2 sigma^2): the pull-back samples the template closer to the
    # centre, so s > 0 enlarges the ventricles by 1 / (1 - s) there and fades out over ~2 sigma.
    points = np.indices(coarse_shape, dtype=np.float32) * grid - morphology.ventricle_centre.reshape(3, 1, 1, 1)
    window = np.exp(-0.5 * (points**2).sum(axis=0) / variation.ventricle_sigma_mm**2)
    displacement = (warp + ventricle_strength * points * window).astype(np.float32)
    record = {"cortex_change_mm": cortex_change, "ventricle_strength": ventricle_strength,
              "ventricle_scale": 1.0 / (1.0 - ventricle_strength),
              "warp_max_mm": float(np.abs(warp).max())}
    return grey.astype(np.float32), white.astype(np.float32), csf.astype(np.float32), displacement, record


def jacobian_determinant(displacement: np.ndarray, grid: float) -> np.ndarray:
    """Jacobian determinant of the pull-back map ``q -> q - u(q)`` on the coarse grid (> 0: invertible)."""
    gradients = [np.gradient(component, grid) for component in displacement]  # d u_i / d x_j
    jac = np.empty((*displacement.shape[1:], 3, 3), dtype=np.float64)
    for i in range(3):
        for j in range(3):
            jac[..., i, j] = (1.0 if i == j else 0.0) - gradients[i][j]
    return np.linalg.det(jac)


def smooth_field(shape: tuple[int, ...], rng: np.random.Generator, amplitude: float, spacing_vox: int) -> np.ndarray:
    """Smooth random field in [-amplitude, amplitude] with features about ``spacing_vox`` voxels wide.

    White noise on a coarse grid, smoothed and trilinearly upsampled: far
    cheaper than filtering noise at full resolution.
    """
    coarse_shape = tuple(int(math.ceil(n / spacing_vox)) + 3 for n in shape)
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), sigma=1.0, mode="wrap")
    coarse /= max(np.abs(coarse).max(), 1e-12)
    # Map full-resolution voxel i to coarse coordinate i / spacing + 1 (one cell of margin each side).
    fine = ndimage.affine_transform(coarse.astype(np.float32), np.full(len(shape), 1.0 / spacing_vox),
                                    offset=np.ones(len(shape)), output_shape=shape, order=1, prefilter=False)
    return (amplitude * fine).astype(np.float32)


def _hypometabolic_region(tissues: TemplateTissues, rng: np.random.Generator) -> dict[str, Any]:
    cortex = np.flatnonzero(tissues.grey.ravel() > 0.6)
    centre = np.unravel_index(int(cortex[rng.integers(cortex.size)]), tissues.grey.shape)
    centre_mm = tissues.affine[:3, :3] @ np.asarray(centre) + tissues.affine[:3, 3]
    return {"centre_voxel": [int(v) for v in centre], "centre_mni_mm": [float(v) for v in centre_mm],
            "sigma_mm": float(rng.uniform(8, 16)), "depth": float(rng.uniform(0.10, 0.30))}


def _gaussian_blob(shape: tuple[int, ...], centre: list[int], sigma_mm: float) -> np.ndarray:
    # Separable: the product of three 1D Gaussians (template voxels are 1 mm).
    axes = [np.exp(-0.5 * ((np.arange(n) - c) / sigma_mm) ** 2).astype(np.float32) for n, c in zip(shape, centre)]
    return axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]


def _rotation_matrix(angles: np.ndarray) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx
