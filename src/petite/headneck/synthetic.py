"""A synthetic head-and-neck CT/PET cohort written to disk: volumes, clinical CSV, montage and datalist.

:func:`simulate_hn` generates every patient of every centre
(:func:`petite.headneck.patient.simulate_patient`, possibly in worker
processes) and writes ``OUT/<centre>/<patient>_{ct,pet,label}.nii.gz`` (CT in
HU, PET in SUV, float32; label uint8), ``OUT/montage.png``,
``OUT/clinical.csv`` (HECKTOR 2022 columns, :func:`~petite.headneck.clinical.write_clinical_csv`;
``CenterID`` is the centre id, ``Weight`` empty, blanks where a value is
missing) and the datalist ``OUT/datalist.json`` (format in
:mod:`petite.headneck.datalist`), written last.  Each item carries ``facts``:
lesion volumes (mL), measured mean and max SUV, CT visibility, sites, the
hazard inputs; and ``clinical``: the patient's row of ``clinical.csv`` as
:func:`~petite.headneck.clinical.read_clinical_csv` parses it (keys ``age``,
``sex``, ``tobacco``, ``alcohol``, ``performance``, ``hpv``, ``surgery``,
``chemotherapy``, ``time``, ``event``, ``centre``, ``weight``; ``null`` when
missing), the same structure a HECKTOR import with a clinical CSV gives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petite.atomic import atomic_path
from petite.data.nifti import load_volume, save_volume
from petite.errors import UserError
from petite.headneck import clinical as clinical_model
from petite.headneck.centres import Centre, get_centre, resolve_size
from petite.headneck.datalist import (
    DEFAULT_FRACTIONS,
    FORMAT,
    assign_centre_splits,
    parse_fractions,
    split_name,
    write_mm_datalist,
)
from petite.headneck.patient import patient_id, simulate_patient
from petite.headneck.realism import resolve_profile
from petite.parallel import run_jobs

log = logging.getLogger(__name__)

#: The datalist's ``"source"``: the module's name before the package split, kept so the datalists keep
#: their format (:mod:`petite.prognosis.comparison` recognises synthetic cohorts by it).
SOURCE = "petite.multimodal.synthetic"


def save_label(path: str | Path, label: np.ndarray, affine: np.ndarray) -> None:
    """Atomically write a uint8 label volume."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(label, dtype=np.uint8), affine)
    img.set_data_dtype(np.uint8)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def _run_job(centre: Centre, index: int, seed: int, out: str, profile: str = "default") -> dict[str, Any]:
    patient = simulate_patient(centre, index, seed, profile=profile)
    folder = Path(out) / centre.id
    affine = centre.affine()
    files = {key: folder / f"{patient.patient}_{key}.nii.gz" for key in ("ct", "pet", "label")}
    save_volume(files["ct"], patient.ct, affine)
    save_volume(files["pet"], patient.pet, affine)
    save_label(files["label"], patient.label, affine)
    return {"patient": patient.patient, "centre": centre.id, **{k: str(v) for k, v in files.items()},
            "facts": patient.facts, "clinical": patient.clinical, "seconds": patient.seconds}


def simulate_hn(out: str | Path, centres: Sequence[str | Centre] = ("A", "B", "C"), n_patients: int = 10,
                seed: int = 0, size: str | Sequence[int] = "small",
                splits: Sequence[float] = DEFAULT_FRACTIONS, workers: int = 1, progress: bool = False,
                profile: str = "default") -> Path:
    """Generate ``n_patients`` per centre into ``out``; return the path of ``out/datalist.json``.

    ``profile``: the generator profile, ``"default"`` or ``"hecktor"``
    (:mod:`petite.headneck.realism`); a ``hecktor`` datalist says so in its
    ``"profile"`` key (a default one has no such key, as before profiles).

    ``splits`` are the (train, val, test) fractions of each centre's patients
    (seeded by ``seed`` and the centre).  ``workers > 1`` runs patients in
    that many processes; the output does not depend on it.
    """
    if int(n_patients) < 1:
        raise UserError(f"n_patients must be at least 1, got {n_patients}")
    if int(seed) < 0:
        raise UserError(f"seed must be non-negative, got {seed}")
    if int(workers) < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    fractions = parse_fractions(splits)
    resolve_profile(profile)  # refuse an unknown profile before generating anything
    if isinstance(centres, str):  # "A,B,C" or "A"
        centres = [c.strip() for c in centres.split(",") if c.strip()]
    resolved = [get_centre(c, size) for c in centres]
    ids = [c.id for c in resolved]
    if not ids or len(set(ids)) != len(ids):
        raise UserError(f"centres must be a non-empty list of distinct centres, got {', '.join(ids) or 'none'}")
    # Absolute from here on: the items then name their files unambiguously and write_mm_datalist stores them
    # relative to the datalist's folder (a relative ``out`` would leave them relative to the working directory,
    # which a reader resolves against the datalist's folder instead).
    out = Path(out).absolute()
    jobs = [(centre, k, int(seed), str(out), profile) for centre in resolved for k in range(int(n_patients))]
    results = run_jobs(_run_job, jobs, lambda job: (job[0].id, job[1]), int(workers), progress=progress,
                       desc="simulate-hn", unit="patient")
    seconds = [r.pop("seconds") for r in results.values()]
    log.info("generated %d patients, %.2f s each on average", len(seconds), float(np.mean(seconds)))

    by_patient = {r["patient"]: r for r in results.values()}
    patients = {c.id: [patient_id(c.id, k) for k in range(int(n_patients))] for c in resolved}
    # The clinical CSV, then each item's record exactly as a reader of that CSV sees it.
    clinical_csv = out / "clinical.csv"
    clinical_model.write_clinical_csv(
        clinical_csv, {p: by_patient[p].pop("clinical") for c in resolved for p in patients[c.id]})
    records = clinical_model.read_clinical_csv(clinical_csv)
    for patient, entry in by_patient.items():
        entry["clinical"] = records[patient]
    assignment = assign_centre_splits(patients, fractions, seed=int(seed))
    datalist: dict[str, Any] = {
        "format": FORMAT, "root": ".", "source": SOURCE, "seed": int(seed),
        "size": size if isinstance(size, str) else list(resolve_size(size)), "split_fractions": list(fractions),
        "centres": {c.id: c.to_dict() for c in resolved},
        "clinical_csv": clinical_csv.name, "hazard_model": clinical_model.HAZARD.to_dict(),
    }
    if profile != "default":
        datalist["profile"] = profile
    for c in resolved:
        for kind in ("train", "val", "test"):
            name = split_name(c.id, kind)
            datalist[name] = [by_patient[p] for p in assignment[name]]
    save_hn_montage(out / "montage.png", [(c, by_patient[patients[c.id][0]]) for c in resolved])
    path = out / "datalist.json"
    write_mm_datalist(path, datalist)
    return path


# ----------------------------------------------------------------------------- montage


def save_hn_montage(path: str | Path, rows: Sequence[tuple[Centre, dict[str, Any]]]) -> None:
    """PNG: one row per centre (its first patient), axial slice through the GTVp centre.

    Columns: CT (soft-tissue window W400/L40), PET (SUV 0-10), CT with PET
    and label contours (red GTVp, cyan GTVn), coronal PET through the GTVp.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ("CT W400/L40", "PET SUV 0-10", "CT + PET + labels", "coronal PET + labels")
    n = max(len(rows), 1)
    figure, axes = plt.subplots(n, len(columns), figsize=(3.0 * len(columns), 3.0 * n), squeeze=False,
                                facecolor="black")
    for r, (centre, item) in enumerate(rows):
        ct, _ = load_volume(item["ct"], what="CT")
        pet, _ = load_volume(item["pet"], what="PET")
        label = load_volume(item["label"], what="label", allow_zero=True)[0].astype(np.uint8)
        cx, cy, cz = item["facts"]["gtvp_centre_voxel"]
        sx, sy, sz = centre.spacing
        axial = [0, ct.shape[0] * sx, 0, ct.shape[1] * sy]
        coronal = [0, ct.shape[0] * sx, 0, ct.shape[2] * sz]
        panels = [
            (ct[:, :, cz].T, "gray", (-160, 240), None, None, axial),
            (pet[:, :, cz].T, "hot", (0, 10), None, None, axial),
            (ct[:, :, cz].T, "gray", (-160, 240), pet[:, :, cz].T, label[:, :, cz].T, axial),
            (pet[:, cy, :].T, "hot", (0, 10), None, label[:, cy, :].T, coronal),
        ]
        for c, (image, cmap, (vmin, vmax), overlay, contours, extent) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", extent=extent, interpolation="nearest")
            if overlay is not None:
                ax.imshow(np.ma.masked_less(overlay, 1.5), cmap="hot", vmin=0, vmax=10, alpha=0.5, origin="lower",
                          extent=extent, interpolation="nearest")
            if contours is not None:
                for value, colour in ((1, "red"), (2, "cyan")):
                    if (contours == value).any():
                        ax.contour(contours == value, levels=[0.5], colors=colour, linewidths=0.8, origin="lower",
                                   extent=extent)
            title = f"{centre.id} {centre.name}: {item['patient']}\n{columns[c]}" if c == 0 else columns[c]
            ax.set_title(title, color="white", fontsize=7)
            ax.axis("off")
    for ax in axes.ravel()[len(rows) * len(columns):]:
        ax.axis("off")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=80, facecolor="black")
    plt.close(figure)


__all__ = ["SOURCE", "save_hn_montage", "save_label", "simulate_hn"]
