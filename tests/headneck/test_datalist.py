"""The petite-mm/1 datalist (splits, round trip, errors), case loading and normalisation, training crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from petite.data.nifti import make_affine, save_volume
from petite.errors import UserError
from petite.headneck.centres import get_centre
from petite.headneck.datalist import (
    centre_split_counts,
    items,
    load_case,
    random_crop,
    read_mm_datalist,
    split_names,
    write_mm_datalist,
)
from tests.headneck.cohort import nifti_array as _array


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
