"""The scanner registry: paper Table 4, the simulation parameters, and user YAML scanners."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from petite.data.nifti import voxel_spacing
from petite.data.scanners import BUILTIN_SCANNERS, get_scanner, list_scanners, load_scanner_file, parse_scanner_ids
from petite.errors import UserError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "scanners.yaml"

TABLE_4 = {
    "1": ((192, 192, 136), (1.21875, 1.21875, 1.21875), "Siemens"),
    "2": ((192, 192, 128), (1.21875, 1.21875, 1.21875), "Siemens"),
    "3": ((224, 224, 81), (1.01821, 1.01821, 2.02699), "Siemens"),
    "4": ((128, 128, 90), (2.0, 2.0, 2.0), "Philips"),
    "5": ((128, 128, 63), (2.05941, 2.05941, 2.425), "Siemens"),
}


@pytest.mark.parametrize("scanner_id", sorted(TABLE_4))
def test_builtin_scanners_match_table_4(scanner_id: str) -> None:
    shape, spacing, vendor = TABLE_4[scanner_id]
    scanner = get_scanner(scanner_id)
    assert scanner.shape == shape and scanner.spacing == spacing and scanner.vendor == vendor
    affine = scanner.affine()
    np.testing.assert_allclose(voxel_spacing(affine), spacing, atol=1e-9)
    # The world origin is the centre of the field of view.
    centre = affine @ np.array([*(np.array(shape) - 1) / 2, 1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)
    assert 1e8 <= scanner.counts <= 1e9
    assert scanner.projection_angles() % scanner.osem_subsets == 0


def test_builtin_scanners_differ_in_every_domain_shift_factor() -> None:
    paper = [BUILTIN_SCANNERS[i] for i in sorted(TABLE_4)]
    for attribute in ("fwhm_mm", "counts", "intensity_scale"):
        assert len({getattr(s, attribute) for s in paper}) == len(paper), attribute
    assert [s.id for s in list_scanners()][:5] == ["1", "2", "3", "4", "5"]
    assert "tiny" in BUILTIN_SCANNERS


def test_example_yaml_adds_a_scanner() -> None:
    scanner = get_scanner("6", EXAMPLE)
    assert scanner.shape == (160, 160, 96) and scanner.spacing == (1.6, 1.6, 2.0)
    assert scanner.fwhm_mm == (4.0, 4.0, 4.5) and scanner.counts == 3.0e8
    assert [s.id for s in parse_scanner_ids("1, 6", EXAMPLE)] == ["1", "6"]


def test_yaml_scalar_fwhm_and_override_of_builtin(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("scanners:\n  - {id: '4', shape: [64, 64, 32], spacing: [3, 3, 3], fwhm_mm: 5, counts: 2e8}\n")
    scanner = get_scanner("4", path)
    assert scanner.shape == (64, 64, 32) and scanner.fwhm_mm == (5.0, 5.0, 5.0) and scanner.counts == 2e8
    assert get_scanner("4").shape == (128, 128, 90)  # built-in untouched without the file


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("scanners:\n  - {id: x, spacing: [1, 1, 1], fwhm_mm: 4, counts: 1e8}\n", "shape"),
        ("scanners:\n  - {id: x, shape: [64, 64], spacing: [1, 1, 1], fwhm_mm: 4, counts: 1e8}\n", "shape"),
        ("scanners:\n  - {id: x, shape: [64, 64, 32], spacing: [1, -1, 1], fwhm_mm: 4, counts: 1e8}\n", "spacing"),
        ("scanners:\n  - {id: x, shape: [64, 64, 32], spacing: [1, 1, 1], fwhm_mm: 4, counts: lots}\n", "counts"),
        ("scanners:\n  - {id: x, shape: [64, 64, 32], spacing: [1, 1, 1], fwhm_mm: 4, counts: 1e8, colour: red}\n", "colour"),
        ("scanners:\n  - {id: x, shape: [64, 64, 32], spacing: [1, 1, 1], fwhm_mm: 4, counts: 1e8, osem_subsets: 2.5}\n", "osem_subsets"),
        ("scanners:\n  - {id: x, shape: [64, 64, 32], spacing: [1, 1, 1], fwhm_mm: 4, counts: 1e8, n_angles: 6}\n", "n_angles"),
        ("scanners: [1, 2\n", "YAML"),
        ("other: 3\n", "scanners"),
    ],
)
def test_bad_yaml_names_file_and_field(tmp_path: Path, body: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(UserError) as info:
        load_scanner_file(path)
    assert str(path) in str(info.value) and field in str(info.value)


def test_unknown_or_duplicate_scanner_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown scanner '9'"):
        get_scanner("9")
    with pytest.raises(UserError, match="twice"):
        parse_scanner_ids("1,1")
    with pytest.raises(UserError, match="not found"):
        get_scanner("1", tmp_path / "missing.yaml")
