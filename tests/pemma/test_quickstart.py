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
    pemma = json.loads((tmp_path / "runs" / "pemma" / "config.json").read_text())
    assert pemma["fusion"] == "tokens" and pemma["train_decoder"] and "targets=query/value" in pemma["peft"]
    # Our earlier design, as options.
    _invoke(runner, ["mm", "adapt", "--init", "runs/ct", "--datalist", "sim/datalist.json", "--centre", "A",
                     "--steps", "1", "--out", "runs/channels", "--no-val", "--fusion", "channels",
                     "--lora-targets", "extended", "--freeze-decoder", *FAST])
    channels = json.loads((tmp_path / "runs" / "channels" / "config.json").read_text())
    assert channels["trained_groups"] == ["lora", "pet", "ct_adapter", "fusion"]
    assert channels["pemma"]["fusion"] == "channels" and not channels["pemma"]["train_decoder"]
    bad = runner.invoke(cli, ["mm", "adapt", "--init", "runs/ct", "--datalist", "sim/datalist.json", "--centre", "A",
                              "--out", "runs/bad", "--lora-targets", "nothing_here", *FAST])
    assert bad.exit_code != 0 and "nothing to attach to" in str(bad.exception) and not (tmp_path / "runs/bad").exists()

    # The whole folder moves: the datalist still resolves from its new place.
    (tmp_path / "moved").mkdir()
    (tmp_path / "sim").rename(tmp_path / "moved" / "sim")
    assert Path(read_mm_datalist(tmp_path / "moved" / "sim" / "datalist.json")["A_train"][0]["ct"]).is_file()
