"""The report's statistics (petite.report.stats) on hand-made numbers and small synthetic run folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import wilcoxon

from petite.report.collect import collect_runs, group_rows
from petite.report.stats import (
    bootstrap_ci,
    compare,
    declared_tests,
    holm,
    mark_best,
    min_attainable_p,
    spreads,
    wilcoxon_test,
)
from tests.report.run_folders import with_masked, write_run

SUBJECTS = ("s0", "s1", "s2", "s3", "s4", "s5")


def _rows(tmp_path: Path, methods: dict[str, dict[int, dict[str, float]]]) -> dict:
    """Run folders of ``{method: {seed: {subject: masked PSNR}}}`` (real final.json format), read back as rows."""
    root = tmp_path / "runs"
    for k, (method, seeds) in enumerate(methods.items()):
        family = "none" if method == "No-FT" else "full" if method == "Full-FT" else "single"
        for seed, values in seeds.items():
            subjects = with_masked({s: {"psnr": v + 3.0, "ssim": 0.9, "nrmse": 0.02} for s, v in values.items()})
            extra = {"model": "unetr", "preset": "small", "source": "1h", "target": "4h", "pair": "1h->4h",
                     "method": method, "family": family, "bitfit": False, "seed": seed, "role": "finetune"}
            write_run(root / f"{k}-{seed}", extra=extra, spec="x", percent=1.0, subjects=subjects, seed=seed,
                      epochs=0 if family == "none" else 2, real=True, converged=True)
    return {row.method: row for row in group_rows(collect_runs(root).runs)}


def test_bootstrap_interval_of_a_constant_difference_is_that_constant(tmp_path):
    assert bootstrap_ci([0.7] * 6) == pytest.approx((0.7, 0.7), abs=1e-12)
    base = {s: 30.0 + i for i, s in enumerate(SUBJECTS)}
    rows = _rows(tmp_path, {"Full-FT": {0: base, 1: base},
                            "LoRA": {0: {s: v + 0.7 for s, v in base.items()}, 1: {s: v + 0.7 for s, v in base.items()}}})
    result = compare(rows["LoRA"], rows["Full-FT"], "psnr_masked")
    assert result["diff"] == pytest.approx(0.7) and result["ci"] == pytest.approx([0.7, 0.7], abs=1e-9)
    assert result["ci_excludes_zero"] and result["n"] == 6 and result["seeds"] == [0, 1]


def test_bootstrap_interval_matches_a_plain_numpy_loop():
    d = np.array([0.31, -0.12, 0.45, 0.08, 0.27, -0.05, 0.6])
    rng = np.random.default_rng(0)
    means = []
    for _ in range(10_000):
        sample = d[rng.integers(0, d.size, size=d.size)]
        means.append(sum(sample) / d.size)
    expected = (np.percentile(means, 2.5), np.percentile(means, 97.5))
    assert bootstrap_ci(d) == pytest.approx(expected, abs=1e-12)
    assert bootstrap_ci(d) == bootstrap_ci(d)  # deterministic
    assert bootstrap_ci([1.0]) is None


def test_holm_against_a_hand_example():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.01, None]) == pytest.approx([0.02, 1.0])  # a test that could not be computed counts as p = 1
    assert holm([0.5, 0.2]) == pytest.approx([0.5, 0.4]) and holm([]) == []


def test_wilcoxon_reports_n_and_the_smallest_attainable_p():
    assert min_attainable_p(6) == pytest.approx(0.03125) and min_attainable_p(5) == pytest.approx(0.0625)
    five = wilcoxon_test([0.1, 0.2, 0.3, 0.4, 0.5])
    assert five["p"] == pytest.approx(0.0625) and five["n"] == 5 and five["can_reach_alpha"] is False
    six = wilcoxon_test([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert six["p"] == pytest.approx(min_attainable_p(6)) and six["can_reach_alpha"] is True
    zeros = wilcoxon_test([0.0, 0.0, 0.0])
    assert zeros["p"] is None and zeros["n"] == 0 and zeros["reason"]


def test_declared_tests_are_holm_corrected_together(tmp_path):
    rng = np.random.default_rng(3)
    base = {s: 30.0 + i for i, s in enumerate(SUBJECTS)}
    shifted = {m: {0: {s: v + shift + rng.normal(0, 0.3) for s, v in base.items()}}
               for m, shift in (("LoRA", 1.0), ("SSF", 0.1))}
    rows = _rows(tmp_path, {"No-FT": {0: base}, **shifted})
    tests = declared_tests([(rows["LoRA"], rows["No-FT"]), (rows["SSF"], rows["No-FT"])], "psnr_masked")
    raw = [wilcoxon(np.array([shifted[m][0][s] - base[s] for s in SUBJECTS])).pvalue for m in ("LoRA", "SSF")]
    assert [t["p"] for t in tests] == pytest.approx(raw)
    assert [t["p_holm"] for t in tests] == pytest.approx(holm(raw))
    assert all(t["n"] == 6 and t["min_p"] == pytest.approx(0.03125) for t in tests)


def test_seed_spread_and_subject_spread_are_apart(tmp_path):
    # Subjects 1 dB apart, seeds shift everything by -0.01, 0, +0.01 dB.
    base = {s: 30.0 + i for i, s in enumerate(SUBJECTS)}
    rows = _rows(tmp_path, {"LoRA": {seed: {s: v + shift for s, v in base.items()}
                                     for seed, shift in ((0, -0.01), (1, 0.0), (2, 0.01))}})
    got = spreads(rows["LoRA"], "psnr_masked")
    assert got["sd_seeds"] == pytest.approx(0.01)
    assert got["sd_subjects"] == pytest.approx(np.std(list(base.values()), ddof=1))
    assert got["mean"] == pytest.approx(np.mean(list(base.values())))
    assert got["n_seeds"] == 3 and got["n_subjects"] == 6


def test_best_is_marked_only_where_resolved(tmp_path):
    base = {s: 30.0 + i for i, s in enumerate(SUBJECTS)}
    noise = dict(zip(SUBJECTS, (0.3, -0.25, 0.2, -0.3, 0.25, -0.1)))
    rows = _rows(tmp_path, {"No-FT": {0: base},
                            "LoRA": {0: {s: v + 1.0 for s, v in base.items()}},
                            "SSF": {0: {s: v + 1.0 + noise[s] for s, v in base.items()}}})
    ordered = [rows["No-FT"], rows["LoRA"], rows["SSF"]]
    # SSF's mean is higher by 0.017 dB but its paired interval against LoRA includes 0: a tie, nobody bold.
    tied = mark_best(ordered, "psnr_masked", True)
    assert tied["marks"] == ["", "tie", "tie"] and tied["best"] == 2 and tied["runner_up"] == 1
    # Without SSF, LoRA is resolved against No-FT (a constant +1 dB).
    assert mark_best(ordered[:2], "psnr_masked", True)["marks"] == ["", "best"]
    # Lower is better: No-FT is best, resolved.
    assert mark_best(ordered, "psnr_masked", False)["marks"] == ["best", "", ""]
