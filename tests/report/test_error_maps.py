"""Error maps recomputed from real run folders (petite.report.error_maps, chosen by petite.report.run_figures)."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from tests.cli_runner import run_cli
from tests.report.run_folders import PNG


@pytest.mark.slow
@pytest.mark.e2e
def test_error_maps_from_real_runs(tmp_path, datalist, capsys):
    """Tiny pretrain + No-FT / Full-FT / PETITE runs; the report recomputes their predictions."""
    started = time.perf_counter()
    root = tmp_path / "runs"
    common = ["--datalist", datalist, "--model", "unetr", "--preset", "tiny", "--batch-size", "2", "--quiet"]
    assert run_cli(["pretrain", *common, "--epochs", "1", "--out", root / "pre"]).code == 0
    for method, family, spec, bitfit in (("No-FT", "none", "none", False), ("Full-FT", "full", "full", False),
                                         ("PETITE", "preset", "petite-unetr", True)):
        config = tmp_path / f"{family}.yaml"
        config.write_text(yaml.safe_dump({"extra": {"model": "unetr", "preset": "tiny", "source": "a", "target": "b",
                                                    "pair": "a->b", "method": method, "family": family,
                                                    "bitfit": bitfit, "seed": 0, "role": "finetune"}}))
        epochs = "0" if spec == "none" else "1"
        assert run_cli(["finetune", *common, "--config", config, "--init", root / "pre", "--spec", spec,
                        "--epochs", epochs, "--out", root / method]).code == 0
    result = run_cli(["report", root], capsys)
    assert result.code == 0, result.err
    figure = root / "report" / "error_maps_unetr_a-to-b.png"
    assert figure.read_bytes()[:8] == PNG
    info = next(f for f in json.loads((root / "report" / "results.json").read_text())["figures"]
                if f["kind"] == "error_maps")
    assert info["columns"][1:4] == ["No-FT", "Full-FT", "PETITE"]
    # The recomputed PSNR of each column equals the run's own test PSNR for that subject.
    for label in ("No-FT", "Full-FT", "PETITE"):
        saved = json.loads((root / label / "test_metrics.json").read_text())["subjects"]
        psnr = next(r["psnr"] for r in saved if r["subject"] == info["subject"])
        assert info["metrics"][label]["psnr"] == pytest.approx(psnr, abs=1e-3)
    assert "](error_maps_unetr_a-to-b.png)" in (root / "report" / "report.md").read_text()
    print(f"real-run report test: {time.perf_counter() - started:.1f} s")
