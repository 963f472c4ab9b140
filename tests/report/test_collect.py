"""Finding and labelling run folders (petite.report.collect): runs without sweep labels, bad input."""

from __future__ import annotations

import json

import pytest

from tests.cli_runner import run_cli
from tests.report.run_folders import subject_values, write_run


def test_unlabelled_runs_are_reported(tmp_path, capsys):
    root = tmp_path / "runs"
    for spec, base in (("none", 30.0), ("full", 31.0), ("encoder=lora,bitfit", 30.5)):
        write_run(root / spec.replace("=", "_").replace(",", "_"), extra=None, spec=spec, percent=1.0,
                  subjects=subject_values(base, 0, 0), datalist_path="/data/scanner4h/datalist.json", seed=3)
    assert run_cli(["report", root], capsys).code == 0
    results = json.loads((root / "report" / "results.json").read_text())
    runs = {r["method"]: r for r in results["runs"]}
    assert set(runs) == {"No-FT", "Full-FT", "encoder=lora,bitfit"}
    assert runs["encoder=lora,bitfit"]["family"] == "run" and runs["encoder=lora,bitfit"]["bitfit"] is True
    assert {r["pair"] for r in runs.values()} == {"?->scanner4h"} and results["seeds"] == [3]


@pytest.mark.parametrize("case", ["empty", "corrupt_final"])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, case):
    root = tmp_path / "runs"
    root.mkdir()
    bad = root
    if case == "corrupt_final":
        write_run(root / "a", extra=None, spec="full", percent=100.0, subjects=subject_values(30, 0, 0))
        bad = root / "a" / "final.json"
        bad.write_text("{not json")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = run_cli(["report", root], capsys)
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1 and str(bad) in result.err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
