"""Table cell formatting (petite.report.tables); the tables themselves are checked in test_build."""

from __future__ import annotations

from petite.report.tables import format_p


def test_p_format():
    assert format_p(None) == "-" and format_p(0.0312) == "0.031" and format_p(2e-4) == "<1e-3"
