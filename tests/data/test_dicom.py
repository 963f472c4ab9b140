"""DICOM series in place of NIfTI files: geometry, rescale, dynamic frames, bad folders, and the commands."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from petite.data.dicom import is_dicom_folder, read_dicom_series
from petite.data.nifti import load_volume, save_volume
from petite.errors import UserError
from tests.cli_runner import run_cli
from tests.dicom_series import write_series

SLOPE, INTERCEPT = 0.25, -3.0
AFFINE = np.array([[2.0, 0, 0, -10.0], [0, 2.5, 0, 4.0], [0, 0, 3.0, 7.5], [0, 0, 0, 1]])


def _volume(shape=(9, 8, 7), seed=0) -> np.ndarray:
    """Whole multiples of the slope plus the intercept: exactly what int16 + rescale can store."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 4000, shape) * SLOPE + INTERCEPT).astype(np.float32)


def test_static_series_matches_the_nifti_reader(tmp_path) -> None:
    data = _volume()
    save_volume(tmp_path / "v.nii.gz", data, AFFINE)
    write_series(tmp_path / "dcm", data, AFFINE, slope=SLOPE, intercept=INTERCEPT)
    assert is_dicom_folder(tmp_path / "dcm") and not is_dicom_folder(tmp_path)
    nifti, nifti_affine = load_volume(tmp_path / "v.nii.gz")
    dicom, dicom_affine = load_volume(tmp_path / "dcm")
    np.testing.assert_array_equal(dicom, nifti)
    np.testing.assert_allclose(dicom_affine, nifti_affine, atol=1e-5)


def test_rescale_slope_and_intercept_are_applied(tmp_path) -> None:
    import SimpleITK as sitk

    data = _volume()
    files = write_series(tmp_path / "dcm", data, AFFINE, slope=SLOPE, intercept=INTERCEPT)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(files[0]))
    reader.ReadImageInformation()
    assert float(reader.GetMetaData("0028|1053")) == SLOPE and float(reader.GetMetaData("0028|1052")) == INTERCEPT
    assert reader.GetPixelID() in (sitk.sitkInt16, sitk.sitkFloat32, sitk.sitkFloat64)
    values, _ = read_dicom_series(tmp_path / "dcm")
    np.testing.assert_array_equal(values, data)  # stored integers * 0.25 - 3, not the stored integers
    assert np.any(values % 1 != 0) and values.min() < 0


def test_oblique_axes_and_flips_give_the_same_world_volume(tmp_path) -> None:
    # Array axes permuted and flipped relative to RAS: the series' slice order differs, the world does not.
    affine = np.array([[-2.0, 0, 0, 10.0], [0, 0, 3.0, 5.0], [0, -2.5, 0, 7.0], [0, 0, 0, 1]])
    data = _volume(seed=1)
    save_volume(tmp_path / "v.nii.gz", data, affine)
    write_series(tmp_path / "dcm", data, affine, slope=SLOPE, intercept=INTERCEPT)
    nifti, nifti_affine = load_volume(tmp_path / "v.nii.gz", canonical=True)
    dicom, dicom_affine = load_volume(tmp_path / "dcm", canonical=True)
    np.testing.assert_array_equal(dicom, nifti)
    np.testing.assert_allclose(dicom_affine, nifti_affine, atol=1e-5)
    raw, raw_affine = read_dicom_series(tmp_path / "dcm")
    # Every voxel sits at the same world point as in the NIfTI file.
    ijk = np.array([[1, 2, 3, 1], [8, 7, 0, 1]]).T
    world = (affine @ ijk)[:3].T
    back = np.round(np.linalg.solve(raw_affine, np.c_[world, np.ones(2)].T)[:3].T).astype(int)
    for (i, j, k), (a, b, c) in zip(ijk[:3].T, back):
        assert raw[a, b, c] == data[i, j, k]


def test_dynamic_series_is_split_into_frames(tmp_path) -> None:
    frames = np.stack([_volume(seed=s) for s in range(3)], axis=-1)
    # Frames written latest first: the frame times, not the file order, decide.
    write_series(tmp_path / "dcm", frames[..., ::-1], AFFINE, slope=SLOPE, intercept=INTERCEPT,
                 frame_times=[600_000, 300_000, 0])
    save_volume(tmp_path / "frames.nii.gz", frames, AFFINE)
    four, affine = load_volume(tmp_path / "dcm", ndim=4)
    np.testing.assert_array_equal(four, frames)
    np.testing.assert_allclose(affine, AFFINE, atol=1e-5)
    first, _ = load_volume(tmp_path / "dcm", frames="first")
    mean, _ = load_volume(tmp_path / "dcm", frames="mean")
    np.testing.assert_array_equal(first, frames[..., 0])
    np.testing.assert_allclose(mean, frames.mean(axis=-1), rtol=1e-6)
    np.testing.assert_allclose(mean, load_volume(tmp_path / "frames.nii.gz", frames="mean")[0], rtol=1e-6)
    with pytest.raises(UserError, match=r"dcm: expected a 3D volume, got shape \(9, 8, 7, 3\).*--frames first\|mean"):
        load_volume(tmp_path / "dcm")


def _bad(kind: str, tmp_path):
    folder = tmp_path / "bad"
    data = _volume(shape=(6, 5, 6))
    if kind == "empty":
        folder.mkdir()
    elif kind == "not dicom":
        folder.mkdir()
        (folder / "notes.txt").write_text("hello")
    elif kind == "mixed series":
        write_series(folder, data, AFFINE, series_uid="1.2.3.1")
        write_series(folder, data, AFFINE, series_uid="1.2.3.2", first_instance=100)
    elif kind == "missing slice":
        write_series(folder, data, AFFINE, skip_slices=[3])
    elif kind == "uneven frames":
        write_series(folder, data, AFFINE, frame_times=[0])
        write_series(folder, data, AFFINE, frame_times=[300], skip_slices=[2], first_instance=100)
    elif kind == "no pixel data":
        files = write_series(folder, data, AFFINE)
        raw = files[2].read_bytes()
        files[2].write_bytes(raw[: raw.rfind(b"\xe0\x7f\x10\x00")])  # without its (7FE0,0010) Pixel Data element
    return folder


@pytest.mark.parametrize("kind, message", [
    ("empty", "empty folder: no DICOM files"),
    ("not dicom", "no DICOM series found among 1 file"),
    ("mixed series", "holds 2 DICOM series"),
    ("missing slice", "missing slices or inconsistent slice spacing"),
    ("uneven frames", "uneven frames"),
    ("no pixel data", "IM00003.dcm: no pixel data"),
])
def test_bad_folders_are_one_line_errors_naming_the_folder(kind, message, tmp_path) -> None:
    folder = _bad(kind, tmp_path)
    with pytest.raises(UserError, match=message) as caught:
        load_volume(folder)
    assert caught.value.path == str(folder) and "\n" not in str(caught.value)


def test_metrics_takes_a_dicom_folder(tmp_path, capsys) -> None:
    target = _volume(shape=(16, 16, 12), seed=3)
    pred = (target + np.random.default_rng(4).integers(-20, 20, target.shape) * SLOPE).astype(np.float32)
    write_series(tmp_path / "pred_dcm", pred, AFFINE, slope=SLOPE, intercept=INTERCEPT)
    save_volume(tmp_path / "pred.nii.gz", pred, AFFINE)
    save_volume(tmp_path / "target.nii.gz", target, AFFINE)
    from_dicom = run_cli(["metrics", tmp_path / "pred_dcm", tmp_path / "target.nii.gz", "--json"], capsys)
    from_nifti = run_cli(["metrics", tmp_path / "pred.nii.gz", tmp_path / "target.nii.gz", "--json"], capsys)
    assert from_dicom.code == 0 and from_nifti.code == 0
    assert json.loads(from_dicom.out) == json.loads(from_nifti.out)
    shutil.rmtree(tmp_path / "pred_dcm")
    write_series(tmp_path / "pred_dcm", pred, AFFINE, skip_slices=[5])
    code, out, err = run_cli(["metrics", tmp_path / "pred_dcm", tmp_path / "target.nii.gz"], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert f"{tmp_path / 'pred_dcm'}: missing slices" in err


def test_prepare_from_dicom_series_and_the_datasets_read_them(tmp_path, capsys) -> None:
    from petite.data.transforms import make_dataset

    folder = tmp_path / "dicom"
    expected = {}
    for s in range(5):
        frames = np.stack([_volume(shape=(16, 16, 16), seed=10 * s + t) + 100 for t in range(2)], axis=-1)
        write_series(folder / f"sub{s}", frames, AFFINE, slope=SLOPE, intercept=INTERCEPT, frame_times=[0, 300_000])
        expected[f"sub{s}"] = frames
    out = tmp_path / "datalist.json"
    code, stdout, err = run_cli(["prepare", "--frames-dir", folder, "--n-frames", "2", "--out", out,
                                 "--split-sizes", "1,1,1,1,1"], capsys)
    assert code == 0, err
    assert "5 subjects validated" in stdout
    written = json.loads(out.read_text())
    item = written["test"][0]
    assert item["frames"] == f"dicom/{item['subject']}"
    dataset = make_dataset(out, "test", train=False, normalise="paper")
    loaded = dataset[0]
    frames = nib.as_closest_canonical(nib.Nifti1Image(expected[item["subject"]], AFFINE)).get_fdata()
    np.testing.assert_allclose(loaded["short_min"], frames[..., 0].min())
    np.testing.assert_allclose(loaded["long_max"], frames.mean(axis=-1).max(), rtol=1e-6)
    code, _, _ = run_cli(["data", "check", out], capsys)
    assert code in (0, 1)  # read and reported (tiny random volumes may be flagged), not refused
    # A folder of frames with one frame fewer than asked for: one line, nothing written.
    bad = tmp_path / "bad.json"
    code, _, err = run_cli(["prepare", "--frames-dir", folder, "--out", bad, "--split-sizes", "1,1,1,1,1"], capsys)
    assert code == 2 and not bad.exists() and "expected 6 frames, got 2" in err

