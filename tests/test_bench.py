"""petite.bench: spec lists, validation, one spec measured in-process, the ratio table."""

from __future__ import annotations

import pytest

from petite.bench import BenchConfig, default_specs, format_bench, measure_spec, split_specs, validate
from petite.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_spec_lists() -> None:
    assert default_specs("unetr") == ["full", "layernorm", "bitfit", "lora", "dora", "adapter", "ssf", "vpt",
                                      "petite-unetr"]
    assert default_specs("cvtgan")[-1] == "petite-cvtgan"
    assert split_specs("full,lora,petite") == ["full", "lora", "petite"]
    assert split_specs("full; encoder=lora:r=4,decoder=ssf,bitfit") == ["full", "encoder=lora:r=4,decoder=ssf,bitfit"]


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"model": "swin_unetr"}, "unknown model"),
        ({"preset": "huge"}, "unknown preset"),
        ({"specs": ["lora"]}, "must include 'full'"),
        ({"specs": ["full", "none"]}, "trains nothing"),
        ({"specs": ["full", "middle=lora"]}, "unknown component"),
        ({"specs": ["full", "full"]}, "given twice"),
        ({"crop": (60, 64, 64)}, "divisible by patch_size"),
        ({"checkpoint": "some"}, "checkpoint must be one of"),
        ({"precision": "fp16"}, "fp16 needs a CUDA device"),
        ({"steps": 0}, "steps must be >= 1"),
    ],
)
def test_validate_rejects_bad_input(changes: dict, message: str) -> None:
    cfg = BenchConfig(model="unetr", preset="tiny", specs=["full", "lora"], device="cpu")
    for key, value in changes.items():
        setattr(cfg, key, value)
    with pytest.raises(UserError, match=message):
        validate(cfg)


@pytest.mark.parametrize("model,spec", [("unetr", "petite"), ("cvtgan", "encoder=vpt:tokens=8/32")])
def test_measure_one_spec(model: str, spec: str) -> None:
    # Batch 2: at 32^3 the CVT-GAN's coarsest BatchNorm sees one voxel per crop.
    cfg = BenchConfig(model=model, preset="tiny", crop=(32, 32, 32), specs=["full", spec], steps=1, warmup=0,
                      batch=2, device="cpu")
    row = measure_spec(cfg, spec)
    assert row["checkpoint"] == "frozen" and row["lean"] and row["precision"] == "fp32"
    assert row["step_s"] > 0 and row["saved_mb"] > 0 and 0 < row["percent_trainable"] < 100
    assert row["graph_from"]  # some module is reached by the graph
    for key in ("infer_base_s", "infer_unmerged_s", "infer_merged_s", "infer_unloaded_s", "merged_ratio"):
        assert row[key] > 0, key
    if model == "cvtgan":  # VPT at the 2nd and 3rd stages: the stem and the first stage keep no graph
        assert row["graph_from"] not in ("generator.stem", "generator.down.0")


def test_format_bench_table() -> None:
    rows = [
        {"spec": s, "percent_trainable": p, "checkpoint": "none", "precision": "fp32", "step_s": t,
         "step_ratio": t / 2, "peak_mb": m,
         "memory_ratio": m / 100, "saved_mb": 1.0, "merged_ratio": 1.0, "unloaded_ratio": 1.0, "unmerged_ratio": 1.0,
         "spread": {"step_ratio": {"median": t / 2, "min": 0.4, "max": 0.6}}}
        for s, p, t, m in (("full", 100.0, 2.0, 100.0), ("lora", 0.5, 1.0, 40.0))
    ]
    text, md = format_bench({"results": rows})
    assert "step/full" in text and "0.50 (0.40-0.60)" in text and "step/plain" not in text
    assert md.splitlines()[0].startswith("| spec |") and "| lora |" in md


def test_plain_reference_only_when_options_differ() -> None:
    from petite.bench import is_plain

    assert is_plain(BenchConfig(model="unetr", lean=False))
    assert is_plain(BenchConfig(model="unetr", lean=False, checkpoint="none"))
    assert not is_plain(BenchConfig(model="unetr"))  # lean by default
    assert not is_plain(BenchConfig(model="unetr", lean=False, precision="bf16"))
