"""`petite report` as a whole (petite.report.build): tables, paired tests, Mix-PEFT table and figures, on run folders
with known numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import wilcoxon

from petite.report.build import make_report
from petite.report.stats import bootstrap_ci, holm
from tests.cli_runner import run_cli
from tests.report.run_folders import PNG, SUBJECTS, subject_values, write_run

PAIR = "1h->4h"
# (method, family, bitfit, encoder, decoder, seeds, base PSNR, percent)
METHODS = [
    ("No-FT", "none", False, None, None, (0,), 30.0, 0.0),
    ("Full-FT", "full", False, None, None, (0, 1), 32.0, 100.0),
    ("LoRA", "single", True, None, None, (0, 1), 31.5, 0.8),
    ("SSF", "single", False, None, None, (0, 1), 31.0, 0.05),
    ("LoRA + SSF", "mix", True, "lora", "ssf", (0, 1), 32.3, 0.6),
    ("SSF + LoRA", "mix", True, "ssf", "lora", (0,), 31.2, 0.7),
]


@pytest.fixture()
def study(tmp_path: Path) -> tuple[Path, dict]:
    """A sweep-like runs folder; returns it and {(method, seed): per-subject metrics} for pair 1h->4h."""
    root = tmp_path / "runs"
    truth: dict = {}
    for k, (method, family, bitfit, enc, dec, seeds, base, percent) in enumerate(METHODS):
        for seed in seeds:
            values = subject_values(base, seed if family != "none" else 0, k)
            truth[(method, seed)] = values
            extra = {"study": "t", "grid": "main", "role": "finetune", "model": "unetr", "preset": "small",
                     "source": "1h", "target": "4h", "pair": PAIR, "method": method, "family": family,
                     "bitfit": bitfit, "encoder": enc, "decoder": dec, "seed": seed}
            step = {"Full-FT": 0.4, "LoRA": 0.3}.get(method, 0.2)
            write_run(root / "main" / f"{method.replace(' ', '')}-s{seed}", extra=extra, spec=method.lower(),
                      percent=percent, subjects=values, epochs=0 if family == "none" else 2, seed=seed, step=step,
                      memory=2000.0 if method == "Full-FT" else 1000.0)
    # A second pair with No-FT and Full-FT only (for the "all targets" table).
    for method, family, base, percent in (("No-FT", "none", 29.0, 0.0), ("Full-FT", "full", 31.0, 100.0)):
        values = subject_values(base, 0, 9)
        truth[(method, 0, "1h->5h")] = values
        extra = {"model": "unetr", "preset": "small", "source": "1h", "target": "5h", "pair": "1h->5h",
                 "method": method, "family": family, "bitfit": False, "seed": 0, "role": "finetune"}
        write_run(root / "p5" / method, extra=extra, spec=method.lower(), percent=percent, subjects=values,
                  epochs=0 if family == "none" else 2, step=0.4, memory=2000.0 if method == "Full-FT" else 1000.0)
    # Not finished, and a pre-training run (counted, not tabulated).
    write_run(root / "main" / "VPT-s1", extra={"method": "VPT", "family": "single", "seed": 1}, spec="vpt",
              percent=0.1, subjects=None)
    write_run(root / "pre", extra={"role": "pretrain", "method": "pretrain", "model": "unetr"}, spec="full",
              percent=100.0, subjects=subject_values(25, 0, 0), init=None)
    return root, truth


def _row(section: str, method: str) -> list[str]:
    line = next(line for line in section.splitlines() if line.startswith(f"| {method} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def _section(md: str, title: str) -> str:
    start = md.index(f"### {title}")
    end = md.find("### ", start + 4)
    return md[start:end if end > 0 else None]


def _seed_means(truth: dict, method: str, seeds: tuple[int, ...], metric: str = "psnr") -> np.ndarray:
    return np.array([np.mean([truth[(method, s)][subj][metric] for s in seeds]) for subj in SUBJECTS])


def _plain(cell: str) -> str:
    """A metric cell without its best / tie marks."""
    return cell.replace("**", "").removesuffix(" =")


def test_report_tables_tests_and_figures(study, capsys):
    root, truth = study
    result = run_cli(["report", root], capsys)
    assert result.code == 0, result.err
    out = root / "report"
    md = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())

    # Header: what was reported.
    assert results["counts"] == {"run_folders": 14, "reported": 12, "pretrain": 1, "unfinished": 1, "skipped": 0,
                                 "data_size": 0}
    assert "12 finished fine-tuning runs reported" in md and "1 not finished" in md
    assert "## Not finished" in md and "`main/VPT-s1`" in md
    assert results["pairs"] == ["1h->4h", "1h->5h"] and results["seeds"] == [0, 1]

    # Method table of pair 1h->4h: means over subjects of seed-averaged values, row order, marks.
    table = _section(md, f"unetr: {PAIR}")
    order = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")][1:]
    assert order == ["No-FT", "Full-FT", "LoRA", "SSF", "LoRA + SSF", "SSF + LoRA"]
    for method, family, bitfit, _, _, seeds, _, percent in METHODS:
        cells = _row(table, method)
        for col, metric, digits in ((3, "psnr", 2), (4, "ssim", 3), (5, "nrmse", 4)):
            assert _plain(cells[col]) == f"{_seed_means(truth, method, seeds, metric).mean():.{digits}f}"
        assert cells[1] == ("-" if family in ("none", "full") else "✓" if bitfit else "✗")
        assert cells[-1] == str(len(seeds)) and "±" not in "".join(cells)
    assert _row(table, "SSF")[2] == "0.05" and _row(table, "LoRA")[2] == "0.80" and _row(table, "No-FT")[2] == "0"
    # Seed and subject spreads of the ranking metric (whole-volume PSNR: these old runs have no masked metrics).
    lora_seeds = [np.mean([truth[("LoRA", s)][x]["psnr"] for x in SUBJECTS]) for s in (0, 1)]
    assert _row(table, "LoRA")[6] == f"{np.std(lora_seeds, ddof=1):.2f}"
    assert _row(table, "LoRA")[7] == f"{np.std(_seed_means(truth, 'LoRA', (0, 1)), ddof=1):.2f}"
    assert _row(table, "No-FT")[6] == "-" and _row(table, "SSF + LoRA")[6] == "-"  # trains nothing / one seed
    # Best PSNR is LoRA + SSF, bold: its paired interval against the runner-up (Full-FT) excludes 0; no <u>.
    assert _row(table, "LoRA + SSF")[3].startswith("**") and not _row(table, "Full-FT")[3].startswith("**")
    assert _row(table, "LoRA + SSF")[5].startswith("**") and "<u>" not in md
    # Paired differences with bootstrap intervals against Full-FT and No-FT.
    lora, full = _seed_means(truth, "LoRA", (0, 1)), _seed_means(truth, "Full-FT", (0, 1))
    noft = _seed_means(truth, "No-FT", (0,))  # No-FT trains nothing: pairs with every seed of the other side
    lo, hi = bootstrap_ci(lora - full)
    assert _row(table, "LoRA")[8] == f"{(lora - full).mean():+.2f} [{lo:+.2f}, {hi:+.2f}]"
    assert _row(table, "Full-FT")[8] == "-" and _row(table, "No-FT")[9] == "-"
    # Wilcoxon p-values only for the default comparisons (every method vs Full-FT and vs No-FT), Holm-corrected.
    jt = next(t for t in results["method_tables"] if t["pair"] == PAIR)
    tests = {(t["row"], t["ref"]): t for t in jt["comparisons"]}
    assert len(tests) == 9 and ("Full-FT", "No-FT") in tests and ("No-FT", "Full-FT") not in tests
    p_full, p_noft = wilcoxon(lora, full).pvalue, wilcoxon(lora, noft).pvalue
    assert tests[("LoRA +BitFit", "Full-FT")]["p"] == pytest.approx(p_full)
    assert tests[("LoRA +BitFit", "No-FT")]["p"] == pytest.approx(p_noft)
    holm_p = holm([t["p"] for t in jt["comparisons"]])
    assert [t["p_holm"] for t in jt["comparisons"]] == pytest.approx(holm_p)
    # 3 subjects: no test can reach 0.05, and the table says so.
    assert all(t["min_p"] == pytest.approx(0.25) and not t["significant"] for t in jt["comparisons"])
    comparisons = md[md.index(f"#### unetr: {PAIR}, declared comparisons"):]
    assert "| LoRA +BitFit vs Full-FT | 3 | 0, 1 |" in comparisons and "cannot reach p < 0.05" in comparisons
    # "SSF + LoRA" has seed 0 only: against Full-FT it pairs on the shared seed 0.
    mix2 = _seed_means(truth, "SSF + LoRA", (0,))
    full0 = _seed_means(truth, "Full-FT", (0,))
    assert tests[("SSF + LoRA +BitFit", "Full-FT")]["p"] == pytest.approx(wilcoxon(mix2, full0).pvalue)
    assert tests[("SSF + LoRA +BitFit", "Full-FT")]["seeds"] == [0]
    jrows = {r["label"]: r for r in jt["rows"]}
    assert jrows["LoRA +BitFit"]["psnr"]["mean"] == pytest.approx(
        np.mean([truth[("LoRA", s)][x]["psnr"] for s in (0, 1) for x in SUBJECTS]), abs=1e-12)
    assert jrows["LoRA + SSF +BitFit"]["psnr"]["mark"] == "best"

    # "All targets": Full-FT pools both pairs, each (pair, subject) averaged over its seeds.
    all_table = _section(md, "unetr: all targets")
    pooled = list(_seed_means(truth, "Full-FT", (0, 1)))
    pooled += [truth[("Full-FT", 0, "1h->5h")][x]["psnr"] for x in SUBJECTS]
    assert _plain(_row(all_table, "Full-FT")[3]) == f"{np.mean(pooled):.2f}"

    # Mix-PEFT table: rows encoder, columns decoder; diagonal from the single method (†) where BitFit matches.
    mix = _section(md, "unetr: Mix-PEFT")
    lines = [line for line in mix.splitlines() if line.startswith("| ")]
    assert lines[0] == "| Encoder \\ Decoder | LoRA | SSF |"
    lora_ssf = _seed_means(truth, "LoRA + SSF", (0, 1)).mean()
    ssf_lora = _seed_means(truth, "SSF + LoRA", (0,)).mean()
    lora_single = _seed_means(truth, "LoRA", (0, 1)).mean()
    assert lines[1] == f"| **LoRA** | {lora_single:.2f} † | **{lora_ssf:.2f}** |"
    assert lines[2] == f"| **SSF** | {ssf_lora:.2f} | - |"
    assert "| **LoRA** | 0.80 † | 0.60 |" in mix

    # Cost table: ratios to Full-FT.
    cost = _section(md, "unetr: training cost")
    assert _row(cost, "LoRA")[4:6] == ["0.300", "0.75"] and _row(cost, "LoRA")[8] == "0.50"

    # Figures: the plot is a PNG; the fixture has no weights, so the error maps are skipped with a note.
    png = out / "psnr_vs_params_unetr.png"
    assert png.read_bytes()[:8] == PNG and "](psnr_vs_params_unetr.png)" in md
    assert "Error-map figure not drawn" in md and not list(out.glob("error_maps_*"))
    # ... after choosing pair 1h->4h (most methods), No-FT, Full-FT and the best single method (LoRA), seed 0.
    note = next(n for n in results["notes"] if n.startswith("error maps"))
    assert "unetr 1h->4h" in note and "main/LoRA-s0" in note and "main/Full-FT-s0" in note and "SSF" not in note
    # Points of one plot come from the same targets: the pooled plot holds only the methods run on
    # both pairs; pair 1h->4h, which has more methods, gets its own plot.
    plots = {f["scope"]: f for f in results["figures"] if f["kind"] == "psnr_vs_params"}
    assert set(plots) == {"all targets", "1h->4h"}
    assert {p["method"] for p in plots["all targets"]["points"]} == {"Full-FT"}
    assert plots["1h->4h"]["no_ft"]["percent"] == 0
    assert {p["method"] for p in plots["1h->4h"]["points"]} >= {"Full-FT", "LoRA +BitFit"}
    assert (out / "psnr_vs_params_unetr_1h-to-4h.png").read_bytes()[:8] == PNG

    # A second report needs --overwrite; a folder that is not a report is never replaced.
    assert run_cli(["report", root], capsys).code == 2
    assert run_cli(["report", root, "--overwrite", "--no-figures"], capsys).code == 0
    other = root / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    again = run_cli(["report", root, "--out", other, "--overwrite"], capsys)
    assert again.code == 2 and "not a petite report" in again.err and (other / "mine.txt").read_text() == "keep"


def test_results_json_round_trips(study):
    root, _ = study
    result = make_report(root, root / "rep", figures=False)
    saved = json.loads((root / "rep" / "results.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["format"] == "petite-report/1" and saved["figures"][0]["path"] == "psnr_vs_params_unetr.png"


def test_figure_caption_names_only_what_is_drawn(tmp_path: Path, capsys) -> None:
    """A study without No-FT (or Full-FT) runs: the caption must not promise their line or point."""
    root = tmp_path / "runs"
    for k, (method, family, percent) in enumerate((("LoRA", "single", 0.8), ("SSF", "single", 0.05))):
        extra = {"model": "unetr", "preset": "small", "source": "1h", "target": "4h", "pair": PAIR, "method": method,
                 "family": family, "bitfit": False, "seed": 0, "role": "finetune"}
        write_run(root / method, extra=extra, spec=method.lower(), percent=percent,
                  subjects=subject_values(30.0 + k, 0, k))
    result = run_cli(["report", root, "--no-figures"], capsys)
    assert result.code == 0, result.err
    md = (root / "report" / "report.md").read_text()
    caption = next(line for line in md.splitlines() if line.startswith("PSNR vs % trainable parameters (log axis)"))
    assert "No-FT" not in caption and "dashed" not in caption and "Full-FT" not in caption
    figure = json.loads((root / "report" / "results.json").read_text())["figures"][0]
    assert figure["no_ft"] is None and {p["method"] for p in figure["points"]} == {"LoRA", "SSF"}
