"""Best / second-best marks (petite.report.stats); the paired tests are checked against scipy in test_build."""

from __future__ import annotations

from petite.report.stats import mark_best


def test_marks():
    assert mark_best([1.0, 3.004, 3.001, 2.0], True, 2) == ["", "best", "best", "second"]
    assert mark_best([0.03, 0.02, None], False, 4) == ["second", "best", ""]
