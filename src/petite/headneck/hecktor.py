"""Real head-and-neck CT/PET data (HECKTOR-style folders) -> a validated multi-modal datalist.

Two layouts are recognised:

* HECKTOR 2022: ``imagesTr/<PatientID>__CT.nii.gz``, ``imagesTr/<PatientID>__PT.nii.gz``
  and ``labelsTr/<PatientID>.nii.gz`` (e.g. ``CHUM-001__CT.nii.gz``);
* flat: ``<id>_ct.nii.gz``, ``<id>_pet.nii.gz``, ``<id>_label.nii.gz`` in one folder.

``.nii`` works as well as ``.nii.gz``, and so does a folder holding one DICOM
series named like the file without its suffix (``imagesTr/CHUM-001__CT/``,
``<id>_pet/``; :mod:`petite.data.dicom`).  A NIfTI file in those folders whose
name fits neither pattern is an error (nothing is silently dropped); other
files are ignored.  The centre of a patient is its ID's prefix before the
first ``-`` (``CHUM-001`` -> ``CHUM``), or, when a clinical CSV is given and
has the ``centre_column`` column (HECKTOR's ``CenterID``), that column's value.

Every file is loaded once and checked before anything is written: readable
NIfTI, 3D, finite; CT looks like Hounsfield units (minimum below -500); PET
mostly non-negative (at most 5 % of voxels below -0.5) with some uptake;
label values in {0, 1, 2} and on the CT grid (HECKTOR labels are); PET either
on the CT grid or overlapping it in space (real PET has coarser voxels;
:func:`petite.headneck.datalist.load_case` resamples it onto the CT grid).
The first problem raises :class:`~petite.errors.UserError` naming the file (or
the patient, for a missing modality), and the datalist is written atomically,
last, so an error leaves no output.

The clinical CSV's rows are matched by ``PatientID``; a patient without a
row is an error, rows without images are ignored.  When the CSV has the
clinical variable columns of HECKTOR 2022 (``Gender``, ``Age``, ``Tobacco``,
``Alcohol``, ``Performance status``, ``HPV status (0=-, 1=+)``, ``Surgery``,
``Chemotherapy``; ``Relapse``/``RFS`` optional, as in a test set) it is read
and validated by :func:`petite.headneck.clinical.read_clinical_csv` and each
item's ``"clinical"`` is the parsed record (``age``, ``sex``, ..., ``time``,
``event``, ``centre``, ``weight``; ``null`` when missing) - the same structure
the synthetic generator writes, which the prognosis commands read.  A CSV
without those columns (e.g. only ``PatientID`` and ``CenterID``) is kept per
item as raw strings keyed by column name, and cannot feed prognosis.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petite.data.dicom import is_dicom_folder
from petite.data.nifti import load_volume, voxel_spacing
from petite.data.resample import same_grid, world_overlap
from petite.errors import UserError
from petite.headneck.clinical import HEADER_ALIASES, VARIABLES, read_clinical_csv
from petite.headneck.datalist import (
    DEFAULT_FRACTIONS,
    FORMAT,
    LABELS,
    assign_centre_splits,
    parse_fractions,
    split_name,
    write_mm_datalist,
)

log = logging.getLogger(__name__)

# A DICOM series folder takes a NIfTI file's place under the same name without the suffix (CHUM-001__CT/).
_NIFTI = r"(?:\.nii(?:\.gz)?)?"
_HECKTOR_IMAGE = re.compile(rf"^(?P<id>.+)__(?P<mod>CT|PT){_NIFTI}$")
_HECKTOR_LABEL = re.compile(rf"^(?P<id>.+?){_NIFTI}$")
_FLAT = re.compile(rf"^(?P<id>.+)_(?P<mod>ct|pet|label){_NIFTI}$")
_MODALITY = {"CT": "ct", "PT": "pet", "ct": "ct", "pet": "pet", "label": "label"}
_EXPECTED = {"ct": "{id}__CT.nii.gz or {id}_ct.nii.gz", "pet": "{id}__PT.nii.gz or {id}_pet.nii.gz",
             "label": "labelsTr/{id}.nii.gz or {id}_label.nii.gz"}
CT_MAX_MIN_HU = -500.0
PET_MAX_NEGATIVE_FRACTION = 0.05
#: The datalist's ``"source"``: the module's name before the package split, kept so the datalists keep their format.
SOURCE = "petite.headneck.hecktor"


def _is_nifti(path: Path) -> bool:
    """A NIfTI file, or a folder holding a DICOM series (read alike by :func:`petite.data.nifti.load_volume`)."""
    if path.is_dir():
        return is_dicom_folder(path)
    return path.is_file() and (path.name.endswith(".nii") or path.name.endswith(".nii.gz"))


def find_cases(folder: str | Path) -> dict[str, dict[str, Path]]:
    """``{patient: {"ct": path, "pet": path, "label": path}}`` found in ``folder`` (either layout)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError("HECKTOR folder not found (or not a folder)", folder)
    cases: dict[str, dict[str, Path]] = {}

    def add(patient: str, modality: str, path: Path) -> None:
        entry = cases.setdefault(patient, {})
        if modality in entry:
            raise UserError(f"patient {patient!r} has two {modality} files: {entry[modality].name} and {path.name}",
                            path)
        entry[modality] = path

    places = [(folder, "images"), (folder / "imagesTr", "images"), (folder / "labelsTr", "labels")]
    for place, kind in places:
        if not place.is_dir():
            continue
        for path in sorted(place.iterdir()):
            if not _is_nifti(path):
                continue
            match = _HECKTOR_IMAGE.match(path.name) or _FLAT.match(path.name)
            if kind == "labels" and match is None:
                match = _HECKTOR_LABEL.match(path.name)
                if match:
                    add(match["id"], "label", path)
                    continue
            if match is None:
                raise UserError("unrecognised NIfTI file name; expected <id>__CT / <id>__PT (HECKTOR), "
                                "labelsTr/<id>, or <id>_ct / <id>_pet / <id>_label (.nii or .nii.gz)", path)
            add(match["id"], _MODALITY[match["mod"]], path)
    if not cases:
        raise UserError("no CT/PET NIfTI files found; expected imagesTr/<id>__CT.nii.gz, imagesTr/<id>__PT.nii.gz and "
                        "labelsTr/<id>.nii.gz, or <id>_ct/_pet/_label.nii.gz", folder)
    for patient, entry in sorted(cases.items()):
        for modality in ("ct", "pet", "label"):
            if modality not in entry:
                present = ", ".join(p.name for p in entry.values())
                raise UserError(f"patient {patient!r} has no {modality.upper()} file (expected "
                                f"{_EXPECTED[modality].format(id=patient)}; found {present})", folder)
    return cases


def read_clinical(path: str | Path) -> dict[str, dict[str, str]]:
    """Rows of a clinical CSV keyed by ``PatientID``; values kept as stripped strings."""
    path = Path(path)
    if not path.is_file():
        raise UserError("clinical CSV not found", path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read clinical CSV ({err})", path) from None
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    fields = [f.strip() for f in (reader.fieldnames or [])]
    if "PatientID" not in fields:
        raise UserError(f"clinical CSV needs a 'PatientID' column; it has {', '.join(fields) or 'no header'}", path)
    rows: dict[str, dict[str, str]] = {}
    for line, row in enumerate(reader, start=2):
        clean = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
        patient = clean.get("PatientID", "")
        if not patient:
            raise UserError(f"line {line}: empty PatientID", path)
        if patient in rows:
            raise UserError(f"line {line}: patient {patient!r} appears twice", path)
        rows[patient] = clean
    return rows


def has_clinical_variables(columns: Sequence[str]) -> bool:
    """Whether CSV ``columns`` name every clinical variable (HECKTOR 2022 headers or the accepted spellings)."""
    keys = {HEADER_ALIASES.get(" ".join(c.lower().split())) for c in columns}
    return {"id", *VARIABLES} <= keys


def clinical_records(path: str | Path, rows: dict[str, dict[str, str]]) -> dict[str, dict[str, Any]]:
    """What each item stores under ``"clinical"``: parsed records when the CSV has the variable columns.

    ``rows`` are :func:`read_clinical`'s raw rows of the same file.  Parsed with
    :func:`petite.headneck.clinical.read_clinical_csv` (outcome columns
    optional; bad cells raise :class:`UserError` naming row and column);
    otherwise the raw rows are returned unchanged.
    """
    columns = list(next(iter(rows.values()), {}))
    if not has_clinical_variables(columns):
        log.warning("%s: no clinical variable columns (%s); stored as raw strings, not usable for prognosis",
                    path, ", ".join(VARIABLES))
        return rows
    first = Path(path).read_text(encoding="utf-8-sig").splitlines()[0]
    if first.count(";") > first.count(","):
        log.warning("%s: semicolon-separated; stored as raw strings - save it comma-separated (as HECKTOR's) "
                    "to use it for prognosis", path)
        return rows
    return read_clinical_csv(path, require_outcome=False)


def check_case(patient: str, files: dict[str, Path]) -> dict[str, Any]:
    """Load and check one patient's CT, PET and label; return facts for the datalist item."""
    ct, ct_affine = load_volume(files["ct"], what="CT", canonical=True, allow_zero=True)
    if float(ct.min()) >= CT_MAX_MIN_HU:
        raise UserError(f"CT does not look like Hounsfield units: minimum {float(ct.min()):.1f} (air should be "
                        f"about -1000, expected a minimum below {CT_MAX_MIN_HU:.0f})", files["ct"])
    pet, pet_affine = load_volume(files["pet"], what="PET", canonical=True, allow_zero=True)
    negative = float(np.mean(pet < -0.5))
    if negative > PET_MAX_NEGATIVE_FRACTION:
        raise UserError(f"PET has {100 * negative:.1f} % negative voxels (more than "
                        f"{100 * PET_MAX_NEGATIVE_FRACTION:.0f} %); expected SUV or activity", files["pet"])
    if float(pet.max()) <= 0:
        raise UserError("PET has no positive voxel", files["pet"])
    if float(pet.max()) > 200:
        log.warning("%s: PET maximum %.0f looks like Bq/mL rather than SUV", files["pet"], float(pet.max()))
    if not same_grid(pet.shape, pet_affine, ct.shape, ct_affine) and \
            world_overlap(ct.shape, ct_affine, pet.shape, pet_affine) <= 0:
        raise UserError(f"PET (shape {pet.shape}) does not overlap the CT {files['ct'].name} (shape {ct.shape}) "
                        f"in space; check the affines", files["pet"])
    label, label_affine = load_volume(files["label"], what="label", canonical=True, allow_zero=True)
    if label.shape != ct.shape:
        raise UserError(f"label shape {label.shape} does not match the CT {files['ct'].name} shape {ct.shape} "
                        f"(labels must be on the CT grid)", files["label"])
    if not np.allclose(label_affine, ct_affine, atol=1e-2):
        log.warning("%s: label affine differs from the CT's; the label is resampled onto the CT grid when loaded",
                    files["label"])
    values = np.unique(label)
    bad = [float(v) for v in values if v not in LABELS]
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:5])
        raise UserError(f"label values must be 0, 1, 2 (background, GTVp, GTVn), found {shown}", files["label"])
    ct_spacing, pet_spacing = voxel_spacing(ct_affine), voxel_spacing(pet_affine)
    voxel_ml = float(np.prod(ct_spacing)) / 1000.0
    return {
        "ct_shape": list(ct.shape), "ct_spacing": [round(float(s), 4) for s in ct_spacing],
        "pet_shape": list(pet.shape), "pet_spacing": [round(float(s), 4) for s in pet_spacing],
        "pet_on_ct_grid": same_grid(pet.shape, pet_affine, ct.shape, ct_affine),
        "gtvp_ml": round(float(np.count_nonzero(label == 1)) * voxel_ml, 3),
        "gtvn_ml": round(float(np.count_nonzero(label == 2)) * voxel_ml, 3),
        "pet_max": round(float(pet.max()), 3),
    }


def import_hecktor(folder: str | Path, out_datalist: str | Path, clinical_csv: str | Path | None = None,
                   centre_column: str | None = "CenterID", splits: Sequence[float] = DEFAULT_FRACTIONS,
                   seed: int = 0) -> Path:
    """Validate a HECKTOR-style folder and write a ``petite-mm/1`` datalist; return its path.

    ``splits`` are (train, val, test) fractions applied per centre with ``seed``.
    ``centre_column`` (when the CSV has it; ``None`` to ignore) overrides the
    ID-prefix centre.
    """
    folder, out = Path(folder), Path(out_datalist)
    fractions = parse_fractions(splits)
    if int(seed) < 0:
        raise UserError(f"seed must be non-negative, got {seed}")
    cases = find_cases(folder)
    clinical = read_clinical(clinical_csv) if clinical_csv is not None else None
    records = clinical_records(clinical_csv, clinical) if clinical is not None else None  # type: ignore[arg-type]

    centre_of: dict[str, str] = {}
    for patient in sorted(cases):
        centre = patient.split("-", 1)[0] if "-" in patient else patient
        if clinical is not None:
            if patient not in clinical:
                raise UserError(f"patient {patient!r} has no row in the clinical CSV", clinical_csv)
            if centre_column is not None and centre_column in clinical[patient]:
                centre = clinical[patient][centre_column]
                if not centre:
                    raise UserError(f"patient {patient!r}: empty {centre_column!r}", clinical_csv)
        if "-" not in patient and (clinical is None or centre_column is None or centre_column not in clinical[patient]):
            raise UserError(f"patient {patient!r}: cannot tell the centre (no '-' in the ID, like CHUM-001, "
                            f"and no centre column in a clinical CSV)", folder)
        centre_of[patient] = centre

    facts = {patient: check_case(patient, cases[patient]) for patient in sorted(cases)}

    by_centre: dict[str, list[str]] = {}
    for patient, centre in centre_of.items():
        by_centre.setdefault(centre, []).append(patient)
    by_centre = dict(sorted(by_centre.items()))
    assignment = assign_centre_splits(by_centre, fractions, seed=int(seed))
    datalist: dict[str, Any] = {
        "format": FORMAT, "root": ".", "source": SOURCE, "seed": int(seed),
        "split_fractions": list(fractions), "imported_from": str(folder.resolve()),
        "centres": {c: {"id": c, "name": c, "n_patients": len(p)} for c, p in by_centre.items()},
    }
    for centre in by_centre:
        for kind in ("train", "val", "test"):
            name = split_name(centre, kind)
            entries = []
            for patient in assignment[name]:
                entry: dict[str, Any] = {"patient": patient, "centre": centre,
                                         **{k: str(cases[patient][k].resolve()) for k in ("ct", "pet", "label")},
                                         "facts": facts[patient]}
                if records is not None:
                    entry["clinical"] = records[patient]
                entries.append(entry)
            datalist[name] = entries
    write_mm_datalist(out, datalist)
    return out
