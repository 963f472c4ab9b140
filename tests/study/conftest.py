"""Fixtures of the study tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pet_data import make_pet_dataset


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the tiny PET data set in ``data/`` (the datalist :func:`write_study` points to)."""
    root = tmp_path_factory.mktemp("study")
    (root / "data").mkdir()
    make_pet_dataset(root / "data")
    return root
