"""`petite data check`: per-split statistics, problems flagged without crashing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from petite.data.datalist import build_datalist, write_datalist
from petite.data.inspect import inspect_datalist
from petite.data.nifti import make_affine, save_volume
from tests.cli_runner import run_cli

SHAPE = (12, 10, 8)
AFFINE = make_affine((2.0, 2.0, 2.5), SHAPE)




def _write(root: Path, splits: dict[str, int], tweak=None) -> Path:
    """Pairs (long = 6 x short) for ``splits`` = {split: n}; ``tweak(subject, short, long)`` may edit the arrays."""
    rng = np.random.default_rng(0)
    items, assignment = {}, {}
    for split, n in splits.items():
        assignment[split] = []
        for i in range(n):
            subject = f"{split[:2]}{i}"
            short = (rng.random(SHAPE) + 0.5).astype(np.float32)
            long = 6 * short
            if tweak:
                short, long = tweak(subject, short, long)
            for key, data in (("short", short), ("long", long)):
                save_volume(root / f"{subject}_{key}.nii.gz", data, make_affine((2.0, 2.0, 2.5), data.shape))
            items[subject] = {"short": str(root / f"{subject}_short.nii.gz"), "long": str(root / f"{subject}_long.nii.gz")}
            assignment[split].append(subject)
    path = root / "datalist.json"
    write_datalist(path, build_datalist(items, assignment, scanner="s9", seed=1, root=root))
    return path


def test_check_reports_counts_shapes_spacings_and_stats(tmp_path, capsys) -> None:
    path = _write(tmp_path, {"pretrain_train": 3, "finetune_train": 2, "test": 1})
    code, out, _ = run_cli(["data", "check", str(path)], capsys)
    assert code == 0
    assert "pretrain_train: 3 subjects" in out and "finetune_train: 2 subjects" in out and "test: 1 subject\n" in out
    assert "pretrain_val: 0 subjects" in out
    assert "12x10x8 (3)" in out and "2x2x2.5 mm" in out
    assert "no problems found" in out

    code, out, _ = run_cli(["data", "check", str(path), "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["n_subjects"] == 6 and report["problems"] == []
    split = report["splits"]["pretrain_train"]
    assert split["count"] == 3 and split["shapes"] == {"12x10x8": 3}
    assert split["long_short_ratio"] == pytest.approx(6.0, rel=1e-5)
    item = split["items"][0]
    assert item["spacing"] == [2.0, 2.0, 2.5]
    assert 0.5 <= item["short"]["min"] <= item["short"]["mean"] <= item["short"]["p99"] <= item["short"]["max"] <= 1.5


def test_check_flags_problems_without_crashing(tmp_path, capsys) -> None:
    def tweak(subject, short, long):
        if subject == "pr0":
            short = short.copy()
            short[1, 2, 3] = np.nan
        if subject == "pr1":
            long = np.zeros_like(long)
        if subject == "fi0":
            long = long[:, :, :-1]
        return short, long

    path = _write(tmp_path, {"pretrain_train": 2, "finetune_train": 1}, tweak)
    code, out, err = run_cli(["data", "check", str(path)], capsys)
    assert code == 1 and err == ""
    assert "3 problem(s)" in out
    assert "pretrain_train/pr0: short has 1 NaN/Inf voxels" in out
    assert "pretrain_train/pr1: long is all zeros" in out
    assert "finetune_train/fi0: short shape 12x10x8 differs from long shape 12x10x7" in out
    report = inspect_datalist(path)
    # Statistics still computed over the finite voxels.
    assert report["splits"]["pretrain_train"]["items"][0]["short"]["mean"] is not None


def test_check_frames_items(tmp_path, capsys) -> None:
    frames = np.random.default_rng(4).random((*SHAPE, 6)).astype(np.float32) + 1
    save_volume(tmp_path / "f.nii.gz", frames, AFFINE)
    path = tmp_path / "dl.json"
    write_datalist(path, build_datalist({"f": {"frames": str(tmp_path / "f.nii.gz")}}, {"test": ["f"]}, "adni", 0, tmp_path))
    item = inspect_datalist(path)["splits"]["test"]["items"][0]
    assert item["shape"] == list(SHAPE)
    assert item["short"]["max"] == pytest.approx(float(frames[..., 0].max()))
    assert item["long"]["mean"] == pytest.approx(float(frames.astype(np.float64).mean()), rel=1e-5)


def test_check_missing_file_is_a_user_error(tmp_path, capsys) -> None:
    path = _write(tmp_path, {"test": 2})
    (tmp_path / "te1_long.nii.gz").unlink()
    code, out, err = run_cli(["data", "check", str(path)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "te1_long.nii.gz" in err and "not found" in err
    code, _, err = run_cli(["data", "check", str(tmp_path / "nothing.json")], capsys)
    assert code == 2 and "nothing.json" in err


@pytest.mark.parametrize("edit, message", [
    (lambda items: items[1].update(subject=["te1", "x"]), "test[1] needs a 'subject' that is a string, got list"),
    (lambda items: items[1].pop("subject"), "test[1] needs a 'subject' that is a string, got nothing"),
    (lambda items: items[1].update(short=5), "test[1] (subject 'te1'): 'short' must be a file path (a string), got int 5"),
    (lambda items: items[0].update(long=None), "test[0] (subject 'te0'): 'long' must be a file path"),
    (lambda items: items.__setitem__(1, "te1_short.nii.gz"), "test[1] must be an object like"),
    (lambda items: items.__setitem__(0, ["te0"]), "test[0] must be an object like"),
    (lambda items: items[1].pop("long"), "test[1] (subject 'te1') needs 'short' and 'long', or 'frames'"),
])
def test_check_malformed_items_are_one_line(edit, message: str, tmp_path, capsys) -> None:
    path = _write(tmp_path, {"test": 2})
    datalist = json.loads(path.read_text())
    edit(datalist["test"])
    path.write_text(json.dumps(datalist))
    code, out, err = run_cli(["data", "check", str(path)], capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"petite: error: {path}: ") and message in err and err.count("\n") == 1

