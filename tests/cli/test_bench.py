"""`petite bench peft`: fresh processes per spec, JSON with ratios against full, one-line errors."""

from __future__ import annotations

import json

import pytest

from tests.cli_runner import run_cli


@pytest.mark.e2e
def test_bench_peft_json_on_tiny(capsys, tmp_path) -> None:
    out = tmp_path / "bench.json"
    code, stdout, err = run_cli(["bench", "peft", "--model", "cvtgan", "--preset", "tiny", "--crop", "32,32,32",
                                 "--specs", "full,petite", "--batch", "2", "--steps", "1", "--warmup", "0", "--threads", "1",
                                 "--json", "--out", out], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert json.loads(out.read_text()) == result
    assert {"results", "device", "load_average", "config"} <= set(result)
    rows = {r["spec"]: r for r in result["results"]}
    assert list(rows) == ["full", "petite", "full-plain"]  # lean by default: PyTorch's own full run beside
    full = rows["full"]
    assert full["step_ratio"] == 1.0 and full["memory_ratio"] == 1.0 and full["checkpoint"] == "none"
    plain = rows["full-plain"]
    assert plain["step_vs_plain"] == 1.0 and plain["tensor_vs_plain"] == 1.0 and not plain["lean"]
    petite = rows["petite"]
    assert petite["spec_string"] == "encoder=vpt:tokens=8/32,decoder=lora,bitfit"
    for row in rows.values():
        for key in ("step_ratio", "memory_ratio", "tensor_ratio", "peak_mb", "step_s", "saved_mb", "step_vs_plain"):
            assert isinstance(row[key], float) and row[key] > 0, key
    for row in (full, petite):  # the plain reference is measured for the ratios only, without inference
        assert row["merged_ratio"] > 0 and row["unloaded_ratio"] > 0
    assert result["device"].startswith("cpu")


@pytest.mark.e2e
def test_bench_peft_table(capsys) -> None:
    code, stdout, err = run_cli(["bench", "peft", "-m", "unetr", "-p", "tiny", "--crop", "32,32,32",
                                 "--specs", "full;encoder=lora:r=4,bitfit", "--checkpoint", "all", "--no-infer",
                                 "--timing", "isolated", "--steps", "1", "--warmup", "0", "--threads", "1"], capsys)
    assert code == 0, err
    assert "load average" in stdout and "step/full" in stdout and "encoder=lora:r=4,bitfit" in stdout
    assert "step/plain" in stdout and "full-plain" in stdout  # checkpointing on: PyTorch's own run beside


@pytest.mark.parametrize(
    "argv",
    [
        ["--model", "nonet"],
        ["--model", "unetr", "--specs", "full,loraa"],
        ["--model", "unetr", "--crop", "64,64"],
        ["--model", "unetr", "--crop", "64,64,60"],
        ["--model", "unetr", "--specs", "lora"],
        ["--model", "unetr", "--precision", "fp16", "--device", "cpu"],
        ["--model", "unetr", "--checkpoint", "some"],
    ],
)
def test_bench_peft_bad_input_exits_2(capsys, argv) -> None:
    code, _, err = run_cli(["bench", "peft", *argv], capsys)
    assert code == 2
    assert err.startswith("petite: error:") and len(err.strip().splitlines()) == 1
