"""The data-size curve of `petite report`: runs of a `train_subjects` grid kept out of the method tables and
drawn against the count, with the main grid's runs joining at theirs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from petite.report.build import make_report
from tests.report.run_folders import baseline_entry, subject_values, with_masked, write_run


def _run(root: Path, key: str, method: str, family: str, spec: str, n: int, seed: int, base: float,
         role: str) -> None:
    values = with_masked(subject_values(base, seed, 0))
    baselines = {"short": baseline_entry(with_masked(subject_values(20.0 + n, 0, 0))),
                 "gaussian": baseline_entry(with_masked(subject_values(25.0 + n, 0, 0)), sigma=1.0, gain=1.0)}
    if family == "none":
        baselines["calibration"] = baseline_entry(with_masked(subject_values(26.0 + n, 0, 0)))
    extra = {"study": "t", "role": role, "model": "unetr", "preset": "small", "source": "a", "target": "b",
             "pair": "a->b", "method": method, "family": family, "bitfit": False, "seed": seed}
    folder = root / key
    write_run(folder, extra=extra, spec=spec, percent=100.0 if family == "full" else 0.0, subjects=values,
              epochs=0 if family == "none" else 2, seed=seed, real=True, converged=True, baselines=baselines)
    final = json.loads((folder / "final.json").read_text())
    (folder / "final.json").write_text(json.dumps({**final, "train_subjects": n}))


def test_data_size_runs_make_a_curve_and_stay_out_of_the_method_tables(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for n, role in ((1, "data-size"), (2, "data-size"), (4, "finetune")):
        size = f"/n{n}" if role == "data-size" else ""
        _run(runs, f"no-ft{size}/seed0", "No-FT", "none", "none", n, 0, 24.0, role)
        for seed in (0, 1):
            _run(runs, f"full-ft{size}/seed{seed}", "Full-FT", "full", "full", n, seed, 27.0 + n, role)
    results = make_report(runs, tmp_path / "report", figures=False)
    # Only the main grid's runs (n = 4) are in the method tables; the curve holds all three counts.
    assert results["counts"]["reported"] == 3 and results["counts"]["data_size"] == 6
    (table,) = [t for t in results["method_tables"] if t["pair"] == "a->b"]
    assert {r["label"]: r["n_runs"] for r in table["rows"] if r["family"] != "baseline"} == {"No-FT": 1, "Full-FT": 2}
    (curve,) = results["data_size_curves"]
    assert curve["sizes"] == [1, 2, 4]
    full = curve["series"]["Full-FT"]
    assert [p["n"] for p in full] == [1, 2, 4] and all(p["n_seeds"] == 2 for p in full)
    for point in full:  # mean over subjects of the seed-averaged masked PSNR
        per_seed = [with_masked(subject_values(27.0 + point["n"], seed, 0)) for seed in (0, 1)]
        expected = np.mean([np.mean([v[s]["psnr_masked"] for v in per_seed]) for s in per_seed[0]])
        assert point["mean"] == pytest.approx(expected)
        assert point["ci"][0] <= point["mean"] <= point["ci"][1]
    # The baselines fitted on the training subjects move with the count; the flat ones are left out.
    calibration = curve["series"]["No-FT + calibration"]
    assert [p["mean"] for p in calibration] == pytest.approx(
        [np.mean([m["psnr_masked"] for m in with_masked(subject_values(26.0 + n, 0, 0)).values()]) for n in (1, 2, 4)])
    assert "Short scan" not in curve["series"]
    assert (tmp_path / "report" / "data_size_unetr_a-to-b.png").is_file()
    report = (tmp_path / "report" / "report.md").read_text()
    assert "how many target subjects?" in report and "| Method | 1 subject | 2 subjects | 4 subjects |" in report
