"""`petite simulate`: files, geometry, noise, determinism, frames, datalists, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from petite.cli import main
from petite.data.datalist import SPLITS, read_datalist
from petite.data.nifti import voxel_spacing
from petite.data.scanners import get_scanner
from petite.data.simulate import ReconSettings, SimulationRequest, run_simulation, simulate_subject, subject_phantom
from petite.errors import UserError
from tests.cli_runner import run_cli

SEED = 3
TINY = get_scanner("tiny")


def _request(out: Path, **changes) -> SimulationRequest:
    options = dict(out=out, scanners=(TINY,), n_subjects=3, seed=SEED, split_sizes=(1, 0, 1, 0, 1))
    options.update(changes)
    return SimulationRequest(**options)


def _array(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    run_simulation(_request(out), progress=False)
    return out


def test_layout_geometry_and_record(dataset: Path) -> None:
    folder = dataset / "scannertiny"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["datalist.json"] + [f"stiny-{i:04d}_{kind}.nii.gz" for i in range(3) for kind in ("long", "short")]
    for path in folder.glob("*.nii.gz"):
        image = nib.load(str(path))
        assert image.shape == TINY.shape and image.get_data_dtype() == np.float32
        np.testing.assert_allclose(voxel_spacing(image.affine), TINY.spacing, atol=1e-5)
        np.testing.assert_allclose(image.affine, TINY.affine(), atol=1e-5)
    assert (dataset / "montage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((dataset / "simulation.json").read_text())
    assert record["seed"] == SEED and record["options"]["subjects"] == 3
    assert record["scanners"][0]["shape"] == list(TINY.shape)
    assert set(record["subjects"]["tiny"]) == {"stiny-0000", "stiny-0001", "stiny-0002"}
    assert not list(dataset.rglob(".*tmp*")), "temporary files left behind"


def test_datalist_is_readable_and_subject_disjoint(dataset: Path) -> None:
    datalist = read_datalist(dataset / "scannertiny" / "datalist.json")
    subjects = [item["subject"] for name in SPLITS for item in datalist[name]]
    assert sorted(subjects) == ["stiny-0000", "stiny-0001", "stiny-0002"]
    assert [len(datalist[name]) for name in SPLITS] == [1, 0, 1, 0, 1]
    for name in SPLITS:
        for item in datalist[name]:
            assert Path(item["short"]).is_file() and Path(item["long"]).is_file()


def test_short_is_noisier_than_long_at_the_same_intensity(dataset: Path) -> None:
    for index in range(3):
        phantom = subject_phantom(SEED, TINY, index)
        white = phantom.white_matter_core(TINY, erosion_voxels=1)
        brain = phantom.grey_matter(TINY) + phantom.white_matter(TINY) > 0.5
        assert white.sum() > 50
        short = _array(dataset / "scannertiny" / f"stiny-{index:04d}_short.nii.gz")
        long = _array(dataset / "scannertiny" / f"stiny-{index:04d}_long.nii.gz")
        cov_short = short[white].std() / short[white].mean()
        cov_long = long[white].std() / long[white].mean()
        assert cov_short > 1.5 * cov_long, (cov_short, cov_long)
        # Both are in kBq/mL: same mean, short only noisier.
        assert abs(short[brain].mean() / long[brain].mean() - 1) < 0.03
        # Grey matter is hotter than white matter, as in FDG.
        grey = phantom.grey_matter(TINY) > 0.6
        assert long[grey].mean() > 1.3 * long[white].mean()
        # Plausible kBq/mL: white matter is drawn in 4.5-6.5 (at 4 mm voxels grey matter spills in).
        assert 3.0 < long[white].mean() < 15.0


def test_workers_do_not_change_the_output(dataset: Path, tmp_path: Path) -> None:
    # Two subjects with two processes: each subject's stream depends only on (seed, scanner, index),
    # so they match the single-process run of three subjects byte for byte.
    run_simulation(_request(tmp_path, n_subjects=2, workers=2, montage=False), progress=False)
    for index in range(2):
        for kind in ("short", "long"):
            name = f"scannertiny/stiny-{index:04d}_{kind}.nii.gz"
            assert np.array_equal(_array(tmp_path / name), _array(dataset / name)), name


def test_a_different_seed_gives_a_different_subject() -> None:
    recon = ReconSettings(iterations=1)
    first = simulate_subject(TINY, 0, seed=1, recon=recon)
    again = simulate_subject(TINY, 0, seed=1, recon=recon)
    other = simulate_subject(TINY, 0, seed=2, recon=recon)
    assert np.array_equal(first.short, again.short) and np.array_equal(first.long, again.long)
    assert not np.allclose(first.long, other.long)
    assert first.phantom.parameters != other.phantom.parameters


def test_frames_mode_writes_six_frames_whose_first_is_the_short_scan(dataset: Path, tmp_path: Path) -> None:
    run_simulation(_request(tmp_path, n_subjects=1, frames=True, split_sizes=(0, 0, 1, 0, 0)), progress=False)
    path = tmp_path / "scannertiny" / "stiny-0000_frames.nii.gz"
    frames = _array(path)
    assert frames.shape == (*TINY.shape, 6)
    assert nib.load(str(path)).header.get_zooms() == (*TINY.spacing, 300.0)  # 5-minute frames
    # Frame 0 is the same binomial draw as the short scan of the pair-mode run.
    assert np.array_equal(frames[..., 0], _array(dataset / "scannertiny" / "stiny-0000_short.nii.gz"))
    means = frames.reshape(-1, 6).mean(axis=0)
    np.testing.assert_allclose(means / means.mean(), 1.0, atol=0.03)
    assert all(not np.array_equal(frames[..., 0], frames[..., f]) for f in range(1, 6))
    datalist = read_datalist(tmp_path / "scannertiny" / "datalist.json")
    assert datalist["finetune_train"][0]["frames"] == str(path.resolve())
    assert "short" not in datalist["finetune_train"][0]


def test_existing_simulation_is_refused_without_overwrite(dataset: Path) -> None:
    with pytest.raises(UserError, match="--overwrite"):
        _request(dataset).validate()
    _request(dataset, overwrite=True).validate()




@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scanners", "9", "--subjects", "1"], "unknown scanner"),
        (["--scanners", "tiny", "--subjects", "0"], "--subjects"),
        (["--scanners", "tiny", "--subjects", "1", "--workers", "0"], "--workers"),
        (["--scanners", "tiny", "--subjects", "1", "--split-sizes", "1,2"], "split sizes"),
        (["--scanners", "tiny", "--subjects", "1", "--scanner-file", "BADYAML"], "counts"),
        (["--scanners", "tiny", "--subjects", "1", "--subsets", "0"], "--subsets"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("scanners:\n  - {id: z, shape: [8, 8, 8], spacing: [1, 1, 1], fwhm_mm: 1, counts: -5}\n")
    out = tmp_path / "out"
    args = [str(bad_yaml) if a == "BADYAML" else a for a in args]
    code, _, err = run_cli(["simulate", *[*args, "--out", str(out)]], capsys)
    assert code == 2 and message in err
    assert err.count("\n") == 1 and err.startswith("petite: error:")
    assert not out.exists()


def test_cli_refuses_a_file_as_output_and_an_existing_simulation(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    code, _, err = run_cli(["simulate", *["--scanners", "tiny", "--subjects", "1", "--out", str(a_file)]], capsys)
    assert code == 2 and "is a file" in err and a_file.read_text() == "x"
    before = sorted(p.name for p in (dataset / "scannertiny").iterdir())
    code, _, err = run_cli(["simulate", *["--scanners", "tiny", "--subjects", "1", "--out", str(dataset)]], capsys)
    assert code == 2 and "--overwrite" in err
    assert sorted(p.name for p in (dataset / "scannertiny").iterdir()) == before


def test_cli_simulates_a_user_scanner_from_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scanner_file = tmp_path / "mine.yaml"
    scanner_file.write_text(
        "scanners:\n"
        "  - {id: mini, shape: [32, 30, 24], spacing: [7.5, 7.5, 7.0], fwhm_mm: [8, 8, 9], counts: 2e7,\n"
        "     osem_iterations: 1, osem_subsets: 2, vendor: ACME}\n"
    )
    out = tmp_path / "out"
    main(["simulate", "--scanner-file", str(scanner_file), "--scanners", "mini", "--subjects", "2",
          "--split-sizes", "1,0,0,0,1", "--seed", "5", "--out", str(out)])
    assert "scanner mini: 2 subjects" in capsys.readouterr().out
    datalist = read_datalist(out / "scannermini" / "datalist.json")
    assert len(datalist["pretrain_train"]) == 1 and len(datalist["test"]) == 1
    image = nib.load(datalist["test"][0]["long"])
    assert image.shape == (32, 30, 24)
    np.testing.assert_allclose(voxel_spacing(image.affine), (7.5, 7.5, 7.0), atol=1e-5)
    record = json.loads((out / "simulation.json").read_text())
    assert record["scanners"][0]["vendor"] == "ACME" and record["options"]["seed"] == 5
