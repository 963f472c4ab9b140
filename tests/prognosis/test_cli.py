"""`petite mm prognosis train | evaluate` through the CLI, and its one-line refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from petite.headneck.clinical import VARIABLES
from petite.headneck.datalist import read_mm_datalist
from tests.cli_runner import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.e2e
def test_cli_train_and_evaluate_round_trip(data: Path, runs_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "prognosis"
    run = run_cli(["mm", "prognosis", "train", "--model", runs_dir / "pemma", "--datalist", data,
                   "--splits", "A_train,A_val", "--clinical", "--seeds", "0,1", "--out", out, "--device", "cpu",
                   "--epochs", "20"], capsys)
    assert run.code == 0, run.err
    assert "9 patients (4 relapses)" in run.out
    meta = json.loads((out / "prognosis.json").read_text())
    assert meta["mode"] == "ctpet" and meta["use_clinical"] and meta["seeds"] == [0, 1]
    assert set(meta["imputation"]["fill"]) == set(VARIABLES) and len(meta["scaling"]["mean"]) == len(VARIABLES)
    assert (out / "heads.safetensors").is_file()
    run = run_cli(["mm", "prognosis", "evaluate", "--run", out, "--datalist", data, "--split", "A_test",
                   "--device", "cpu"], capsys)
    assert run.code == 0, run.err
    assert "A_test: 3 patients, 2 relapses; C-index" in run.out
    result = json.loads((out / "eval" / "evaluation_A_test.json").read_text())
    assert {"c_index", "ibs", "km_png", "logrank_p", "c_index_per_seed"} <= set(result)
    rows = list(csv.DictReader((out / "eval" / "risks_A_test.csv").open()))
    assert [r["patient"] for r in rows] == [i["patient"] for i in read_mm_datalist(data)["A_test"]]
    ct_out = tmp_path / "ct"
    run = run_cli(["mm", "prognosis", "train", "--model", runs_dir / "ct", "--datalist", data, "--splits", "A_train",
                   "--seeds", "3", "--out", ct_out, "--device", "cpu", "--epochs", "5"], capsys)
    assert run.code == 0, run.err
    assert json.loads((ct_out / "prognosis.json").read_text())["mode"] == "ct"


def test_cli_refuses_a_bad_clinical_csv_in_one_line(data: Path, runs_dir: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    lines = (data.parent / "clinical.csv").read_text().splitlines()
    bad.write_text("\n".join([lines[0], lines[1].replace(",M,", ",X,").replace(",F,", ",X,"), *lines[2:]]) + "\n")
    run = run_cli(["mm", "prognosis", "train", "--model", runs_dir / "ct", "--datalist", data, "--splits", "A_train",
                   "--clinical", "--clinical-csv", bad, "--out", tmp_path / "o"], capsys)
    assert run.code == 2
    assert run.err.count("\n") == 1 and "bad.csv" in run.err and "row 2, column 'Gender'" in run.err
    assert not (tmp_path / "o").exists()
    run = run_cli(["mm", "prognosis", "evaluate", "--run", tmp_path, "--datalist", data, "--split", "A_test"], capsys)
    assert run.code == 2 and "not a prognosis run folder" in run.err
