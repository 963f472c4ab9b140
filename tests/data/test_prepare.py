"""`petite prepare`: real data -> validated datalist; every bad input is refused with nothing written."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from petite.data.datalist import SPLITS, read_datalist
from petite.data.nifti import make_affine, save_volume
from tests.cli_runner import run_cli

SHAPE = (12, 11, 10)
AFFINE = make_affine((2.0, 2.0, 2.5), SHAPE)


def _frames(seed: int, n: int = 6) -> np.ndarray:
    return (np.random.default_rng(seed).random((*SHAPE, n)) + 0.1).astype(np.float32)


def _frames_dir(root: Path, n_subjects: int = 6) -> Path:
    folder = root / "frames"
    for i in range(n_subjects):
        save_volume(folder / f"sub-{i:02d}.nii.gz", _frames(i), AFFINE)
    return folder


def _pairs_dir(root: Path, n_subjects: int = 5) -> Path:
    folder = root / "pairs"
    for i in range(n_subjects):
        frames = _frames(100 + i)
        save_volume(folder / f"p{i}_short.nii.gz", frames[..., 0], AFFINE)
        save_volume(folder / f"p{i}_long.nii.gz", frames.mean(-1), AFFINE)
    return folder




def test_frames_dir_builds_datalist(tmp_path, capsys) -> None:
    folder = _frames_dir(tmp_path)
    out = tmp_path / "datalist.json"
    args = ["prepare", "--frames-dir", str(folder), "--scanner", "adni", "--seed", "3", "--split-sizes", "2,1,1,1,1"]
    code, stdout, _ = run_cli([*args, "--out", str(out)], capsys)
    assert code == 0 and "6 subjects" in stdout
    raw = json.loads(out.read_text())
    assert raw["scanner"] == "adni" and raw["seed"] == 3
    assert [len(raw[s]) for s in SPLITS] == [2, 1, 1, 1, 1]
    item = raw["finetune_train"][0]
    assert set(item) == {"subject", "frames"}
    assert not Path(item["frames"]).is_absolute()  # relative to the datalist folder
    datalist = read_datalist(out)
    subjects = [e["subject"] for s in SPLITS for e in datalist[s]]
    assert sorted(subjects) == [f"sub-{i:02d}" for i in range(6)]
    assert all(Path(e["frames"]).is_file() for s in SPLITS for e in datalist[s])
    # Same seed, same splits; another seed shuffles differently.
    out2 = tmp_path / "again.json"
    run_cli([*args, "--out", str(out2)], capsys)
    assert {s: raw[s] for s in SPLITS} == {s: json.loads(out2.read_text())[s] for s in SPLITS}
    out3 = tmp_path / "other.json"
    run_cli(["prepare", "--frames-dir", str(folder), "--out", str(out3), "--seed", "4", "--split-sizes", "2,1,1,1,1"], capsys)
    assert {s: raw[s] for s in SPLITS} != {s: json.loads(out3.read_text())[s] for s in SPLITS}


def test_pairs_dir_and_csv_with_explicit_splits(tmp_path, capsys) -> None:
    folder = _pairs_dir(tmp_path)
    out = tmp_path / "pairs.json"
    code, _, _ = run_cli(["prepare", "--pairs-dir", str(folder), "--out", str(out), "--split-sizes", "1,1,1,1,1"], capsys)
    assert code == 0
    datalist = read_datalist(out)
    assert sum(len(datalist[s]) for s in SPLITS) == 5
    entry = datalist["test"][0]
    assert entry["short"].endswith(f"{entry['subject']}_short.nii.gz") and entry["long"].endswith(f"{entry['subject']}_long.nii.gz")

    csv = tmp_path / "subjects.csv"
    csv.write_text(
        "subject,short,long,split\n"
        + "\n".join(
            f"p{i},pairs/p{i}_short.nii.gz,pairs/p{i}_long.nii.gz,{split}"
            for i, split in enumerate(["test", "finetune_train", "finetune_train", "pretrain_val", "test"])
        )
        + "\n"
    )
    out = tmp_path / "csv.json"
    code, _, _ = run_cli(["prepare", "--csv", str(csv), "--out", str(out)], capsys)
    assert code == 0
    datalist = read_datalist(out)
    assert [e["subject"] for e in datalist["test"]] == ["p0", "p4"]
    assert [e["subject"] for e in datalist["finetune_train"]] == ["p1", "p2"]
    assert datalist["scanner"] == "subjects"  # defaults to the input's name


def _bad_frames_count(root: Path) -> tuple[list[str], Path]:
    folder = _frames_dir(root, 3)
    bad = folder / "sub-01.nii.gz"
    save_volume(bad, _frames(1, n=5), AFFINE)
    return ["--frames-dir", str(folder)], bad


def _bad_3d_in_frames(root: Path) -> tuple[list[str], Path]:
    folder = _frames_dir(root, 3)
    bad = folder / "sub-02.nii.gz"
    save_volume(bad, _frames(2)[..., 0], AFFINE)
    return ["--frames-dir", str(folder)], bad


def _bad_unreadable(root: Path) -> tuple[list[str], Path]:
    folder = _frames_dir(root, 3)
    bad = folder / "sub-03.nii.gz"
    bad.write_bytes(gzip.compress(b"this is not a NIfTI header" * 20))
    return ["--frames-dir", str(folder)], bad


def _bad_first_frame_zero(root: Path) -> tuple[list[str], Path]:
    folder = _frames_dir(root, 3)
    frames = _frames(7)
    frames[..., 0] = 0
    bad = folder / "sub-00.nii.gz"
    save_volume(bad, frames, AFFINE)
    return ["--frames-dir", str(folder)], bad


def _bad_shape_mismatch(root: Path) -> tuple[list[str], Path]:
    folder = _pairs_dir(root, 3)
    bad = folder / "p1_long.nii.gz"
    save_volume(bad, np.ones((12, 11, 9), np.float32), make_affine((2.0, 2.0, 2.5), (12, 11, 9)))
    return ["--pairs-dir", str(folder)], bad


def _bad_affine_mismatch(root: Path) -> tuple[list[str], Path]:
    folder = _pairs_dir(root, 3)
    bad = folder / "p2_long.nii.gz"
    save_volume(bad, _frames(3).mean(-1), make_affine((2.0, 2.0, 3.0), SHAPE))
    return ["--pairs-dir", str(folder)], bad


def _bad_nan(root: Path) -> tuple[list[str], Path]:
    folder = _pairs_dir(root, 3)
    data = _frames(4)[..., 0]
    data[3, 4, 5] = np.nan
    bad = folder / "p0_short.nii.gz"
    save_volume(bad, data, AFFINE)
    return ["--pairs-dir", str(folder)], bad


def _bad_inf(root: Path) -> tuple[list[str], Path]:
    folder = _pairs_dir(root, 3)
    data = _frames(4).mean(-1)
    data[0, 0, 0] = np.inf
    bad = folder / "p1_long.nii.gz"
    save_volume(bad, data, AFFINE)
    return ["--pairs-dir", str(folder)], bad


def _bad_all_zero(root: Path) -> tuple[list[str], Path]:
    folder = _pairs_dir(root, 3)
    bad = folder / "p2_short.nii.gz"
    save_volume(bad, np.zeros(SHAPE, np.float32), AFFINE)
    return ["--pairs-dir", str(folder)], bad


def _bad_missing_partner(root: Path) -> tuple[list[str], Path]:
    folder = _pairs_dir(root, 3)
    (folder / "p1_long.nii.gz").unlink()
    return ["--pairs-dir", str(folder)], folder / "p1_short.nii.gz"


def _bad_missing_file_csv(root: Path) -> tuple[list[str], Path]:
    _frames_dir(root, 2)
    csv = root / "list.csv"
    csv.write_text("subject,frames\nsub-00,frames/sub-00.nii.gz\nsub-09,frames/sub-09.nii.gz\n")
    return ["--csv", str(csv)], root / "frames" / "sub-09.nii.gz"


def _bad_duplicate_across_splits(root: Path) -> tuple[list[str], Path]:
    _frames_dir(root, 3)
    csv = root / "list.csv"
    csv.write_text(
        "subject,frames,split\n"
        "sub-00,frames/sub-00.nii.gz,finetune_train\n"
        "sub-01,frames/sub-01.nii.gz,test\n"
        "sub-00,frames/sub-02.nii.gz,test\n"
    )
    return ["--csv", str(csv)], csv


def _bad_duplicate_in_csv(root: Path) -> tuple[list[str], Path]:
    _frames_dir(root, 2)
    csv = root / "list.csv"
    csv.write_text("subject,frames\nsub-00,frames/sub-00.nii.gz\nsub-00,frames/sub-01.nii.gz\n")
    return ["--csv", str(csv)], csv


def _bad_split_name(root: Path) -> tuple[list[str], Path]:
    _frames_dir(root, 2)
    csv = root / "list.csv"
    csv.write_text("subject,frames,split\nsub-00,frames/sub-00.nii.gz,train\n")
    return ["--csv", str(csv)], csv


BAD = {
    "wrong-frame-count": _bad_frames_count,
    "3d-instead-of-4d": _bad_3d_in_frames,
    "unreadable": _bad_unreadable,
    "first-frame-zero": _bad_first_frame_zero,
    "shape-mismatch": _bad_shape_mismatch,
    "affine-mismatch": _bad_affine_mismatch,
    "nan": _bad_nan,
    "inf": _bad_inf,
    "all-zero": _bad_all_zero,
    "missing-partner": _bad_missing_partner,
    "missing-file": _bad_missing_file_csv,
    "duplicate-subject-across-splits": _bad_duplicate_across_splits,
    "duplicate-subject-in-csv": _bad_duplicate_in_csv,
    "unknown-split-in-csv": _bad_split_name,
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_and_nothing_written(case: str, tmp_path, capsys) -> None:
    args, bad = BAD[case](tmp_path)
    out = tmp_path / "out" / "datalist.json"
    code, stdout, stderr = run_cli(["prepare", *args, "--out", str(out), "--split-sizes", "1,0,1,0,1"], capsys)
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("petite: error: ")
    assert str(bad) in stderr, stderr
    assert not out.exists()
    assert not (out.parent.exists() and any(out.parent.iterdir()))  # no temporary leftovers either


def test_usage_errors(tmp_path, capsys) -> None:
    folder = _frames_dir(tmp_path, 2)
    out = tmp_path / "dl.json"
    code, _, err = run_cli(["prepare", "--frames-dir", str(folder), "--pairs-dir", str(folder), "--out", str(out)], capsys)
    assert code == 2 and "exactly one" in err
    code, _, err = run_cli(["prepare", "--frames-dir", str(folder), "--out", str(out), "--split-sizes", "1,2"], capsys)
    assert code == 2 and "split sizes" in err
    code, _, err = run_cli(["prepare", "--frames-dir", str(tmp_path / "nope"), "--out", str(out)], capsys)
    assert code == 2 and "nope" in err
    assert not out.exists()


def test_console_script_exit_status(tmp_path) -> None:
    # The installed entry point, as a user runs it.
    args, bad = _bad_frames_count(tmp_path)
    out = tmp_path / "dl.json"
    exe = Path(sys.executable).with_name("petite")
    proc = subprocess.run([str(exe), "prepare", *args, "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and str(bad) in proc.stderr and "5" in proc.stderr
    assert not out.exists()
