"""HECKTOR import: folder layouts, clinical CSVs, refused inputs (nothing written on an error)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from petite.data.nifti import make_affine, save_volume
from petite.errors import UserError
from petite.headneck.datalist import items, load_case, read_mm_datalist, split_names
from petite.headneck.hecktor import import_hecktor
from tests.headneck.cohort import all_items as _all_items

SHAPE = (12, 12, 10)
AFFINE = make_affine((2.0, 2.0, 2.5), SHAPE)


def _volumes(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ct = np.full(SHAPE, -1000.0, dtype=np.float32)
    ct[2:10, 2:10, :] = 40 + 10 * rng.standard_normal((8, 8, 10))
    pet = np.abs(rng.normal(1.0, 0.2, SHAPE)).astype(np.float32)
    label = np.zeros(SHAPE, dtype=np.float32)
    label[4:7, 4:7, 3:6] = 1
    label[8, 8, 4] = 2
    pet[label == 1] = 8.0
    return ct, pet, label


def _hecktor(root: Path, patients: tuple[str, ...] = ("CHUM-001", "CHUM-002", "CHUM-003", "MDA-001", "MDA-002")) -> Path:
    folder = root / "hecktor"
    for k, patient in enumerate(patients):
        ct, pet, label = _volumes(k)
        save_volume(folder / "imagesTr" / f"{patient}__CT.nii.gz", ct, AFFINE)
        # PET on its own coarser grid, as in real HECKTOR data.
        save_volume(folder / "imagesTr" / f"{patient}__PT.nii.gz", pet[::2, ::2, ::2],
                    make_affine((4.0, 4.0, 5.0), (6, 6, 5)))
        save_volume(folder / "labelsTr" / f"{patient}.nii.gz", label, AFFINE)
    (folder / "imagesTr" / "README.txt").write_text("ignored\n")
    return folder


def test_import_hecktor_folder_with_clinical_csv(tmp_path: Path) -> None:
    folder = _hecktor(tmp_path)
    csv = tmp_path / "clinical.csv"
    csv.write_text('PatientID,CenterID,Age,"HPV status (0=-, 1=+)"\nCHUM-001,1,61,1\nCHUM-002,1,70,\n'
                   "CHUM-003,1,55,0\nMDA-001,7,48,1\nMDA-002,7,66,1\nHGJ-009,2,50,0\n")
    out = import_hecktor(folder, tmp_path / "out" / "datalist.json", clinical_csv=csv, seed=1)
    data = read_mm_datalist(out)
    assert set(data["centres"]) == {"1", "7"}
    chum = [i for name in split_names(data, "1") for i in items(data, name)]
    assert sorted(i["patient"] for i in chum) == ["CHUM-001", "CHUM-002", "CHUM-003"]
    assert [len(items(data, f"1_{k}")) for k in ("train", "val", "test")] == [1, 1, 1]
    first = next(i for i in chum if i["patient"] == "CHUM-002")
    assert first["clinical"]["Age"] == "70" and first["clinical"]["HPV status (0=-, 1=+)"] == ""
    assert first["facts"]["ct_shape"] == list(SHAPE) and first["facts"]["pet_on_ct_grid"] is False
    case = load_case(first)
    assert case["pet"].shape == (1, *SHAPE) and int(case["label"].max()) == 2
    by_prefix = read_mm_datalist(import_hecktor(folder, tmp_path / "prefix.json"))
    assert set(by_prefix["centres"]) == {"CHUM", "MDA"}


def test_import_flat_folder(tmp_path: Path) -> None:
    folder = tmp_path / "flat"
    for k, patient in enumerate(("X-1", "X-2", "Y-1")):
        for key, volume in zip(("ct", "pet", "label"), _volumes(k)):
            save_volume(folder / f"{patient}_{key}.nii.gz", volume, AFFINE)
    out = import_hecktor(folder, folder / "datalist.json", splits=(1, 0, 0))
    data = json.loads(out.read_text())
    assert data["X_train"][0]["ct"] == "X-1_ct.nii.gz"
    assert [i["patient"] for i in data["X_train"]] == ["X-1", "X-2"] and data["X_val"] == []


def test_import_dicom_series_in_place_of_nifti_files(tmp_path: Path) -> None:
    from tests.dicom_series import write_series

    dicom, nifti = tmp_path / "dicom", tmp_path / "nifti"
    for k, patient in enumerate(("CHUM-001", "CHUM-002", "CHUM-003")):
        ct, pet, label = _volumes(k)
        ct, pet = np.round(ct), np.round(pet * 1000) / 1000  # what int16 with slope 1 / 0.001 stores exactly
        write_series(dicom / "imagesTr" / f"{patient}__CT", ct, AFFINE, series_uid=f"1.2.3.{k}.1")
        write_series(dicom / "imagesTr" / f"{patient}__PT", pet, AFFINE, slope=0.001, series_uid=f"1.2.3.{k}.2")
        save_volume(dicom / "labelsTr" / f"{patient}.nii.gz", label, AFFINE)
        for name, volume in ((f"{patient}__CT", ct), (f"{patient}__PT", pet)):
            save_volume(nifti / "imagesTr" / f"{name}.nii.gz", volume, AFFINE)
        save_volume(nifti / "labelsTr" / f"{patient}.nii.gz", label, AFFINE)
    cases = {}
    for folder in (dicom, nifti):
        data = read_mm_datalist(import_hecktor(folder, folder / "datalist.json", splits=(1, 1, 1)))
        cases[folder.name] = item = next(i for i in _all_items(data) if i["patient"] == "CHUM-002")
        assert item["facts"]["pet_on_ct_grid"] is True
    assert Path(cases["dicom"]["ct"]).name == "CHUM-002__CT"
    from_dicom, from_nifti = load_case(cases["dicom"]), load_case(cases["nifti"])
    for key in ("ct", "pet", "label"):
        np.testing.assert_allclose(from_dicom[key].numpy(), from_nifti[key].numpy(), atol=1e-5)


def _break_label(folder: Path) -> str:
    ct, pet, label = _volumes(0)
    label[0, 0, 0] = 5
    save_volume(folder / "labelsTr" / "CHUM-002.nii.gz", label, AFFINE)
    return "CHUM-002.nii.gz"


def _drop_pet(folder: Path) -> str:
    (folder / "imagesTr" / "MDA-001__PT.nii.gz").unlink()
    return "MDA-001"


def _not_nifti(folder: Path) -> str:
    (folder / "imagesTr" / "CHUM-003__CT.nii.gz").write_text("not a NIfTI file\n")
    return "CHUM-003__CT.nii.gz"


def _label_shape(folder: Path) -> str:
    save_volume(folder / "labelsTr" / "MDA-002.nii.gz", np.zeros((12, 12, 9)), make_affine((2, 2, 2.5), (12, 12, 9)))
    return "MDA-002.nii.gz"


def _not_hu(folder: Path) -> str:
    save_volume(folder / "imagesTr" / "CHUM-001__CT.nii.gz", np.full(SHAPE, 5.0), AFFINE)
    return "CHUM-001__CT.nii.gz"


def _odd_name(folder: Path) -> str:
    save_volume(folder / "imagesTr" / "CHUM-004_T1.nii.gz", np.ones(SHAPE), AFFINE)
    return "CHUM-004_T1.nii.gz"


@pytest.mark.parametrize("damage, text", [
    (_break_label, "label values must be 0, 1, 2"),
    (_drop_pet, "no PET file"),
    (_not_nifti, "cannot read CT"),
    (_label_shape, "does not match the CT"),
    (_not_hu, "Hounsfield"),
    (_odd_name, "unrecognised"),
])
def test_import_refuses_bad_inputs_and_writes_nothing(tmp_path: Path, damage, text: str) -> None:
    folder = _hecktor(tmp_path)
    named = damage(folder)
    out = tmp_path / "out" / "datalist.json"
    with pytest.raises(UserError, match=text) as err:
        import_hecktor(folder, out)
    assert named in str(err.value)
    assert not out.exists()


def test_import_csv_must_know_every_patient(tmp_path: Path) -> None:
    folder = _hecktor(tmp_path, ("CHUM-001", "CHUM-002"))
    csv = tmp_path / "clinical.csv"
    csv.write_text("PatientID,CenterID\nCHUM-001,1\n")
    with pytest.raises(UserError, match="CHUM-002.*no row") as err:
        import_hecktor(folder, tmp_path / "d.json", clinical_csv=csv)
    assert "clinical.csv" in str(err.value) and not (tmp_path / "d.json").exists()
    csv.write_text("Patient,Age\nCHUM-001,1\n")
    with pytest.raises(UserError, match="PatientID"):
        import_hecktor(folder, tmp_path / "d.json", clinical_csv=csv)


def test_hecktor_import_parses_a_full_clinical_csv(data: Path, tmp_path: Path, datalist: dict) -> None:
    out = import_hecktor(data.parent / "A", tmp_path / "imported.json", clinical_csv=data.parent / "clinical.csv",
                         splits=(1, 0, 0))
    imported = read_mm_datalist(out)
    by_patient = {i["patient"]: i["clinical"] for i in _all_items(datalist)}
    items = _all_items(imported)
    assert len(items) == 12 and set(imported["centres"]) == {"A"}
    for item in items:
        assert item["clinical"] == by_patient[item["patient"]]
    bad = tmp_path / "bad.csv"
    text = (data.parent / "clinical.csv").read_text().splitlines()
    cells = text[1].split(",")
    cells[3] = "old"
    bad.write_text("\n".join([text[0], ",".join(cells), *text[2:]]) + "\n")
    with pytest.raises(UserError, match="row 2, column 'Age'"):
        import_hecktor(data.parent / "A", tmp_path / "x.json", clinical_csv=bad)
