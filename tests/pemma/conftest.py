"""Fixtures of the PEMMA tests: a tiny CT model and cases, and the ``petite mm`` CLI story run once per module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from petite.pemma.segmentation import build_segmenter
from tests.cli_runner import run_cli
from tests.pemma.tiny import FAST, SIZE, TRAIN, make_cases
from tests.pemma.tiny import file_sha as _sha


@pytest.fixture(scope="module")
def ct_model() -> nn.Module:
    torch.manual_seed(0)
    return build_segmenter("unetr", "tiny", img_size=SIZE).eval()


@pytest.fixture(scope="module")
def cases() -> list[dict]:
    return make_cases()


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The CLI story once: simulate, CT-only and PET-only runs, PEMMA, continual adaptation to B with PET."""
    root = tmp_path_factory.mktemp("mm")
    sim = root / "sim"
    assert run_cli(["mm", "simulate", "--out", sim, "--centres", "A,B", "--patients", "4", "--size", "tiny",
                    "--seed", "3", "--quiet"]).code == 0
    datalist = sim / "datalist.json"
    paths = {"root": root, "datalist": datalist}
    # CT-only trains to convergence on A_val (a tiny cap), PET-only a fixed budget: both lengths end to end.
    for name, inputs, length in (("ct", "ct", ["--max-steps", "4", "--val-every", "2", "--patience", "1"]),
                                 ("pet", "pet", ["--steps", "2"])):
        paths[name] = root / name
        assert run_cli(["mm", "pretrain", "--datalist", datalist, "--centre", "A", "--inputs", inputs, *length,
                        "--out", paths[name], *TRAIN]).code == 0
    paths["pemma"] = root / "pemma"
    assert run_cli(["mm", "adapt", "--init", paths["ct"], "--datalist", datalist, "--centre", "A", "--steps", "3",
                    "--lr", "0.01", "--out", paths["pemma"], *FAST]).code == 0
    base_sha = _sha(paths["ct"] / "model.safetensors")
    paths["pemma_b"] = root / "pemma_b"
    assert run_cli(["mm", "adapt", "--continue-from", paths["pemma"], "--modality", "pet", "--datalist", datalist,
                    "--centre", "B", "--steps", "2", "--lr", "0.01", "--out", paths["pemma_b"], *FAST]).code == 0
    # The forgetting baselines: shared weights updated on B (LoRA and decoder without freezing; every weight).
    for update in ("adapter", "full"):
        paths[f"pemma_b_{update}"] = root / f"pemma_b_{update}"
        assert run_cli(["mm", "adapt", "--continue-from", paths["pemma"], "--modality", "pet", "--update", update,
                        "--datalist", datalist, "--centre", "B", "--steps", "2", "--lr", "0.01",
                        "--out", paths[f"pemma_b_{update}"], *FAST]).code == 0
    assert _sha(paths["ct"] / "model.safetensors") == base_sha  # the CT base checkpoint is untouched
    return paths
