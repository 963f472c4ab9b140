"""A synthetic cohort on disk: volumes, datalist, montage, clinical CSV and records; refused arguments."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from petite.errors import UserError
from petite.headneck.centres import CENTRES, get_centre
from petite.headneck.clinical import VARIABLES, read_clinical_csv
from petite.headneck.patient import simulate_patient
from petite.headneck.synthetic import simulate_hn
from tests.headneck.cohort import all_items as _all_items
from tests.headneck.cohort import nifti_array as _array

RECORD_KEYS = {*VARIABLES, "time", "event", "centre", "weight"}


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


def test_generator_writes_clinical_csv_and_records(data: Path, datalist: dict) -> None:
    raw = json.loads(data.read_text())
    assert raw["clinical_csv"] == "clinical.csv" and raw["hazard_model"]["b_sex"] == 0
    table = read_clinical_csv(data.parent / "clinical.csv")
    assert list(table) == [f"A-{k:03d}" for k in range(1, 13)]
    header = (data.parent / "clinical.csv").read_text().splitlines()[0]
    assert header.startswith("PatientID,CenterID,Gender,Age") and header.endswith("Relapse,RFS")
    items = _all_items(datalist)
    for item in items:
        assert item["clinical"] == table[item["patient"]]
        assert set(item["clinical"]) == RECORD_KEYS and item["clinical"]["centre"] == "A"
        assert item["clinical"]["time"] >= 1 and item["clinical"]["event"] in (0, 1)
        assert {"volume_ml", "suv", "eta"} == set(item["facts"]["hazard"])
    assert any(v is None for item in items for v in item["clinical"].values())   # missing values occur
    again = simulate_patient("A", 3, seed=4, size="tiny")
    assert {**again.clinical, "weight": None} == table["A-004"]
