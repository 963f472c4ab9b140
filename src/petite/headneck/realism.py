"""The ``hecktor`` generator profile: HECKTOR-like tumour burden, low uptake, physiological PET uptake, mass effect.

The ``default`` profile of :func:`petite.headneck.patient.simulate_patient`
makes PET nearly trivial (every primary has SUV >= 4.5, nothing else in the
neck is as hot) and paints tumours without displacing anything.  The opt-in
``hecktor`` profile (:data:`HECKTOR`, a :class:`HecktorProfile`) changes the
*parameters* of a patient, not the image formation (centres, blur, noise are
shared):

* **Tumour burden** (:meth:`HecktorProfile.draw_lesions`): GTVp nominal
  volume log-normal, median 14 mL, log-sd 0.9 (quartiles about 8 and 26 mL,
  5-95 % about 3-60 mL, clipped to 1-150 mL); 0-6 nodes with probabilities
  0.25/0.30/0.20/0.12/0.07/0.04/0.02; each node log-normal, median 3 mL,
  log-sd 0.9, clipped to 0.3-50 mL; primary site oropharynx 80 %, larynx
  10 %, oral cavity 10 %.  These are **approximations** chosen to lie in the
  ranges reported for the HECKTOR cohorts and for oropharyngeal cancer on
  FDG PET/CT in general (GTVp median of the order of 10-20 mL with a long
  right tail beyond 100 mL; a substantial fraction of patients without
  involved nodes, most of the others with 1-3), not fitted to a published
  table.  HECKTOR sources: V. Oreiller et al., "Head and neck tumor
  segmentation in PET/CT: The HECKTOR challenge", Medical Image Analysis 77,
  102336 (2022); V. Andrearczyk et al., "Overview of the HECKTOR challenge at
  MICCAI 2021", LNCS 13209 (2022); V. Andrearczyk et al., "Overview of the
  HECKTOR challenge at MICCAI 2022: automatic head and neck tumor
  segmentation and outcome prediction in PET/CT", LNCS 13626 (2023).  The
  2020 and 2021 editions were restricted to oropharyngeal cancer, hence the
  site mix.
* **Low-uptake tumours**: 15 % of primaries (20 % of nodes) have a mean SUV
  of 1.8-3.0, i.e. a measured SUVmax of about 2-4, the range of physiological
  lymphoid and muscle uptake; the others log-normal around SUV 8 (primaries,
  clipped 4-20) or 6 (nodes, 3-15).
* **Physiological and inflammatory uptake** (:data:`HOTSPOT_KINDS`,
  :meth:`HecktorProfile.draw_hotspots`), never labelled, so a PET-only model
  meets false-positive candidates: asymmetric palatine tonsil (SUV 3-7),
  lingual tonsil (2.5-5), focal parotid/submandibular uptake (2.5-5), vocal
  cords after speaking (2.5-5), muscle after activity (sternocleidomastoid,
  longus colli, pterygoid; 2-5), brown fat in the lower neck (2-10) and
  post-biopsy inflammation next to the primary (2-5).  The ranges are
  approximate values of the kind described in reviews of FDG PET/CT pitfalls
  in the head and neck (e.g. B. S. Purohit et al., "FDG-PET/CT pitfalls in
  oncological head and neck imaging", Insights into Imaging 5, 2014; for
  brown fat C. Cohade et al., J Nucl Med 44, 2003); they are not measured
  statistics.
* **Mass effect** (:func:`displacement`): a fraction ``k`` (0.2-0.9) of each
  tumour's volume grew by pushing the soft tissue aside.  Material at
  distance ``r`` from the tumour centre came from ``r0 = (r^3 - k R^3)^(1/3)``
  on the same ray (volume conserved around a sphere of equivalent radius
  ``R``), so the displacement falls off like ``k R^3 / (3 r^2)``.  The soft
  structures (airway, vessels, glands, tonsils, tongue, thyroid) and the
  physiological hotspots are evaluated at the displaced coordinates; bone
  and the body contour are not (rigid, and the skin is far away).
* **CT contrast** from a realistic range for non-contrast PET/CT: tumour minus
  soft tissue 0-5 HU (35 %), 5-15 HU (45 %) or 15-30 HU (20 %), so the
  contrast-to-noise ratio measured on the image (``ct_cnr`` in the facts)
  runs from about 0 to a few, depending also on the centre's noise.

The draws come from the patient's parameter stream (after the anatomy, as in
the default profile); the hotspots are drawn after the lesions, so turning
the mass effect or the hotspots off (``dataclasses.replace(HECKTOR,
mass_effect=False)``) changes nothing else about the patient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from petite.errors import UserError
from petite.headneck.lesions import Lesion, primary_position, random_rotation

#: The profile names :func:`petite.headneck.patient.simulate_patient` accepts.
PROFILES: tuple[str, ...] = ("default", "hecktor")

#: kind -> (probability per patient, (low, high) drawn peak SUV before the centre's calibration).
HOTSPOT_KINDS: dict[str, tuple[float, tuple[float, float]]] = {
    "palatine tonsil": (0.40, (3.0, 7.0)),
    "lingual tonsil": (0.30, (2.5, 5.0)),
    "salivary gland": (0.25, (2.5, 5.0)),
    "vocal cords": (0.20, (2.5, 5.0)),
    "muscle": (0.25, (2.0, 5.0)),
    "brown fat": (0.10, (2.0, 10.0)),
    "post-biopsy inflammation": (0.25, (2.0, 5.0)),
}


@dataclass
class Hotspot:
    """One unlabelled region of physiological or inflammatory uptake, in anatomical millimetres.

    ``shape`` is ``"ellipsoid"`` (``a`` = centre, ``radii``) or ``"capsule"``
    (segment ``a``-``b``, radius ``radii[0]``); ``in_fat``: only the fat
    inside the shape takes up (brown fat, patchy).
    """

    kind: str
    detail: str
    shape: str
    a: tuple[float, float, float]
    radii: tuple[float, float, float]
    suv: float
    b: tuple[float, float, float] | None = None
    in_fat: bool = False

    def mask(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Boolean mask of the shape at coordinates ``(x, y, z)`` (broadcast to the grid)."""
        if self.shape == "ellipsoid":
            return (((x - self.a[0]) / self.radii[0]) ** 2 + ((y - self.a[1]) / self.radii[1]) ** 2
                    + ((z - self.a[2]) / self.radii[2]) ** 2) <= 1.0
        a, b = np.asarray(self.a, dtype=np.float32), np.asarray(self.b, dtype=np.float32)
        ab = b - a
        t = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / float(ab @ ab), 0.0, 1.0)
        return ((x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2
                + (z - a[2] - t * ab[2]) ** 2) <= self.radii[0] ** 2


def _lognormal(rng: np.random.Generator, median: float, sigma: float, bounds: tuple[float, float]) -> float:
    return float(np.clip(median * np.exp(sigma * rng.standard_normal()), *bounds))


def radius_of(volume_ml: float) -> float:
    """Equivalent-sphere radius (mm) of a volume in mL."""
    return float((3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0))


def nominal_ml_of(lesion: Lesion) -> float:
    """Nominal volume (mL) of a lesion: ``4/3 pi r^3`` of its equivalent radius."""
    return float(4.0 / 3.0 * np.pi * lesion.radius ** 3 / 1000.0)


@dataclass(frozen=True)
class HecktorProfile:
    """Parameters of the ``hecktor`` profile (module docstring: values, sources and what is approximate).

    Volumes in mL (nominal: ``4/3 pi r^3`` of the equivalent radius, before
    the lobes and boundary noise of the rasterised shape), SUVs before the
    centre's calibration.  ``mass_effect`` and ``hotspots`` switch those two
    features off without changing any other draw.
    """

    gtvp_median_ml: float = 14.0
    gtvp_log_sd: float = 0.9
    gtvp_bounds_ml: tuple[float, float] = (1.0, 150.0)
    node_counts: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
    node_count_probs: tuple[float, ...] = (0.25, 0.30, 0.20, 0.12, 0.07, 0.04, 0.02)
    node_median_ml: float = 3.0
    node_log_sd: float = 0.9
    node_bounds_ml: tuple[float, float] = (0.3, 50.0)
    sites: tuple[str, ...] = ("oropharynx", "larynx", "oral cavity")
    site_probs: tuple[float, ...] = (0.8, 0.1, 0.1)
    primary_low_uptake: float = 0.15
    node_low_uptake: float = 0.20
    low_uptake_suv: tuple[float, float] = (1.8, 3.0)  # mean level; measured SUVmax about 2-4
    primary_suv_median: float = 8.0
    primary_suv_bounds: tuple[float, float] = (4.0, 20.0)
    node_suv_median: float = 6.0
    node_suv_bounds: tuple[float, float] = (3.0, 15.0)
    suv_log_sd: float = 0.35
    ct_contrast: tuple[tuple[float, tuple[float, float]], ...] = ((0.35, (0.0, 5.0)), (0.45, (5.0, 15.0)),
                                                                  (0.20, (15.0, 30.0)))
    ct_visible_hu: float = 8.0  # the default profile's visible tumours start at +8 HU
    mass_effect_range: tuple[float, float] = (0.2, 0.9)
    mass_effect: bool = True
    hotspots: bool = True
    hotspot_kinds: dict[str, tuple[float, tuple[float, float]]] = field(default_factory=lambda: dict(HOTSPOT_KINDS))

    name = "hecktor"

    # ------------------------------------------------------------------ lesions

    def _lesion(self, rng: np.random.Generator, label: int, site: str, where: tuple[float, float, float],
                radius: float, suv: float) -> Lesion:
        probs = [p for p, _ in self.ct_contrast]
        low, high = self.ct_contrast[int(rng.choice(len(probs), p=probs))][1]
        delta = float(rng.uniform(low, high))
        lobes = [(rng.standard_normal(3) / np.sqrt(3) * 0.6 * radius, radius * rng.uniform(0.4, 0.7))
                 for _ in range(int(rng.integers(2, 6)))]
        # Necrosis is more frequent in large tumours and nodes.
        necrotic = bool(radius > 10 and rng.random() < (0.5 if radius > 15 else 0.25))
        k = float(rng.uniform(*self.mass_effect_range))  # drawn even when off, so switching it off moves nothing else
        return Lesion(label=label, site=site, centre=where, radius=radius, axes=tuple(rng.uniform(0.8, 1.2, 3)),
                      rotation=random_rotation(rng), lobes=lobes, suv=suv, necrotic=necrotic, ct_delta_hu=delta,
                      ct_visible=delta >= self.ct_visible_hu, mass_effect=k if self.mass_effect else 0.0)

    def _suv(self, rng: np.random.Generator, low_fraction: float, median: float,
             bounds: tuple[float, float]) -> float:
        if rng.random() < low_fraction:
            return float(rng.uniform(*self.low_uptake_suv))
        return _lognormal(rng, median, self.suv_log_sd, bounds)

    def draw_lesions(self, rng: np.random.Generator, anatomy: dict[str, Any]) -> tuple[list[Lesion], int]:
        """The primary and the nodes of a patient; returns ``(lesions, number of nodes drawn)``.

        Positions follow the default profile's sites (oropharynx, larynx, oral
        cavity; nodes in the lateral neck, 80 % ipsilateral); a node that
        cannot be placed without touching another lesion in 30 tries is
        dropped, so fewer nodes may be placed than drawn.
        """
        s, y_air = anatomy["scale"], anatomy["y_air"]
        side = float(rng.choice([-1.0, 1.0]))
        site = str(rng.choice(list(self.sites), p=list(self.site_probs)))
        where = primary_position(rng, site, side, y_air)
        radius = radius_of(_lognormal(rng, self.gtvp_median_ml, self.gtvp_log_sd, self.gtvp_bounds_ml))
        suv = self._suv(rng, self.primary_low_uptake, self.primary_suv_median, self.primary_suv_bounds)
        lesions = [self._lesion(rng, 1, site, tuple(float(v) for v in where), radius, suv)]
        n_drawn = int(rng.choice(list(self.node_counts), p=list(self.node_count_probs)))
        for _ in range(n_drawn):
            radius = radius_of(_lognormal(rng, self.node_median_ml, self.node_log_sd, self.node_bounds_ml))
            for _attempt in range(30):
                node_side = side if rng.random() < 0.8 else -side
                where = (node_side * rng.uniform(27, 40) * s, y_air + rng.uniform(-14, 4), rng.uniform(-45, 28))
                if all(np.linalg.norm(np.subtract(where, o.centre)) > radius + o.radius + 2 for o in lesions):
                    suv = self._suv(rng, self.node_low_uptake, self.node_suv_median, self.node_suv_bounds)
                    lesions.append(self._lesion(rng, 2, "neck node", tuple(float(v) for v in where), radius, suv))
                    break
        return lesions, n_drawn

    # ------------------------------------------------------------------ hotspots

    def draw_hotspots(self, rng: np.random.Generator, anatomy: dict[str, Any],
                      primary: Lesion) -> list[Hotspot]:
        """Physiological and inflammatory uptake of a patient (each kind with its probability; none if off).

        Positions are tied to the organs of :func:`petite.headneck.patient.simulate_patient`'s
        anatomy (same formulas), so a hotspot sits where that organ is.
        """
        s, y_air, y_sp = anatomy["scale"], anatomy["y_air"], anatomy["y_spine"]
        spots: list[Hotspot] = []
        for kind, (probability, (low, high)) in self.hotspot_kinds.items():
            # One uniform per kind whatever the outcome, so the kinds' draws do not shift each other.
            present = rng.random() < probability
            side = float(rng.choice([-1.0, 1.0]))
            level = float(rng.uniform(low, high))
            jitter = rng.uniform(-3, 3, 3)
            choice = float(rng.random())
            grow = float(rng.uniform(0.9, 1.2))
            if not (present and self.hotspots):
                continue
            if kind == "palatine tonsil":  # one tonsil hotter than the other (asymmetry mimics a tumour)
                spots.append(Hotspot(kind, "right" if side > 0 else "left", "ellipsoid",
                                     (side * 12 * s, y_air + 4, 24), (6 * grow, 6 * grow, 7 * grow), level))
            elif kind == "lingual tonsil":  # base of tongue, midline
                spots.append(Hotspot(kind, "base of tongue", "ellipsoid",
                                     (jitter[0], y_air + 12, 19 + jitter[2]), (10 * grow, 5 * grow, 5 * grow), level))
            elif kind == "salivary gland":  # focal uptake in a parotid or submandibular gland
                if choice < 0.5:
                    where, detail = (side * 46 * s, y_air - 8, 38), "parotid"
                else:
                    where, detail = (side * 33 * s, y_air + 25, 14), "submandibular"
                spots.append(Hotspot(kind, detail, "ellipsoid", tuple(float(w + j) for w, j in zip(where, jitter)),
                                     (6 * grow, 6 * grow, 6 * grow), level))
            elif kind == "vocal cords":  # both cords, lateral to the laryngeal airway
                z_cords = -16 + 2 * jitter[2]
                for cord in (-1.0, 1.0):
                    spots.append(Hotspot(kind, "right" if cord > 0 else "left", "ellipsoid",
                                         (cord * (anatomy["airway_r"] + 2.5), y_air + 2, z_cords), (3.0, 8.0, 3.5),
                                         level))
            elif kind == "muscle":
                if choice < 0.4:  # sternocleidomastoid, mastoid to clavicle
                    spots.append(Hotspot(kind, "sternocleidomastoid", "capsule", (side * 45 * s, y_air - 10, 35),
                                         (6 * grow, 0, 0), level, b=(side * 22 * s, y_air + 12, -65)))
                elif choice < 0.7:  # longus colli, prevertebral, both sides
                    for half in (-1.0, 1.0):
                        spots.append(Hotspot(kind, "longus colli", "capsule", (half * 7, y_sp + 11 * s + 2, 20),
                                             (2.5 * grow, 0, 0), level, b=(half * 7, y_sp + 11 * s + 2, -50)))
                else:  # pterygoid (chewing)
                    spots.append(Hotspot(kind, "pterygoid", "ellipsoid", (side * 32 * s, y_air + 5, 42),
                                         (6 * grow, 10 * grow, 8 * grow), level))
            elif kind == "brown fat":  # supraclavicular / lower-neck fat, both sides, patchy
                for half in (-1.0, 1.0):
                    spots.append(Hotspot(kind, "lower neck", "ellipsoid", (half * 45 * s, y_air - 5, -55 + jitter[2]),
                                         (18 * grow, 16 * grow, 14 * grow), level, in_fat=True))
            elif kind == "post-biopsy inflammation":  # a rim against the primary, where it was biopsied
                direction = jitter / max(float(np.linalg.norm(jitter)), 1e-6)
                where = np.asarray(primary.centre) + direction * primary.radius * 0.95
                r = 4.0 + 3.0 * (grow - 0.9) / 0.3
                spots.append(Hotspot(kind, primary.site, "ellipsoid", tuple(float(v) for v in where), (r, r, r), level))
        return spots


#: The ``hecktor`` profile with its documented parameters.
HECKTOR = HecktorProfile()


def resolve_profile(profile: str | HecktorProfile | None) -> HecktorProfile | None:
    """``"default"``/``None`` -> ``None`` (the default generator), ``"hecktor"`` -> :data:`HECKTOR`, or as given."""
    if profile is None or isinstance(profile, HecktorProfile):
        return profile
    if profile == "default":
        return None
    if profile == "hecktor":
        return HECKTOR
    raise UserError(f"unknown generator profile {profile!r}; choose one of {', '.join(PROFILES)}")


def displacement(x: np.ndarray, y: np.ndarray, z: np.ndarray,
                 lesions: Sequence[Lesion]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mass-effect displacement ``u`` (mm) at each point: material now at ``p`` came from ``p - u(p)``.

    For one lesion of equivalent radius ``R`` and mass-effect fraction ``k``,
    the material at distance ``r`` from its centre came from ``r0 = (r^3 - k
    R^3)^(1/3)`` on the same ray (exact for an expanding sphere in an
    incompressible medium); several lesions add their displacements (a small
    displacement approximation).  Points with ``r^3 < k R^3`` came from no
    surrounding structure (the pushing part of the tumour is there): ``u`` is
    NaN, so every structure's mask test is false and they keep the base soft
    tissue, or the tumour where it is painted.  Without this, the tissue at
    the tumour's centre (e.g. airway) would fill the part of that sphere the
    irregular tumour shape leaves uncovered.
    """
    shape = np.broadcast_shapes(x.shape, y.shape, z.shape)
    u = [np.zeros(shape, dtype=np.float32) for _ in range(3)]
    for lesion in lesions:
        if lesion.mass_effect <= 0:
            continue
        d = [x - np.float32(lesion.centre[0]), y - np.float32(lesion.centre[1]), z - np.float32(lesion.centre[2])]
        r = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
        r0 = np.cbrt(np.maximum(r ** 3 - np.float32(lesion.mass_effect * lesion.radius ** 3), 0.0))
        factor = np.where(r0 > 0, 1.0 - r0 / np.maximum(r, 1e-3), np.nan).astype(np.float32)
        for axis in range(3):
            u[axis] += d[axis] * factor
    return u[0], u[1], u[2]


def push_at(lesion: Lesion, gap_mm: float = 5.0) -> float:
    """Displacement (mm) ``gap_mm`` outside the equivalent sphere of ``lesion`` (0 without mass effect)."""
    r = lesion.radius + gap_mm
    return float(r - np.cbrt(max(r ** 3 - lesion.mass_effect * lesion.radius ** 3, 0.0)))


def contrast_to_noise(ct: np.ndarray, mask: np.ndarray, hu_clean: np.ndarray, label: np.ndarray) -> float | None:
    """CT contrast-to-noise ratio of a lesion: (mean inside - mean of the soft-tissue shell) / shell std.

    The shell is two voxels around the mask, unlabelled, whose noise-free HU
    is soft tissue (-30 to 150 HU: no fat, air or bone); ``None`` when fewer
    than 5 such voxels exist.
    """
    from scipy.ndimage import binary_dilation

    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - 3, 0)
    hi = np.minimum(idx.max(axis=0) + 4, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    inner = mask[box]
    shell = binary_dilation(inner, iterations=2) & ~inner & (label[box] == 0)
    shell &= (hu_clean[box] > -30) & (hu_clean[box] < 150)
    if shell.sum() < 5:
        return None
    values = ct[box][shell]
    return float((ct[box][inner].mean() - values.mean()) / max(float(values.std()), 1e-6))


__all__ = ["HECKTOR", "HOTSPOT_KINDS", "PROFILES", "HecktorProfile", "Hotspot", "contrast_to_noise", "displacement",
           "nominal_ml_of", "push_at", "radius_of", "resolve_profile"]
