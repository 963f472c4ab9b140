"""Multi-modal (PEMMA) data: synthetic H&N CT/PET, the datalist, loading, crops, HECKTOR import."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from petite.data.nifti import make_affine, save_volume
from petite.errors import UserError
from petite.multimodal.datalist import (
    centre_split_counts,
    items,
    load_case,
    random_crop,
    read_mm_datalist,
    split_names,
    write_mm_datalist,
)
from petite.multimodal.hecktor import import_hecktor
from petite.multimodal.synthetic import CENTRES, get_centre, simulate_hn, simulate_patient


def _array(path: str | Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hn")
    return simulate_hn(out, centres=("A", "B"), n_patients=3, seed=7, size="tiny")


@pytest.fixture(scope="module")
def patients() -> list:
    return [simulate_patient(c, k, seed=1, size="tiny") for c in ("A", "B", "C", "D") for k in range(3)]


# ----------------------------------------------------------------------------- synthetic generator


def test_same_seed_same_patient_and_seed_matters() -> None:
    one, two = simulate_patient("A", 1, seed=5, size="tiny"), simulate_patient("A", 1, seed=5, size="tiny")
    for key in ("ct", "pet", "label"):
        assert np.array_equal(getattr(one, key), getattr(two, key))
    assert one.facts == two.facts
    other = simulate_patient("A", 1, seed=6, size="tiny")
    assert not np.array_equal(one.pet, other.pet)


def test_patient_does_not_depend_on_how_many_are_generated(dataset: Path, tmp_path: Path) -> None:
    fewer = simulate_hn(tmp_path, centres=("A",), n_patients=2, seed=7, size="tiny")
    for patient in ("A-001", "A-002"):
        for key in ("ct", "pet", "label"):
            name = f"A/{patient}_{key}.nii.gz"
            assert np.array_equal(_array(fewer.parent / name), _array(dataset.parent / name))


def test_files_datalist_and_montage(dataset: Path) -> None:
    folder = dataset.parent
    assert (folder / "montage.png").stat().st_size > 1000
    data = json.loads(dataset.read_text())
    assert data["format"] == "petite-mm/1" and data["root"] == "."
    assert set(data["centres"]) == {"A", "B"} and data["centres"]["B"]["pet_scale"] == CENTRES["B"].pet_scale
    assert [k for k in data if k.endswith(("_train", "_val", "_test"))] == [
        "A_train", "A_val", "A_test", "B_train", "B_val", "B_test"]
    item = data["A_train"][0]
    assert item["ct"] == f"A/{item['patient']}_ct.nii.gz" and item["centre"] == "A"
    assert {"gtvp_ml", "gtvn_ml", "gtvp_suv_mean", "gtvp_ct_visible", "lesions"} <= set(item["facts"])
    label = nib.load(str(folder / item["label"]))
    assert label.get_data_dtype() == np.uint8
    assert np.allclose(label.header.get_zooms(), get_centre("A", "tiny").spacing, atol=1e-3)


def test_every_patient_has_a_hot_primary_and_plausible_ct(patients: list) -> None:
    for p in patients:
        assert p.label.dtype == np.uint8 and set(np.unique(p.label)) <= {0, 1, 2}
        gtvp = p.label == 1
        assert gtvp.any(), p.patient
        body_background = (p.ct > -500) & (p.label == 0)
        assert p.pet[gtvp].mean() > 2 * p.pet[body_background].mean(), p.patient
        assert abs(float(np.median(p.ct[:3, :3, :])) + 1000) < 30  # air outside the body
        assert p.ct.max() > 300  # bone
        assert p.pet.min() >= 0
        assert p.facts["gtvp_ml"] > 0 and p.facts["n_nodes"] == len(p.facts["lesions"]) - 1
    visible = [p.facts["gtvp_ct_visible"] for p in patients]
    assert any(visible) and not all(visible)
    assert any(p.facts["n_nodes"] > 0 for p in patients)


def test_centres_change_appearance_not_anatomy() -> None:
    a = get_centre("A", "tiny")
    c_like_a = dataclasses.replace(get_centre("C", "tiny"), id="A", spacing=a.spacing, shape=a.shape)
    sharp, blurry = simulate_patient(a, 0, seed=2), simulate_patient(c_like_a, 0, seed=2)
    assert np.array_equal(sharp.label, blurry.label)  # same patient, same tumours
    gtvp = sharp.label == 1
    assert blurry.pet[gtvp].mean() < 0.9 * sharp.pet[gtvp].mean()  # worse resolution, lower calibration
    air = sharp.ct < -900
    assert blurry.ct[air].std() > 1.8 * sharp.ct[air].std()  # 28 HU vs 12 HU noise
    assert abs(float(np.median(blurry.ct[air])) - float(np.median(sharp.ct[air]))) > 10  # calibration


def test_sizes_keep_field_of_view_and_lesions() -> None:
    tiny, small = get_centre("B", "tiny"), get_centre("B", "small")
    assert tiny.shape == (32, 32, 32) and small.shape == (64, 64, 48)
    assert np.allclose(tiny.fov_mm, small.fov_mm, rtol=1e-3)
    assert get_centre("B", (40, 40, 36)).shape == (40, 40, 36)
    p_tiny, p_small = simulate_patient("B", 0, seed=3, size="tiny"), simulate_patient("B", 0, seed=3, size="small")
    assert p_small.ct.shape == (64, 64, 48)
    assert p_tiny.facts["primary_site"] == p_small.facts["primary_site"]
    assert [e["radius_mm"] for e in p_tiny.facts["lesions"]] == [e["radius_mm"] for e in p_small.facts["lesions"]]


@pytest.mark.parametrize("kwargs, text", [
    ({"centres": ("Z",)}, "unknown centre"),
    ({"size": "huge"}, "unknown size"),
    ({"n_patients": 0}, "n_patients"),
    ({"splits": (0.5, -1, 0.5)}, "splits"),
    ({"centres": ("A", "A")}, "distinct"),
])
def test_simulate_refuses_bad_arguments(tmp_path: Path, kwargs: dict, text: str) -> None:
    with pytest.raises(UserError, match=text):
        simulate_hn(tmp_path / "out", **{"n_patients": 1, "size": "tiny", **kwargs})
    assert not (tmp_path / "out" / "datalist.json").exists()


# ----------------------------------------------------------------------------- datalist


def test_split_counts() -> None:
    assert centre_split_counts(10, (0.6, 0.2, 0.2)) == {"train": 6, "val": 2, "test": 2}
    assert centre_split_counts(3, (0.6, 0.2, 0.2)) == {"train": 1, "val": 1, "test": 1}
    assert centre_split_counts(1, (0.6, 0.2, 0.2)) == {"train": 1, "val": 0, "test": 0}
    assert centre_split_counts(5, (1, 0, 0)) == {"train": 5, "val": 0, "test": 0}


def test_datalist_round_trip_and_disjoint_splits(dataset: Path, tmp_path: Path) -> None:
    data = read_mm_datalist(dataset)
    assert split_names(data) == ["A_train", "A_val", "A_test", "B_train", "B_val", "B_test"]
    assert split_names(data, "B") == ["B_train", "B_val", "B_test"]
    patients = [item["patient"] for name in split_names(data) for item in items(data, name)]
    assert sorted(patients) == sorted(f"{c}-00{k}" for c in "AB" for k in (1, 2, 3))  # all, once
    for name in split_names(data):
        for item in items(data, name):
            assert Path(item["ct"]).is_absolute() and Path(item["ct"]).is_file()
    copy = tmp_path / "elsewhere" / "copy.json"
    write_mm_datalist(copy, data)
    again = read_mm_datalist(copy)
    assert [i["pet"] for i in again["A_train"]] == [i["pet"] for i in data["A_train"]]
    assert again["A_train"][0]["facts"] == data["A_train"][0]["facts"]
    with pytest.raises(UserError, match="unknown split 'C_train'.*A_train"):
        items(data, "C_train")


def test_datalist_errors_name_the_file(dataset: Path, tmp_path: Path) -> None:
    data = dict(json.loads(dataset.read_text()), root=str(dataset.parent))  # an absolute root works too
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    assert Path(read_mm_datalist(bad)["A_train"][0]["ct"]).is_file()
    duplicate = dict(data, A_val=data["A_val"] + [data["A_train"][0]])
    missing = dict(data, A_train=[dict(data["A_train"][0], pet="A/nope.nii.gz")])
    for broken, text in ((duplicate, "appears in both"), (missing, "pet file not found"),
                         (dict(data, format="x"), "format"), (dict(data, Z_train=[]), "centre 'Z'")):
        bad.write_text(json.dumps(broken))
        with pytest.raises(UserError, match=text) as err:
            read_mm_datalist(bad)
        assert str(bad) in str(err.value)


def test_load_case_shapes_and_normalisation(dataset: Path) -> None:
    item = read_mm_datalist(dataset)["B_train"][0]
    case = load_case(item)
    assert case["patient"] == item["patient"] and case["centre"] == "B"
    for key in ("ct", "pet", "label"):
        assert case[key].shape == (1, 32, 32, 32)
    assert case["ct"].dtype == torch.float32 and case["pet"].dtype == torch.float32
    assert case["label"].dtype == torch.int64 and set(case["label"].unique().tolist()) <= {0, 1, 2}
    assert 0.0 <= case["ct"].min() and case["ct"].max() <= 1.0 and case["ct"].min() == 0.0
    body = torch.from_numpy(_array(item["ct"]) > -500)[None]
    pet = case["pet"][body]
    assert abs(float(pet.mean())) < 1e-3 and abs(float(pet.std()) - 1) < 1e-2
    suv = load_case(item, pet_norm="suv")["pet"]
    assert 0.0 <= suv.min() and suv.max() <= 1.0
    with pytest.raises(UserError, match="PET normalisation"):
        load_case(item, pet_norm="minmax")


def test_load_case_resamples_pet_onto_the_ct_grid(dataset: Path, tmp_path: Path) -> None:
    from scipy.ndimage import gaussian_filter

    item = dict(read_mm_datalist(dataset)["A_train"][0])
    pet = gaussian_filter(_array(item["pet"]).astype(np.float32), 1.5)  # smooth: a coarse grid can hold it
    spacing = get_centre("A", "tiny").spacing
    save_volume(tmp_path / "pet_fine.nii.gz", pet, make_affine(spacing, pet.shape))
    coarse = pet.reshape(16, 2, 16, 2, 16, 2).mean(axis=(1, 3, 5))
    save_volume(tmp_path / "pet_coarse.nii.gz", coarse, make_affine(tuple(2 * s for s in spacing), coarse.shape))
    case = load_case(dict(item, pet=str(tmp_path / "pet_coarse.nii.gz")), pet_norm="suv")
    reference = load_case(dict(item, pet=str(tmp_path / "pet_fine.nii.gz")), pet_norm="suv")
    assert case["pet"].shape == reference["pet"].shape == (1, 32, 32, 32)
    inner = (slice(None), slice(2, -2), slice(2, -2), slice(2, -2))  # away from the field-of-view edge
    aligned = np.corrcoef(case["pet"][inner].ravel(), reference["pet"][inner].ravel())[0, 1]
    shifted = np.corrcoef(case["pet"].roll(2, 1)[inner].ravel(), reference["pet"][inner].ravel())[0, 1]
    assert aligned > 0.95 and aligned > shifted


# ----------------------------------------------------------------------------- crops


def test_random_crop_is_deterministic_and_foreground_biased(dataset: Path) -> None:
    case = load_case(read_mm_datalist(dataset)["A_train"][0])
    one = random_crop(case, 16, np.random.default_rng(4))
    two = random_crop(case, 16, np.random.default_rng(4))
    for key in ("ct", "pet", "label"):
        assert one[key].shape == (1, 16, 16, 16) and torch.equal(one[key], two[key])
    assert one["patient"] == case["patient"]
    rng = np.random.default_rng(0)
    assert all(random_crop(case, (12, 10, 8), rng, foreground_prob=1.0)["label"].any() for _ in range(50))
    background = sum(bool(random_crop(case, 8, rng, foreground_prob=0.0)["label"].any()) for _ in range(50))
    assert background < 50
    big = random_crop(case, (40, 32, 36), rng)
    assert big["ct"].shape == (1, 40, 32, 36) and big["label"].shape == (1, 40, 32, 36)
    assert big["crop_start"][0] == -4 and big["crop_start"][2] == -2
    assert int((big["label"] > 0).sum()) == int((case["label"] > 0).sum())


# ----------------------------------------------------------------------------- HECKTOR import

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
