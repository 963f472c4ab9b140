"""Synthetic head-and-neck data that several test modules share: fixtures and small readers."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from petite.headneck.datalist import read_mm_datalist, split_names
from petite.headneck.synthetic import simulate_hn


def nifti_array(path: str | Path) -> np.ndarray:
    """The voxels of a NIfTI file as stored (no reorientation)."""
    return np.asarray(nib.load(str(path)).dataobj)


def all_items(datalist: dict) -> list[dict]:
    """Every item of every split of ``datalist``."""
    return [item for name in split_names(datalist) for item in datalist[name]]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Centres A and B, 3 tiny patients each (seed 7): the datalist path."""
    out = tmp_path_factory.mktemp("hn")
    return simulate_hn(out, centres=("A", "B"), n_patients=3, seed=7, size="tiny")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 tiny patients of centre A: 7 train (3 relapses), 2 val, 3 test (2 relapses)."""
    return simulate_hn(tmp_path_factory.mktemp("prog") / "sim", centres=("A",), n_patients=12, seed=4, size="tiny")


@pytest.fixture(scope="module")
def datalist(data: Path) -> dict:
    """The datalist of :func:`data`, read (absolute paths)."""
    return read_mm_datalist(data)
