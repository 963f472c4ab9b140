"""The README's ``petite mm`` quick start, run as written: relative folders from the working directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from petite.cli import _register_commands
from petite.cli.app import cli
from petite.headneck.datalist import read_mm_datalist
from tests.pemma.tiny import FAST, TRAIN


def _invoke(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_readme_quick_start_with_relative_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--out sim`` then ``--datalist sim/datalist.json`` (the README's order): the second command finds the data."""
    _register_commands()
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    _invoke(runner, ["mm", "simulate", "--out", "sim", "--centres", "A,B", "--patients", "3", "--size", "tiny",
                     "--quiet"])
    stored = json.loads((tmp_path / "sim" / "datalist.json").read_text())
    first = stored["A_train"][0]
    # Stored relative to the datalist's folder, so the folder can move as a whole.
    assert not Path(first["ct"]).is_absolute() and (tmp_path / "sim" / first["ct"]).is_file()
    assert read_mm_datalist("sim/datalist.json")["A_train"][0]["ct"] == str((tmp_path / "sim" / first["ct"]).resolve())

    _invoke(runner, ["mm", "pretrain", "--datalist", "sim/datalist.json", "--centre", "A", "--inputs", "ct",
                     "--steps", "1", "--out", "runs/ct", "--no-val", *TRAIN])
    _invoke(runner, ["mm", "adapt", "--init", "runs/ct", "--datalist", "sim/datalist.json", "--centre", "A",
                     "--steps", "1", "--out", "runs/pemma", "--no-val", *FAST])
    assert (tmp_path / "runs" / "pemma" / "final.json").is_file()

    # The whole folder moves: the datalist still resolves from its new place.
    (tmp_path / "moved").mkdir()
    (tmp_path / "sim").rename(tmp_path / "moved" / "sim")
    assert Path(read_mm_datalist(tmp_path / "moved" / "sim" / "datalist.json")["A_train"][0]["ct"]).is_file()
