"""One synthetic head-and-neck CT/PET patient: anatomy, tumours, clinical record and survival, volumes.

HECKTOR 2022 (7 centres, CT + FDG PET, labels GTVp/GTVn) cannot be downloaded
here, so PEMMA experiments run on this generator.  Per patient
(:func:`simulate_patient`):

* **Anatomy** (millimetres, RAS: x left->right, y posterior->anterior, z
  inferior->superior, origin at the field-of-view centre): a body contour that
  is an ellipse per axial slice (neck, widening to the head above and to the
  shoulders below, with low-order wobble), subcutaneous and intermuscular fat,
  the vertebral column (bodies with marrow and cortex, discs, canal, posterior
  arch), a mandible arc, the airway (trachea/larynx widening to the
  oropharynx), carotids and jugulars, thyroid lobes, submandibular and parotid
  glands, palatine tonsils, the tongue, and the brain/skull base at the top
  edge.  Body size, shift along z and organ uptakes vary per patient.
* **Lesions**: one primary tumour (GTVp, label 1; oropharynx, larynx or oral
  cavity) and 0-3 lymph nodes (GTVn, label 2; lateral neck, mostly
  ipsilateral), each a noise-deformed union of a rotated ellipsoid and a few
  jittered lobes, equivalent radius 8-15 mm (GTVp) or 4-12 mm (GTVn), mean SUV
  4.5-15 (GTVp) or 3-12 (GTVn), sometimes with a necrotic core.  On CT they are
  soft tissue plus 8-20 HU, or (about 30 %) plus 0-3 HU: invisible without PET.
* **Centre** (:class:`~petite.headneck.centres.Centre`): the appearance and
  grid of the patient's images (blur, calibration, noise).

**Profiles**: the above is the ``default`` profile (frozen: other work is
sized on it; ``tests/headneck/test_profile_pinned.py`` pins its output).
``simulate_patient(..., profile="hecktor")`` keeps the anatomy and the
centres but draws HECKTOR-like tumour burden, low-uptake tumours,
unlabelled physiological/inflammatory PET uptake, mass effect and low CT
contrast (:mod:`petite.headneck.realism`), and records more facts.

Determinism: patient ``k`` of centre ``c`` draws from two streams derived from
``(seed, c, k)`` only, so it is the same whatever the number of patients,
centres or workers.  All scalar parameters (anatomy, lesion positions, sizes,
uptakes) come from the first stream, so a patient has the same lesions at
every size; the second stream makes textures and noise.

**Clinical variables and survival** (for prognosis): each patient also gets
the eight clinical variables and a relapse-free survival ``(time, event)``
from :func:`petite.headneck.clinical.draw_patient`, i.e. the documented
Weibull hazard model :data:`petite.headneck.clinical.HAZARD`.  Its imaging
inputs are the *drawn* lesion parameters, not measurements on the voxels: the
total tumour volume is the nominal volume ``sum 4/3 pi r^3`` over the drawn
equivalent radii of the primary and the nodes, and the SUV is the primary's
drawn SUV (before the centre's calibration factor).  The clinical draws come
from a third stream derived from ``(seed, c, k)``, so adding them changed no
image, and a patient's clinical record and survival are the same at every
size.  ``facts["hazard"]`` keeps the nominal volume, the drawn SUV and the
true linear predictor ``eta`` (the oracle risk, with the complete variables).
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter, zoom

from petite.headneck import clinical as clinical_model
from petite.headneck import realism
from petite.headneck.centres import Centre, get_centre
from petite.headneck.lesions import Lesion, primary_position, random_rotation

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def patient_id(centre_id: str, index: int) -> str:
    """``patient_id("A", 2) -> "A-003"`` (index is 0-based, IDs 1-based like HECKTOR's)."""
    return f"{centre_id}-{index + 1:03d}"


def patient_streams(seed: int, centre_id: str, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(parameter stream, texture/noise stream) of patient ``index`` of a centre."""
    sequence = np.random.SeedSequence(int(seed), spawn_key=(zlib.crc32(centre_id.encode()), int(index)))
    params, noise = sequence.spawn(2)
    return np.random.default_rng(params), np.random.default_rng(noise)


def clinical_stream(seed: int, centre_id: str, index: int) -> np.random.Generator:
    """The clinical/survival stream of patient ``index`` of a centre (the third child of its seed sequence).

    Separate from :func:`patient_streams`, so the clinical draws change nothing in the images.
    """
    sequence = np.random.SeedSequence(int(seed), spawn_key=(zlib.crc32(centre_id.encode()), int(index), 2))
    return np.random.default_rng(sequence)


# ----------------------------------------------------------------------------- parameters


_rotation = random_rotation  # the name the default profile's draws use


def _draw_anatomy(rng: np.random.Generator) -> dict[str, Any]:
    s = rng.uniform(0.9, 1.1)
    anatomy = {
        "scale": s, "dz": rng.uniform(-8, 8),
        "a_neck": 57 * s * rng.uniform(0.94, 1.06), "b_neck": 55 * s * rng.uniform(0.94, 1.06), "y_neck": -10.0,
        "a_head": 70 * s * rng.uniform(0.95, 1.05), "b_head": 68 * s * rng.uniform(0.95, 1.05), "y_head": 2.0,
        "shoulders": rng.uniform(55, 80),
        "wobble": [(k, rng.uniform(0, 0.035), rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4)],
        "fat_mm": rng.uniform(4, 12), "fat_fraction": rng.uniform(0.06, 0.14),
        "spine_x": rng.uniform(-3, 3), "y_spine": -20 * s, "disc_phase": rng.uniform(0, 18),
        "airway_r": 8 * s * rng.uniform(0.85, 1.15), "airway_phase": rng.uniform(0, 2 * np.pi),
        "soft_hu": rng.uniform(35, 50), "fat_hu": rng.uniform(-110, -85),
        "muscle_suv": rng.uniform(0.8, 1.1), "fat_suv": rng.uniform(0.25, 0.45),
        "salivary_suv": rng.uniform(1.6, 2.8), "tonsil_suv": rng.uniform(2.0, 4.0),
        "thyroid_suv": rng.uniform(1.2, 2.0), "blood_suv": rng.uniform(1.5, 2.0),
        "tongue_suv": rng.uniform(1.1, 1.7), "brain_suv": rng.uniform(6.5, 9.5), "marrow_suv": rng.uniform(0.8, 1.2),
    }
    anatomy["y_air"] = anatomy["y_spine"] + 11 * s + 4 + anatomy["airway_r"]
    return anatomy


def _draw_lesion(rng: np.random.Generator, label: int, site: str, centre: tuple[float, float, float],
                 radius: float, suv: float) -> Lesion:
    visible = bool(rng.random() < 0.7)
    lobes = [(rng.standard_normal(3) / np.sqrt(3) * 0.6 * radius, radius * rng.uniform(0.4, 0.7))
             for _ in range(int(rng.integers(2, 6)))]
    return Lesion(label=label, site=site, centre=centre, radius=radius, axes=tuple(rng.uniform(0.75, 1.25, 3)),
                  rotation=_rotation(rng), lobes=lobes, suv=suv,
                  necrotic=bool(radius > 11 and rng.random() < 0.3),
                  ct_delta_hu=float(rng.uniform(8, 20) if visible else rng.uniform(0, 3)), ct_visible=visible)


def _draw_lesions(rng: np.random.Generator, anatomy: dict[str, Any]) -> list[Lesion]:
    s, y_air = anatomy["scale"], anatomy["y_air"]
    side = rng.choice([-1.0, 1.0])
    site = str(rng.choice(["oropharynx", "larynx", "oral cavity"], p=[0.5, 0.3, 0.2]))
    where = primary_position(rng, site, side, y_air)
    lesions = [_draw_lesion(rng, 1, site, where, rng.uniform(8, 15), rng.uniform(4.5, 15))]
    for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.2, 0.35, 0.3, 0.15]))):
        for _attempt in range(20):
            node_side = side if rng.random() < 0.8 else -side
            where = (node_side * rng.uniform(27, 40) * s, y_air + rng.uniform(-14, 4), rng.uniform(-40, 28))
            radius = rng.uniform(4, 12)
            if all(np.linalg.norm(np.subtract(where, other.centre)) > radius + other.radius + 2 for other in lesions):
                lesions.append(_draw_lesion(rng, 2, "neck node", where, radius, rng.uniform(3, 12)))
                break
    return lesions


# ----------------------------------------------------------------------------- volumes


@dataclass
class SyntheticPatient:
    """One generated patient: CT (HU), PET (SUV), label (uint8) on ``centre``'s grid, facts and clinical record.

    ``clinical``: the observed clinical record with ``time`` and ``event``
    (:func:`draw_clinical_record`; variables possibly ``None``).
    """

    patient: str
    centre: Centre
    ct: np.ndarray
    pet: np.ndarray
    label: np.ndarray
    facts: dict[str, Any]
    seconds: float
    clinical: dict[str, Any] = dataclasses.field(default_factory=dict)


def nominal_volume_ml(lesions: Sequence[Lesion]) -> float:
    """Total nominal tumour volume (mL): ``sum 4/3 pi r^3`` over the drawn equivalent radii (mm)."""
    return float(sum(4.0 / 3.0 * np.pi * lesion.radius ** 3 for lesion in lesions) / 1000.0)


def draw_clinical_record(rng: np.random.Generator, lesions: Sequence[Lesion],
                         model: clinical_model.HazardModel = clinical_model.HAZARD) -> tuple[dict[str, Any], dict[str, Any]]:
    """Clinical variables and survival of a patient with ``lesions`` (the first is the primary).

    The same draws as :func:`petite.headneck.clinical.draw_patient` (complete
    variables, survival, then missing values), with the drawn tumour burden as
    the imaging inputs.  Returns ``(record, hazard)``: the observed record
    (``time``, ``event``, variables possibly ``None``) and ``{"volume_ml",
    "suv", "eta"}`` (nominal total volume, the primary's drawn SUV, the true
    linear predictor from the complete variables).
    """
    volume, suv = nominal_volume_ml(lesions), float(lesions[0].suv)
    complete = clinical_model.draw_clinical(rng, volume, suv)
    time_days, event = clinical_model.draw_survival(rng, complete, volume, suv, model)
    record = {**clinical_model.hide_values(rng, complete), "time": time_days, "event": event}
    eta = float(model.linear_predictor(complete, volume, suv))
    return record, {"volume_ml": round(volume, 4), "suv": round(suv, 4), "eta": round(eta, 6)}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_mm: float,
                  spacing: Sequence[float]) -> np.ndarray:
    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), [sigma_mm / s for s in spacing])
    return field / max(float(field.std()), 1e-6)


def _sigma(fwhm_mm: float, spacing: Sequence[float]) -> list[float]:
    return [fwhm_mm * FWHM_TO_SIGMA / s for s in spacing]


def simulate_patient(centre: str | Centre, index: int, seed: int = 0,
                     size: str | Sequence[int] | None = None,
                     profile: str | realism.HecktorProfile | None = "default") -> SyntheticPatient:
    """Generate patient ``index`` (0-based) of ``centre`` on the centre's grid (or ``size``).

    ``profile``: ``"default"`` (the generator described above, unchanged) or
    ``"hecktor"`` (:mod:`petite.headneck.realism`: HECKTOR-like tumour
    burden, low-uptake tumours, unlabelled physiological uptake, mass effect,
    realistic CT contrast), or a :class:`~petite.headneck.realism.HecktorProfile`.
    Both share the anatomy, the centres' image formation and the streams.
    """
    started = time.perf_counter()
    centre = get_centre(centre, size)
    spec = realism.resolve_profile(profile)
    param_rng, noise_rng = patient_streams(seed, centre.id, index)
    anatomy = _draw_anatomy(param_rng)
    if spec is None:
        lesions, hotspots, n_drawn = _draw_lesions(param_rng, anatomy), [], 0
    else:
        lesions, n_drawn = spec.draw_lesions(param_rng, anatomy)
        hotspots = spec.draw_hotspots(param_rng, anatomy, lesions[0])
    record, hazard = draw_clinical_record(clinical_stream(seed, centre.id, index), lesions)

    shape, spacing = centre.shape, centre.spacing
    axes = [((np.arange(n) - (n - 1) / 2) * s).astype(np.float32) for n, s in zip(shape, spacing)]
    x = axes[0][:, None, None]
    y = axes[1][None, :, None]
    z = axes[2][None, None, :] - np.float32(anatomy["dz"])  # anatomical z
    # Soft structures are drawn at the coordinates the material came from (mass effect: tumours push them
    # aside); bone and the body contour at the true ones.  Without mass effect both are the same arrays.
    soft = (x, y, z)
    if any(lesion.mass_effect > 0 for lesion in lesions):
        u = realism.displacement(x, y, z, lesions)
        soft = (x - u[0], y - u[1], z - u[2])
    xs, ys, zs = soft

    def sig(v: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-v))

    def ellipsoid(c: Sequence[float], r: Sequence[float], at: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
        px, py, pz = (x, y, z) if at is None else at
        return ((px - c[0]) / r[0]) ** 2 + ((py - c[1]) / r[1]) ** 2 + ((pz - c[2]) / r[2]) ** 2 <= 1.0

    def tube(cx: float, cy: float, rx: float, ry: float, z_max: float,
             at: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
        px, py, pz = (x, y, z) if at is None else at
        return (((px - cx) / rx) ** 2 + ((py - cy) / ry) ** 2 <= 1.0) & (pz < z_max)

    # Body contour: neck ellipse widening to the head above and the shoulders below.
    w_head, w_shoulder = sig((z - 12) / 8), sig((-z - 62) / 6)
    a = anatomy["a_neck"] + (anatomy["a_head"] - anatomy["a_neck"]) * w_head + anatomy["shoulders"] * w_shoulder
    b = anatomy["b_neck"] + (anatomy["b_head"] - anatomy["b_neck"]) * w_head + 15 * w_shoulder
    y0 = anatomy["y_neck"] + (anatomy["y_head"] - anatomy["y_neck"]) * w_head
    theta = np.arctan2(y - y0, np.broadcast_to(x, (shape[0], shape[1], 1)))
    rho = np.sqrt((x / a) ** 2 + ((y - y0) / b) ** 2)
    wobble = 1.0 + sum(eps * np.cos(k * theta + phase) for k, eps, phase in anatomy["wobble"])
    body = rho < wobble
    depth = (wobble - rho) * np.minimum(a, b)  # ~ distance to the skin (mm)

    soft_tex = _smooth_noise(noise_rng, shape, 4.0, spacing)
    uptake_tex = _smooth_noise(noise_rng, shape, 6.0, spacing)
    fat_field = _smooth_noise(noise_rng, shape, 5.0, spacing)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    suv = np.zeros(shape, dtype=np.float32)
    soft_hu = anatomy["soft_hu"] + 6.0 * soft_tex

    def paint(mask: np.ndarray, hu_value: Any, suv_value: Any) -> None:
        hu[mask] = hu_value[mask] if isinstance(hu_value, np.ndarray) else hu_value
        suv[mask] = suv_value[mask] if isinstance(suv_value, np.ndarray) else suv_value

    paint(body, soft_hu, anatomy["muscle_suv"] * (1 + 0.08 * uptake_tex))
    fat = body & ((depth < anatomy["fat_mm"]) | (fat_field > np.quantile(fat_field, 1 - anatomy["fat_fraction"])))
    paint(fat, anatomy["fat_hu"] + 8.0 * soft_tex, anatomy["fat_suv"])

    s, y_air, y_sp, x_sp = anatomy["scale"], anatomy["y_air"], anatomy["y_spine"], anatomy["spine_x"]
    skull_base = 62.0
    # Vessels, glands, tonsils, tongue.
    # ``structures`` keeps each soft structure's mask-maker, so the mass effect can be measured (facts).
    structures: dict[str, Any] = {}
    blood = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        blood |= (tube(side * 21 * s, y_air - 6, 3.5, 3.5, 45, soft)
                  | tube(side * 29 * s, y_air - 10, 5.5, 5.0, 45, soft))
        structures[f"vessels {'right' if side > 0 else 'left'}"] = (
            lambda at, side=side: tube(side * 21 * s, y_air - 6, 3.5, 3.5, 45, at)
            | tube(side * 29 * s, y_air - 10, 5.5, 5.0, 45, at))
    paint(blood & body, 40.0, anatomy["blood_suv"])
    for side in (-1, 1):
        organs = {"thyroid": ((side * 13 * s, y_air + 3, -52), (7, 7, 16)),
                  "submandibular": ((side * 33 * s, y_air + 25, 14), (10, 9, 8)),
                  "parotid": ((side * 46 * s, y_air - 8, 38), (10, 14, 17)),
                  "tonsil": ((side * 12 * s, y_air + 4, 24), (6, 6, 7))}
        paint(ellipsoid(*organs["thyroid"], soft) & body, 90.0, anatomy["thyroid_suv"])
        paint(ellipsoid(*organs["submandibular"], soft) & body, 45.0, anatomy["salivary_suv"])
        paint(ellipsoid(*organs["parotid"], soft) & body, 15.0, 0.9 * anatomy["salivary_suv"])
        paint(ellipsoid(*organs["tonsil"], soft) & body, 45.0, anatomy["tonsil_suv"])
        for name, (c, r) in organs.items():
            structures[f"{name} {'right' if side > 0 else 'left'}"] = lambda at, c=c, r=r: ellipsoid(c, r, at)
    am, bm, ym = 42 * s, 50 * s, 5.0
    rho_m = np.sqrt((x / am) ** 2 + ((y - ym) / bm) ** 2)
    jaw_levels = (z > 18) & (z < 42)

    def tongue_mask(at: tuple[np.ndarray, ...]) -> np.ndarray:
        px, py, pz = at
        rho = rho_m if px is x else np.sqrt((px / am) ** 2 + ((py - ym) / bm) ** 2)
        return (rho < 0.85) & (pz > 18) & (pz < 45) & (py > y_air + 8)

    structures["tongue"] = tongue_mask
    tongue = tongue_mask(soft) & body
    paint(tongue, 50.0 + 4.0 * soft_tex, anatomy["tongue_suv"])

    # Bone: vertebral column (bodies, discs, canal, arch) and mandible.
    spine_levels = z < skull_base
    vertebra = (((x - x_sp) / (14 * s)) ** 2 + ((y - y_sp) / (11 * s)) ** 2 <= 1.0) & spine_levels
    marrow = (((x - x_sp) / (14 * s - 2.5)) ** 2 + ((y - y_sp) / (11 * s - 2.5)) ** 2 <= 1.0) & spine_levels
    disc = ((z - anatomy["disc_phase"]) % 18.0) < 4.0
    canal_r = np.sqrt((x - x_sp) ** 2 + (y - (y_sp - 18 * s)) ** 2)
    arch = (canal_r < 12 * s) & (canal_r >= 8 * s) & (y < y_sp - 12 * s) & spine_levels
    spinous = (np.abs(x - x_sp) < 3) & (y < y_sp - 28 * s) & (y > y_sp - 40 * s) & spine_levels
    cortical = ((vertebra & ~marrow & ~disc) | ((arch | spinous) & ~disc)) & body
    paint(cortical, 750.0, 0.5)
    paint(marrow & ~disc & body, 250.0 + 20.0 * soft_tex, anatomy["marrow_suv"])
    paint(vertebra & disc & body, 80.0, 0.6)
    paint((canal_r < 8 * s) & spine_levels & body, 15.0, 0.4)
    mandible = (np.abs(rho_m - 1.0) * 0.5 * (am + bm) < 4.0) & (y > ym - 15) & jaw_levels & body
    paint(mandible, 1100.0, 0.5)
    cortical |= mandible

    # Airway: round trachea/larynx below, wider and flatter oropharynx above, up to the skull base.
    def airway_mask(at: tuple[np.ndarray, ...]) -> np.ndarray:
        px, py, pz = at
        w_oro = sig(pz / 5.0)
        r_air = anatomy["airway_r"] * (1 + 0.1 * np.sin(pz / 9.0 + anatomy["airway_phase"]))
        rx, ry = r_air * (1 + 0.6 * w_oro), r_air * (1 - 0.25 * w_oro)
        return (((px / rx) ** 2 + ((py - y_air) / ry) ** 2) <= 1.0) & (pz < skull_base - 4)

    structures["airway"] = airway_mask
    airway = airway_mask(soft) & body
    paint(airway, -1000.0, 0.0)

    # Brain and skull at the top edge.
    brain_c, brain_r = (0.0, anatomy["y_head"], skull_base + 45), (58 * s, 66 * s, 45)
    skull = ellipsoid(brain_c, [r + 6 for r in brain_r]) & body
    brain = ellipsoid(brain_c, brain_r) & body
    paint(skull, 1100.0, 0.5)
    paint(brain, 35.0 + 4.0 * soft_tex, anatomy["brain_suv"] * (1 + 0.1 * uptake_tex))
    cortical |= skull & ~brain

    # Physiological and inflammatory uptake (hecktor profile): organs' uptake, no label, CT unchanged; the
    # tumours painted next replace whatever part of it they cover.
    spot_masks = []
    for spot in hotspots:
        spot_mask = spot.mask(xs, ys, zs) & body & ~cortical & ~airway
        if spot.in_fat:
            spot_mask &= fat & (uptake_tex > -0.3)  # brown fat: patchy, only in fat
        suv[spot_mask] = np.maximum(suv[spot_mask], spot.suv * (1 + 0.1 * uptake_tex[spot_mask]))
        spot_masks.append(spot_mask)

    # Lesions.
    label = np.zeros(shape, dtype=np.uint8)
    lesion_masks = []
    for lesion in lesions:
        mask, core = _rasterise(lesion, axes, anatomy["dz"], spacing, noise_rng)
        mask &= body & ~cortical & (label == 0)
        if lesion.label == 1 and not mask.any():  # tiny grids: keep at least the nearest voxel
            index = tuple(int(np.argmin(np.abs(ax - c))) for ax, c in
                          zip(axes, (lesion.centre[0], lesion.centre[1], lesion.centre[2] + anatomy["dz"])))
            mask[index] = True
        core &= mask
        tumour_suv = lesion.suv * (1 + 0.15 * uptake_tex)
        if lesion.necrotic:
            tumour_suv = np.where(core, 0.35 * lesion.suv, tumour_suv)
        paint(mask, soft_hu + lesion.ct_delta_hu, tumour_suv)
        label[mask] = lesion.label
        lesion_masks.append(mask)

    # Centre: CT blur, calibration and noise; PET resolution, Poisson-like noise and calibration.
    ct = gaussian_filter(hu, _sigma(centre.ct_fwhm_mm, spacing))
    ct = centre.ct_scale * ct + centre.ct_offset_hu + centre.ct_noise_hu * noise_rng.standard_normal(shape, dtype=np.float32)
    ct = np.clip(ct, -1024, 3071).astype(np.float32)
    blurred = np.clip(gaussian_filter(suv, _sigma(centre.pet_fwhm_mm, spacing)), 0, None)
    grain = gaussian_filter(noise_rng.standard_normal(shape, dtype=np.float32), 0.6)
    grain /= max(float(grain.std()), 1e-6)
    pet = blurred + centre.pet_noise * (np.sqrt(blurred) + 0.1) * grain
    pet = (np.clip(pet, 0, None) * centre.pet_scale).astype(np.float32)

    facts = _facts(lesions, lesion_masks, pet, label, spacing, centre)
    facts["hazard"] = hazard
    if spec is not None:
        spots = list(zip(hotspots, spot_masks))
        facts.update(_profile_facts(spec, facts["lesions"], lesions, lesion_masks, spots, n_drawn, structures,
                                    (x, y, z), soft, body, ct, hu, pet, label, spacing, centre))
    return SyntheticPatient(patient_id(centre.id, index), centre, ct, pet, label, facts, time.perf_counter() - started,
                            clinical={**record, "centre": centre.id})


def _rasterise(lesion: Lesion, axes: Sequence[np.ndarray], dz: float, spacing: Sequence[float],
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Boolean mask (and necrotic core) of ``lesion`` on the full grid, computed in its bounding box."""
    shape = tuple(len(ax) for ax in axes)
    world = np.array([lesion.centre[0], lesion.centre[1], lesion.centre[2] + dz])
    half = 1.7 * lesion.radius * max(lesion.axes) + 2 * max(spacing)
    lo = [int(np.searchsorted(ax, c - half)) for ax, c in zip(axes, world)]
    hi = [int(np.searchsorted(ax, c + half, side="right")) for ax, c in zip(axes, world)]
    mask = np.zeros(shape, dtype=bool)
    core = np.zeros(shape, dtype=bool)
    box = tuple(slice(l, max(h, l)) for l, h in zip(lo, hi))
    box_shape = tuple(s.stop - s.start for s in box)
    # Same draws whatever the box (the lesion may touch the field-of-view edge).
    field = rng.standard_normal((24, 24, 24)).astype(np.float32)
    if min(box_shape) <= 0:
        return mask, core
    p = np.stack(np.meshgrid(*(ax[s] - c for ax, s, c in zip(axes, box, world)), indexing="ij"), axis=-1)
    local = p @ lesion.rotation  # coordinates in the lesion's own axes
    d = np.sqrt(((local / (lesion.radius * np.asarray(lesion.axes))) ** 2).sum(axis=-1))
    for offset, r in lesion.lobes:
        d = np.minimum(d, np.linalg.norm(p - offset, axis=-1) / r)
    # Boundary deformation: smooth noise resampled onto the box.
    field = gaussian_filter(field, 3.0)
    field = zoom(field / max(float(field.std()), 1e-6), [n / 24 for n in box_shape], order=1)[
        tuple(slice(0, n) for n in box_shape)]
    field = np.pad(field, [(0, n - f) for n, f in zip(box_shape, field.shape)], mode="edge")
    mask[box] = d + 0.15 * field < 1.0
    core[box] = d < 0.45
    return mask, core


def _facts(lesions: list[Lesion], masks: list[np.ndarray], pet: np.ndarray, label: np.ndarray,
           spacing: Sequence[float], centre: Centre) -> dict[str, Any]:
    voxel_ml = float(np.prod(spacing)) / 1000.0
    entries = []
    for lesion, mask in zip(lesions, masks):
        n = int(mask.sum())
        if n == 0:
            continue
        values = pet[mask]
        entries.append({
            "label": lesion.label, "name": "GTVp" if lesion.label == 1 else "GTVn", "site": lesion.site,
            "volume_ml": round(n * voxel_ml, 3), "suv_mean": round(float(values.mean()), 3),
            "suv_max": round(float(values.max()), 3), "suv_true": round(lesion.suv * centre.pet_scale, 3),
            "ct_delta_hu": round(lesion.ct_delta_hu, 2), "ct_visible": lesion.ct_visible,
            "necrotic": lesion.necrotic, "radius_mm": round(lesion.radius, 2),
        })
    primary = entries[0]
    gtvp = np.argwhere(label == 1)
    gtvn = np.count_nonzero(label == 2)
    return {
        "gtvp_ml": primary["volume_ml"], "gtvn_ml": round(float(gtvn * voxel_ml), 3),
        "n_nodes": sum(1 for e in entries if e["label"] == 2),
        "gtvp_suv_mean": primary["suv_mean"], "gtvp_suv_max": primary["suv_max"],
        "gtvp_ct_visible": primary["ct_visible"], "primary_site": primary["site"],
        "gtvp_centre_voxel": [int(v) for v in np.rint(gtvp.mean(axis=0))],
        "lesions": entries,
    }


def _profile_facts(spec: realism.HecktorProfile, entries: list[dict[str, Any]], lesions: list[Lesion],
                   masks: list[np.ndarray],
                   spots: list[tuple[realism.Hotspot, np.ndarray]], n_drawn: int, structures: dict[str, Any],
                   true_at: tuple[np.ndarray, ...], soft_at: tuple[np.ndarray, ...], body: np.ndarray,
                   ct: np.ndarray, hu: np.ndarray, pet: np.ndarray, label: np.ndarray,
                   spacing: Sequence[float], centre: Centre) -> dict[str, Any]:
    """The ``hecktor`` profile's additional facts (the default profile's facts stay as they were).

    Adds to each lesion entry its nominal volume, mass-effect fraction, the
    displacement 5 mm outside it and the CT contrast-to-noise ratio measured
    on the image; and to the patient: the hotspots (unlabelled voxels only,
    measured SUVmax), the nodes drawn (some may not fit), and the mass effect
    on the soft structures: ``structures[name]`` = mean and max displacement
    (mm) of the structure's visible voxels, ``max_shift_mm`` the largest
    displacement of any unlabelled body voxel.
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    extras = []
    for lesion, mask in zip(lesions, masks):
        if not mask.any():  # _facts skips these too
            continue
        cnr = realism.contrast_to_noise(ct, mask, hu, label)
        extras.append({"volume_nominal_ml": round(nominal_volume_ml([lesion]), 3),
                       "mass_effect": round(lesion.mass_effect, 3), "push_5mm_mm": round(realism.push_at(lesion), 2),
                       "ct_cnr": None if cnr is None else round(cnr, 3),
                       "low_uptake": bool(lesion.suv <= spec.low_uptake_suv[1])})
    hotspot_facts = []
    for spot, mask in spots:
        mask = mask & (label == 0)  # what the tumours left of it: unlabelled by construction
        if not mask.any():
            continue
        values = np.where(mask, pet, -np.inf)
        peak = np.unravel_index(int(np.argmax(values)), pet.shape)
        hotspot_facts.append({
            "kind": spot.kind, "detail": spot.detail, "suv_true": round(spot.suv * centre.pet_scale, 3),
            "suv_max": round(float(pet[peak]), 3), "volume_ml": round(float(mask.sum()) * voxel_ml, 3),
            "peak_voxel": [int(v) for v in peak]})
    pushes: dict[str, dict[str, float]] = {}
    max_shift = 0.0
    if soft_at[0] is not true_at[0]:
        u = [t - s for t, s in zip(true_at, soft_at)]
        magnitude = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
        moved = body & (label == 0) & np.isfinite(magnitude)  # NaN: inside a tumour's pushing core
        max_shift = float(magnitude[moved].max()) if moved.any() else 0.0
        for name, make in structures.items():
            visible = make(soft_at) & moved
            if visible.any():
                values = magnitude[visible]
                pushes[name] = {"mean_mm": round(float(values.mean()), 3), "max_mm": round(float(values.max()), 3)}
    primary = extras[0]
    return {
        "profile": spec.name, "n_nodes_drawn": int(n_drawn), "gtvp_ml_nominal": primary["volume_nominal_ml"],
        "gtvp_ct_cnr": primary["ct_cnr"], "gtvp_low_uptake": primary["low_uptake"],
        "lesions": [{**entry, **extra} for entry, extra in zip(entries, extras)],
        "n_hotspots": len(hotspot_facts), "hotspots": hotspot_facts,
        "hotspot_suv_max": max((h["suv_max"] for h in hotspot_facts), default=None),
        "mass_effect": {"max_shift_mm": round(max_shift, 2),
                        "largest_structure_push_mm": max((v["max_mm"] for v in pushes.values()), default=0.0),
                        "structures": pushes},
    }


__all__ = ["Lesion", "SyntheticPatient", "clinical_stream", "draw_clinical_record", "nominal_volume_ml",
           "patient_id", "patient_streams", "simulate_patient"]
