"""The report's tables (petite.report.tables): cell formats, and every table of a report.md rendering as markdown,
on run folders in the engine's current final.json format (masked metrics, baselines, convergence, lr search)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from petite.report.stats import holm
from petite.report.tables import format_p
from petite.tables import render_table
from tests.cli_runner import run_cli
from tests.report.run_folders import baseline_entry, with_masked, write_run

SUBJECTS = ("s0", "s1", "s2", "s3", "s4", "s5")
SEPARATOR = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+$")


def test_p_format():
    assert format_p(None) == "-" and format_p(0.0312) == "0.031" and format_p(2e-4) == "<1e-3"


def _cells(line: str) -> list[str]:
    """The cells of a markdown table line (escaped pipes stay inside their cell)."""
    assert line.startswith("|") and line.endswith("|"), line
    return [c.strip() for c in re.split(r"(?<!\\)\|", line[1:-1])]


def markdown_tables(md: str) -> list[list[str]]:
    """Every table of ``md``: runs of consecutive lines starting with ``|``."""
    tables, current = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def assert_renders(table: list[str]) -> None:
    assert len(table) >= 2 and SEPARATOR.match(table[1]), table[:2]
    width = len(_cells(table[0]))
    assert all(len(_cells(line)) == width for line in table), table


def test_render_table_has_a_separator_and_escapes_pipes():
    _, md = render_table(["a", "b"], [["x|y", "1"], ["z", "two\nlines"]])
    lines = md.splitlines()
    assert_renders(lines)
    assert lines[2] == "| x\\|y | 1 |" and lines[3] == "| z | two lines |"


def _values(base: float, seed: int, k: int) -> dict[str, dict[str, float]]:
    out = {}
    for i, subject in enumerate(SUBJECTS):
        psnr = base + 0.4 * i + 0.02 * seed + 0.05 * k * ((i % 3) - 1)
        out[subject] = {"psnr": psnr, "ssim": 0.9 + 0.001 * i, "nrmse": 0.03 - 0.0005 * i}
    return with_masked(out)


@pytest.fixture()
def real_runs(tmp_path: Path) -> Path:
    """Runs in today's final.json format, a study.yaml declaring two comparisons and one post-hoc row."""
    root = tmp_path / "runs"
    short, gaussian = _values(28.0, 0, 0), _values(29.0, 0, 1)
    baselines = {"short": baseline_entry(short), "gaussian": baseline_entry(gaussian, sigma=1.0, gain=1.0)}
    methods = [("No-FT", "none", (0,), 30.0), ("Full-FT", "full", (0, 1), 31.0), ("LoRA", "single", (0, 1), 31.02),
               ("PETITE", "preset", (0, 1), 31.5), ("Full-FT lr 1e-4", "custom", (0, 1), 32.0)]
    for k, (method, family, seeds, base) in enumerate(methods):
        for seed in seeds:
            extra = {"model": "unetr", "preset": "small", "source": "1h", "target": "4h", "pair": "1h->4h",
                     "method": method, "family": family, "bitfit": family == "preset", "seed": seed,
                     "role": "finetune"}
            run_baselines = dict(baselines)
            if family == "none":
                run_baselines["calibration"] = baseline_entry(_values(30.5, 0, 2), gain=1.1, offset=0.0)
            write_run(root / f"{k}-{seed}", extra=extra, spec="x", percent=0.5, subjects=_values(base, seed, k),
                      seed=seed, epochs=0 if family == "none" else 2, real=True, converged=seed == 0,
                      baselines=run_baselines,
                      lr_search={"grid": [0.3, 1, 3], "chosen": 3.0} if method == "PETITE" else None)
    study = {"name": "t", "data": {}, "grids": [],
             "report": {"comparisons": [["PETITE", "Full-FT"], ["PETITE", "No-FT"]], "post_hoc": ["Full-FT lr 1e-4"]}}
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    return root


def test_every_table_of_a_report_renders_with_baselines_and_declared_comparisons(real_runs, capsys):
    result = run_cli(["report", real_runs, "--no-figures"], capsys)
    assert result.code == 0, result.err
    md = (real_runs / "report" / "report.md").read_text()
    tables = markdown_tables(md)
    assert len(tables) == 3  # method table, declared comparisons, cost table (no Mix-PEFT here)
    for table in tables:
        assert_renders(table)
    assert "<u>" not in md and "±" not in md

    results = json.loads((real_runs / "report" / "results.json").read_text())
    table = results["method_tables"][0]
    assert table["rank_metric"] == "psnr_masked"
    rows = {r["label"]: r for r in table["rows"]}
    # Baselines first, No-FT + calibration after No-FT; their numbers are the final.json per-subject values.
    assert [r["label"] for r in table["rows"]][:4] == ["Short scan", "Gaussian filter (target-fitted)", "No-FT",
                                                      "No-FT + calibration"]
    assert rows["Gaussian filter (target-fitted)"]["psnr_masked"]["mean"] == pytest.approx(
        np.mean([v["psnr_masked"] for v in _values(29.0, 0, 1).values()]))
    header = _cells(markdown_tables(md)[0][0])
    assert header[3:5] == ["PSNR head (dB)", "SSIM head"] and "converged" in header and "lr (auto)" in header
    petite = _cells(next(line for line in tables[0] if line.startswith("| PETITE |")))
    assert petite[header.index("converged")] == "1/2" and petite[header.index("lr (auto)")] == "×3"
    # The post-hoc row is the best on every metric but is never marked; the best marked row is resolved.
    late = _cells(next(line for line in tables[0] if line.startswith("| Full-FT lr 1e-4 (post hoc) |")))
    assert not any("**" in c or c.endswith(" =") for c in late) and rows["Full-FT lr 1e-4"]["post_hoc"]
    assert rows["PETITE +BitFit" if "PETITE +BitFit" in rows else "PETITE"]["psnr_masked"]["mark"] == "best"
    # Full-FT and LoRA are 0.02 dB apart with subject-level noise: neither is marked on its own.
    assert rows["LoRA"]["psnr_masked"]["mark"] == ""
    # Only the two declared comparisons are tested, Holm-corrected together.
    tests = table["comparisons"]
    assert [(t["row"], t["ref"]) for t in tests] == [("PETITE", "Full-FT"), ("PETITE", "No-FT")]
    assert [t["p_holm"] for t in tests] == pytest.approx(holm([t["p"] for t in tests]))
    assert "declared in the study's `report: comparisons`" in md


def test_old_run_folders_with_summary_only_baselines(tmp_path, capsys):
    """Runs saved before per-subject baselines: the baseline rows show the summary means, without intervals."""
    root = tmp_path / "runs"
    for method, family, base in (("No-FT", "none", 30.0), ("Full-FT", "full", 31.0)):
        extra = {"model": "unetr", "preset": "small", "source": "1h", "target": "4h", "pair": "1h->4h",
                 "method": method, "family": family, "bitfit": False, "seed": 0, "role": "finetune"}
        write_run(root / method, extra=extra, spec="x", percent=1.0, subjects=_values(base, 0, 0), real=True,
                  epochs=0 if family == "none" else 2, converged=True,
                  baselines={"short": baseline_entry(_values(28.0, 0, 0), per_subject=False)})
    assert run_cli(["report", root, "--no-figures"], capsys).code == 0
    md = (root / "report" / "report.md").read_text()
    for table in markdown_tables(md):
        assert_renders(table)
    short = _cells(next(line for line in md.splitlines() if line.startswith("| Short scan |")))
    assert short[3] == f"{np.mean([v['psnr_masked'] for v in _values(28.0, 0, 0).values()]):.2f}"
    assert short[-4:-2] == ["-", "-"] or "-" in short[8:10]


@pytest.mark.parametrize("doc", ["docs/RESULTS.md", "docs/results/report.md", "docs/results-2026-12-06/report.md"])
def test_committed_result_tables_render(doc):
    text = (Path(__file__).resolve().parents[2] / doc).read_text()
    tables = markdown_tables(text)
    assert tables and "<u>" not in text
    for table in tables:
        assert_renders(table)
