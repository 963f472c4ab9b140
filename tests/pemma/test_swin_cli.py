"""Swin UNETR through the ``petite mm`` commands: pretrain, adapt, continual, evaluate, prognosis features;
crops it cannot take are refused in one line before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_runner import run_cli

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.e2e]

#: Tiny Swin runs: one crop side above 32 is the least Swin UNETR takes (bottleneck 1x1x2).
SWIN = ["--arch", "swin_unetr", "--preset", "tiny", "--crop", "32,32,64"]
FAST = ["--batch-size", "1", "--device", "cpu", "--quiet", "--no-val"]


def test_swin_unetr_end_to_end_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sim = tmp_path / "sim"
    assert run_cli(["mm", "simulate", "--out", sim, "--centres", "A,B", "--patients", "3", "--size", "tiny",
                    "--quiet"]).code == 0
    data = sim / "datalist.json"
    ct, pemma, pemma_b = tmp_path / "ct", tmp_path / "pemma", tmp_path / "pemma_b"

    # Too small for Swin: one line naming the minimum, exit 2, no run folder.
    bad = run_cli(["mm", "pretrain", "--datalist", data, "--centre", "A", "--steps", "1", "--out", ct,
                   "--arch", "swin_unetr", "--preset", "tiny", "--crop", "32,32,32", *FAST], capsys)
    assert bad.code == 2 and bad.err.count("\n") == 1, bad.err
    assert "too small for Swin UNETR" in bad.err and "33 voxels along one axis" in bad.err and not ct.exists()

    assert run_cli(["mm", "pretrain", "--datalist", data, "--centre", "A", "--steps", "1", "--out", ct, *SWIN,
                    *FAST], capsys).code == 0
    bad = run_cli(["mm", "adapt", "--init", ct, "--datalist", data, "--centre", "A", "--steps", "1", "--out", pemma,
                   "--crop", "16,16,16", *FAST], capsys)
    assert bad.code == 2 and "too small for Swin UNETR" in bad.err and not pemma.exists()
    run = run_cli(["mm", "adapt", "--init", ct, "--datalist", data, "--centre", "A", "--steps", "2", "--out", pemma,
                   "--crop", "32,64,32", *FAST], capsys)
    assert run.code == 0, run.err
    config = json.loads((pemma / "config.json").read_text())
    assert config["crop"] == [32, 64, 32] and config["arch"] == "swin_unetr"
    assert json.loads((pemma / "final.json").read_text())["steps"] == 2
    assert run_cli(["mm", "adapt", "--continue-from", pemma, "--modality", "pet", "--datalist", data, "--centre", "B",
                    "--steps", "1", "--out", pemma_b, *FAST], capsys).code == 0

    eval_dir = tmp_path / "eval"
    bad = run_cli(["mm", "evaluate", "--model", pemma_b, "--datalist", data, "--split", "A_test", "--roi", "32,32,32",
                   "--out", eval_dir, "--device", "cpu", "--quiet"], capsys)
    assert bad.code == 2 and "roi [32, 32, 32] is too small for Swin UNETR" in bad.err and not eval_dir.exists()
    run = run_cli(["mm", "evaluate", "--model", pemma_b, "--datalist", data, "--split", "A_test", "--mode", "pet",
                   "--roi", "64,32,32", "--out", eval_dir, "--device", "cpu", "--quiet"], capsys)
    assert run.code == 0, run.err
    report = json.loads((eval_dir / "A_test_pet.json").read_text())
    assert report["roi"] == [64, 32, 32] and report["hecktor"]["n"] == report["n"] >= 1

    prognosis = tmp_path / "prognosis"
    run = run_cli(["mm", "prognosis", "train", "--model", pemma, "--datalist", data, "--splits", "A_train,B_train",
                   "--roi", "32,32,64", "--seeds", "0", "--epochs", "2", "--out", prognosis, "--device", "cpu"], capsys)
    assert run.code == 0, run.err
    assert json.loads((prognosis / "prognosis.json").read_text())["roi"] == [32, 32, 64]
