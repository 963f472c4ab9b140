"""`petite mm demo --quick`: both tables printed, the report written, no overwrite without --overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_runner import run_cli

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.e2e]


def test_demo_quick_prints_both_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(["mm", "demo", "--out", tmp_path, "--quick"], capsys)
    assert result.code == 0, result.err
    for text in ("Segmentation on A_test", "Early fusion", "Late fusion", "PEMMA", "% trainable", "Steps (best)", "Stopped", "Dice GTVp",
                 "HD95 GTVn (mm, n)", "DSCagg mean [95 % CI]", "GTVn absent: FP/TN", "forgetting", "Total time"):
        assert text in result.out, text
    report = tmp_path / "report"
    assert {"table.md", "results.json", "segmentations.png"} <= {p.name for p in report.iterdir()}
    results = json.loads((report / "results.json").read_text())
    assert [(r["run"], r["mode"]) for r in results["rows"]] == [
        ("ct", "ct"), ("pet", "pet"), ("early", "ctpet"), ("late", "ctpet"), ("pemma", "ctpet"), ("pemma", "ct"),
        ("pemma", "pet")]
    # Every trained model says how its training ended (late fusion trains nothing).
    trained = [r for r in results["rows"] if r["run"] != "late"]
    assert all(r["steps"] >= 1 and 1 <= r["best_step"] <= r["steps"] and isinstance(r["converged"], bool)
               for r in trained)
    # Continual adaptation: PEMMA's PET parts and the two forgetting baselines, each scored on B (PET) and A.
    continual = results["continual"]
    assert [(r["update"], r["split"], r["mode"]) for r in continual] == [
        (update, split, mode) for update in ("modality", "adapter", "full")
        for split, mode in (("B_test", "pet"), ("A_test", "ctpet"), ("A_test", "ct"), ("A_test", "pet"))]
    ct_rows = {r["update"]: r for r in continual if r["split"] == "A_test" and r["mode"] == "ct"}
    assert ct_rows["modality"]["before"] == ct_rows["modality"]["after"]  # no CT path is touched
    assert all(f"{r['lr']:g}" in r["lrs_tried"] for r in continual)
    assert "Full fine-tuning" in result.out and "LoRA + decoder unfrozen" in result.out
    assert run_cli(["mm", "demo", "--out", tmp_path, "--quick"], capsys).code == 2  # refuses to overwrite
