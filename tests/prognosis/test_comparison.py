"""The demo's prognosis step: CT, CT+PET and CT+PET+clinical compared by cross-validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from petite.prognosis.comparison import demo_step

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.e2e]


def test_demo_step_compares_the_three_settings(data: Path, models: dict, tmp_path: Path) -> None:
    messages: list[str] = []
    result = demo_step(tmp_path, data, models, messages.append, n_patients=12, seeds=(0, 1), folds=2,
                          epochs=10)
    assert [r["setting"] for r in result["rows"]][:3] == ["CT", "CT+PET", "CT+PET+clinical"]
    assert "CT+PET+clinical" in result["table"] and result["markdown"].startswith("| Setting")
    assert all(len(r["c_index"]) == 2 for r in result["rows"])
    assert Path(result["km_png"]).is_file() and (tmp_path / "report" / "prognosis.json").is_file()
    assert "12 patients" in " ".join(messages)
    # Every setting but CT carries its paired difference to CT, computed on the same patients.
    rows = {r["setting"]: r for r in result["rows"]}
    assert "pooled_vs_ct" not in rows["CT"] and "minus CT, paired" in result["table"]
    ct_pooled = rows["CT"]["pooled_c_index"][0]
    for name in ("CT+PET", "CT+PET+clinical"):
        assert rows[name]["pooled_vs_ct"] == pytest.approx(rows[name]["pooled_c_index"][0] - ct_pooled)
