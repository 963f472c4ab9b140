"""% trainable per PEMMA design: counted on built models, the groups add up, the CLI prints the table."""

from __future__ import annotations

import pytest

from petite.errors import UserError
from petite.pemma.params import PAPER_PERCENT, VARIANTS, format_rows, variant_rows
from tests.cli_runner import run_cli


def test_each_design_counts_exactly_its_groups() -> None:
    rows = {r["design"]: r for r in variant_rows("unetr", "tiny")}
    assert list(rows) == list(VARIANTS)
    for name, row in rows.items():
        g = row["groups"]
        design = VARIANTS[name]
        expected = g["lora"] + g["pet"] + g["ct_adapter"] + g["fusion"] + (g["decoder"] if design["train_decoder"]
                                                                          else 0)
        assert row["trainable"] == expected, name
        assert row["percent"] == pytest.approx(100 * row["trainable"] / row["base"])
        assert (g["fusion"] > 0) == (design["fusion"] == "channels")
    reference = rows["reference (tokens, LoRA attn, decoder)"]
    frozen = rows["reference, frozen decoder"]
    assert reference["trainable"] - frozen["trainable"] == reference["groups"]["decoder"] > 0
    assert rows["tokens, extended LoRA, decoder"]["groups"]["lora"] > reference["groups"]["lora"]
    assert rows["reference with DoRA"]["groups"]["lora"] > reference["groups"]["lora"]  # + magnitudes
    text, markdown = format_rows(list(rows.values()))
    assert "reference" in text and markdown.startswith("| Arch |")
    with pytest.raises(UserError):
        variant_rows("unetr", "tiny", ["nonsense"])


def test_cli_params_table(capsys: pytest.CaptureFixture[str]) -> None:
    run = run_cli(["mm", "params", "--arch", "unetr", "--preset", "tiny"], capsys)
    assert run.code == 0, run.err
    assert "channels, extended LoRA, frozen decoder (earlier default)" in run.out
    assert f"about {PAPER_PERCENT:g} %" in run.out
