"""`petite demo`: the quick end-to-end run, and the demo's building blocks."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from petite.data.scanners import BUILTIN_SCANNERS, half_resolution, load_scanner_file
from petite.demos.pet import demo_scanners, describe_stop, format_table, paired_difference, run_demo, verdict
from petite.errors import UserError

METHODS = ("No-FT", "Full-FT", "PETITE")


def _petite(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    code = "import sys; from petite.cli import main; main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)


def test_half_resolution_keeps_field_of_view_and_parameters():
    source, target = demo_scanners()
    assert (source.id, target.id) == ("1h", "4h")
    assert source.shape == (96, 96, 68) and target.shape == (64, 64, 45)
    for half, full in ((source, BUILTIN_SCANNERS["1"]), (target, BUILTIN_SCANNERS["4"])):
        for n_half, s_half, n, s in zip(half.shape, half.spacing, full.shape, full.spacing):
            assert abs(n_half * s_half - n * s) <= s  # same field of view up to the rounding of odd grids
        assert (half.vendor, half.site, half.fwhm_mm, half.counts) == (full.vendor, full.site, full.fwhm_mm, full.counts)
    odd = half_resolution(BUILTIN_SCANNERS["5"])
    assert odd.shape == (64, 64, 32) and odd.id == "5h"
    # Every paper scanner has its built-in half-resolution copy (petite simulate --scanners 1h,4h).
    assert all(BUILTIN_SCANNERS[f"{n}h"] == half_resolution(BUILTIN_SCANNERS[n]) for n in "12345")


def test_format_table_lists_every_row():
    row = dict(method="PETITE", percent=0.51, psnr=30.0, psnr_std=0.1, ssim=0.9, ssim_std=0.01, psnr_masked=27.5,
               psnr_masked_std=0.2, ssim_masked=0.95, ssim_masked_std=0.01, step_time_s=1.5,
               peak_memory_added_mb=900.0, steps=120, converged=True)
    text, md = format_table([row, dict(row, method="No-FT", percent=None, step_time_s=None, steps=0)])
    assert "27.50 ± 0.20" in text and "30.00 ± 0.10" in text and "0.51" in text and "120 (converged)" in text
    assert md.count("\n") == 3 and md.startswith("| Method")


def test_verdict_makes_no_claim_when_the_gate_fails_and_quantifies_the_calibration():
    subjects = ("a", "b", "c", "d")

    def row(psnr, percent=None, spread=(0.0, 0.0, 0.0, 0.0)):
        values = {s: psnr + d for s, d in zip(subjects, spread)}
        return {"psnr_masked": float(np.mean(list(values.values()))), "percent": percent, "subjects": values}

    rows = {"No-FT": row(28.0), "No-FT + calibration": row(28.5), "Full-FT": row(30.0, 100.0),
            # PETITE: 0.3 dB over the Gaussian fitted on 4h on average, but worse on one subject of four.
            "PETITE": row(29.5, 0.6, spread=(0.0, 0.0, 0.0, 0.0)),
            "Gaussian filter (fitted on 4h)": row(29.2, spread=(-0.6, -0.6, -0.6, 1.8)),
            "Gaussian filter (fitted on 1h)": row(28.6)}
    failed = verdict(rows, {"passed": False, "verdict": "quality gate FAILED"})
    assert len(failed) == 2 and "No claim" in failed[1]
    lines = verdict(rows, {"passed": True, "verdict": "quality gate passed"})
    # Calibration recovers (28.5 - 28.0) / (29.5 - 28.0) = 33 % of PETITE's gain over No-FT.
    petite = next(line for line in lines if line.startswith("PETITE: 29.50 dB"))
    assert "recovers 33 %" in petite and "+1.50 dB [+1.50, +1.50] over No-FT" in petite
    # The paired interval against the filter includes 0 (one subject goes the other way): not resolved.
    assert "beats No-FT, the calibrated source model" in lines[-1]
    assert "difference to the fitted filter is not resolved" in lines[-1]
    assert "-0.50 dB [-0.50, -0.50] from Full-FT" in lines[-1]


def test_paired_difference_interval_matches_a_direct_bootstrap():
    rng = np.random.default_rng(3)
    a = {str(i): float(v) for i, v in enumerate(rng.normal(1.0, 0.5, 12))}
    b = {str(i): 0.0 for i in range(12)}
    b["extra"] = 5.0  # a subject only one method has is left out of the pairs
    mean, lo, hi = paired_difference(a, b, resamples=2000, seed=7)
    diffs = np.array([a[k] for k in sorted(a)])
    assert mean == pytest.approx(diffs.mean())
    draws = np.random.default_rng(7).integers(0, 12, size=(2000, 12))
    means = np.array([diffs[d].mean() for d in draws])
    assert (lo, hi) == pytest.approx((np.percentile(means, 2.5), np.percentile(means, 97.5)))
    assert lo < mean < hi


def test_describe_stop_shows_the_last_validation_gain_of_a_capped_run(tmp_path):
    records = [{"step": 100, "loss": 1.0, "val_psnr_masked": 29.50}, {"step": 150, "loss": 0.9},
               {"step": 200, "val_psnr_masked": 29.53}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    capped = describe_stop({"converged": False, "best_step": 200}, tmp_path)
    assert capped == ("hit the cap at the end of its schedule, best at step 200; "
                      "the last 100 steps gained +0.03 dB on validation")
    assert describe_stop({"converged": True, "best_step": 100}, tmp_path) == "converged, best at step 100"


@pytest.mark.parametrize("option", [{"normalise": "minmax"}, {"precision": "fp8"}])
def test_demo_refuses_bad_options_before_writing(tmp_path, option):
    out = tmp_path / "demo"
    with pytest.raises(UserError, match="must be one of"):
        run_demo(out, quick=True, echo=lambda line: None, **option)
    assert not out.exists()


@pytest.mark.e2e
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = _petite("demo", "--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    stdout = result.stdout
    for stage in ("simulate", "pretrain", "quality gate", "baselines", "fine-tune Full-FT", "fine-tune PETITE",
                  "report"):
        assert stage in stdout
    assert "Total time:" in stdout and "half-resolution" in stdout

    report = out / "report"
    table = (report / "table.md").read_text()
    results = json.loads((report / "results.json").read_text())
    rows = {row["method"]: row for row in results["rows"]}
    every = ("Short scan (input)", "Gaussian filter (fitted on 4h)", "Gaussian filter (fitted on 1h)", "No-FT",
             "No-FT + calibration", "Full-FT", "PETITE")
    assert list(rows) == list(every)
    # Every row holds the same test subjects: the verdict's differences are paired.
    assert all(set(rows[m]["subjects"]) == set(rows["No-FT"]["subjects"]) and rows[m]["subjects"] for m in every)
    for method in every:
        assert f"| {method} |" in table
        assert method in stdout
        for key in ("psnr", "ssim", "nrmse", "psnr_masked", "ssim_masked"):
            assert math.isfinite(rows[method][key]) and math.isfinite(rows[method][f"{key}_std"])
    assert results["gate"]["verdict"] in stdout and results["verdict"][0].startswith("quality gate")
    assert rows["Full-FT"]["percent"] == pytest.approx(100.0)
    assert results["normalise"] == "input" and results["precision"] in ("fp32", "bf16")  # auto resolved, recorded
    assert 0 < rows["PETITE"]["percent"] < 5
    assert rows["Full-FT"]["step_time_s"] > 0 and rows["PETITE"]["peak_memory_added_mb"] > 0
    png = report / "error_maps.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["figure"]["columns"][1:4] == list(METHODS)
    # The scanner file is the documented user path to the same scanners.
    assert set(load_scanner_file(out / "scanners.yaml")) == {"1h", "4h"}

    # A second run refuses to clobber the first one without --overwrite, before doing anything.
    with pytest.raises(UserError, match="--overwrite"):
        run_demo(out, quick=True, echo=lambda line: None)
