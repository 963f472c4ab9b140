"""`petite evaluate` / `petite predict`: options and outputs checked before any model is loaded or volume predicted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from petite.data.nifti import make_affine, save_volume
from petite.models import build_model
from petite.models.checkpoint import save_model
from tests.cli_runner import run_cli


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny UNETR checkpoint (what it predicts does not matter here)."""
    folder = tmp_path_factory.mktemp("ckpt")
    save_model(build_model("unetr", "tiny"), folder / "model")
    return folder


def _one_line(err: str) -> bool:
    return err.startswith("petite: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_evaluate_refuses_bad_overlap_before_loading_anything(tmp_path: Path, capsys) -> None:
    # The datalist and model do not exist: the overlap is refused first, so nothing was read.
    result = run_cli(["evaluate", "--model", tmp_path / "nosuch", "--datalist", tmp_path / "nosuch.json",
                      "--overlap", "1.5", "--out", tmp_path / "ev"], capsys)
    assert result.code == 2 and _one_line(result.err) and "overlap must be in [0, 1), got 1.5" in result.err
    assert not (tmp_path / "ev").exists()


def test_evaluate_into_a_file_is_refused_before_evaluating(checkpoint: Path, datalist: Path, tmp_path: Path,
                                                          capsys) -> None:
    existing = tmp_path / "metrics"
    existing.write_text("mine")
    for out in (existing, existing / "sub"):
        result = run_cli(["evaluate", "--model", checkpoint, "--datalist", datalist, "--out", out,
                          "--device", "cpu"], capsys)
        assert result.code == 2 and _one_line(result.err) and "exists and is not a folder" in result.err
        assert result.out == ""  # no subject was evaluated
    assert existing.read_text() == "mine"


def test_missing_model_is_named_as_given(datalist: Path, tmp_path: Path, capsys) -> None:
    result = run_cli(["evaluate", "--model", "nosuch", "--datalist", datalist, "--out", tmp_path / "ev"], capsys)
    assert result.code == 2 and result.err == "petite: error: nosuch: no such run folder or model checkpoint\n"


def test_predict_checks_overlap_and_output_before_predicting(checkpoint: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "short.nii.gz"
    save_volume(src, np.random.default_rng(0).random((16, 16, 16)).astype(np.float32) + 1,
                make_affine((2.0, 2.0, 2.0), (16, 16, 16)))
    folder = tmp_path / "existing"
    folder.mkdir()
    cases = [(["--overlap", "-0.1"], tmp_path / "out.nii.gz", "overlap must be in [0, 1)"),
             ([], folder, "output is a folder"),
             ([], tmp_path / "out.txt", "output must be a .nii or .nii.gz file")]
    for options, dst, message in cases:
        result = run_cli(["predict", src, dst, "--model", checkpoint, "--device", "cpu", *options], capsys)
        assert result.code == 2 and _one_line(result.err) and message in result.err, result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing", "short.nii.gz"] and not any(folder.iterdir())


def test_predict_never_overwrites_its_input_and_an_existing_output_only_when_asked(checkpoint: Path, tmp_path: Path,
                                                                                  capsys) -> None:
    src = tmp_path / "in" / "short.nii.gz"
    save_volume(src, np.random.default_rng(0).random((16, 16, 16)).astype(np.float32) + 1,
                make_affine((2.0, 2.0, 2.0), (16, 16, 16)))
    original = src.read_bytes()
    for extra in ([], ["--overwrite"]):  # even --overwrite never writes over the input
        result = run_cli(["predict", src, src, "--model", checkpoint, "--device", "cpu", *extra], capsys)
        assert result.code == 2 and _one_line(result.err) and "would overwrite an input" in result.err
    # A folder of inputs written into itself: refused before the first prediction.
    result = run_cli(["predict", src.parent, src.parent, "--model", checkpoint, "--device", "cpu"], capsys)
    assert result.code == 2 and _one_line(result.err)
    assert src.read_bytes() == original and sorted(p.name for p in src.parent.iterdir()) == ["short.nii.gz"]

    out = tmp_path / "mine.nii.gz"
    out.write_bytes(b"keep me")
    result = run_cli(["predict", src, out, "--model", checkpoint, "--device", "cpu"], capsys)
    assert result.code == 2 and _one_line(result.err) and "--overwrite" in result.err and out.read_bytes() == b"keep me"
    assert run_cli(["predict", src, out, "--model", checkpoint, "--device", "cpu", "--overwrite"]).code == 0
    assert out.read_bytes() != b"keep me"


def test_predict_from_a_dicom_series_equals_predict_from_nifti(checkpoint: Path, tmp_path: Path, capsys) -> None:
    import nibabel as nib

    from tests.dicom_series import write_series

    affine = make_affine((2.0, 2.0, 2.0), (16, 16, 16))
    frames = (np.random.default_rng(1).integers(100, 4000, (16, 16, 16, 2)) * 0.5).astype(np.float32)
    save_volume(tmp_path / "short.nii.gz", frames[..., 0], affine)
    write_series(tmp_path / "dicom", frames, affine, slope=0.5, frame_times=[0, 300_000])
    # A folder of DICOM files is one series (the first frame: the short scan), not a batch of inputs.
    for src, dst in ((tmp_path / "short.nii.gz", tmp_path / "a.nii.gz"), (tmp_path / "dicom", tmp_path / "b.nii.gz")):
        result = run_cli(["predict", src, dst, "--model", checkpoint, "--device", "cpu", "--roi", "16,16,16"], capsys)
        assert result.code == 0, result.err
    a, b = nib.load(tmp_path / "a.nii.gz"), nib.load(tmp_path / "b.nii.gz")
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-5)
    np.testing.assert_allclose(b.get_fdata(), a.get_fdata(), rtol=1e-5, atol=1e-4)
