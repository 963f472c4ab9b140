"""Run folders: what the CLI's runs hold, and reloads bit-identical for every kind (fingerprints checked).

Both tests use the ``flow`` fixture (conftest: the ``petite mm`` story through the CLI), so they are end to end.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from petite.atomic import staged_folder
from petite.errors import UserError
from petite.headneck.datalist import load_case, read_mm_datalist
from petite.pemma import runs
from petite.pemma.baselines import LateFusion
from petite.pemma.segmentation import build_segmenter
from petite.pemma.train import train_segmenter
from petite.pemma.upgrade import PEMMA

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.e2e]


def test_run_folders_hold_config_log_weights_and_summary(flow: dict[str, Path]) -> None:
    for name in ("ct", "pet"):
        folder = flow[name]
        assert {p.name for p in folder.iterdir()} >= {"config.json", "metrics.jsonl", "final.json", "model.safetensors",
                                                       "model.json"}
        assert runs.run_kind(folder) == name
        steps = json.loads((folder / "final.json").read_text())["steps"]  # CT-only: to convergence, PET-only: 2
        assert len((folder / "metrics.jsonl").read_text().splitlines()) == steps >= 2
    pemma = flow["pemma"]
    assert {p.name for p in pemma.iterdir()} >= {"config.json", "metrics.jsonl", "final.json", "pemma.safetensors"}
    assert not (pemma / "model.safetensors").exists()
    # small: the PEMMA weights are the new parts only, well below the CT checkpoint
    assert (pemma / "pemma.safetensors").stat().st_size < (flow["ct"] / "model.safetensors").stat().st_size
    final = json.loads((pemma / "final.json").read_text())
    assert 0 < final["percent"] < 100 and final["mode_counts"] and final["time_s"] >= 0
    config = json.loads((pemma / "config.json").read_text())
    assert config["base"]["path"] == "../ct" and len(config["base"]["fingerprint"]) == 64
    assert not list(flow["root"].glob(".*staging"))  # no staging folders left behind


def _cases(flow: dict[str, Path]) -> list[dict]:
    data = read_mm_datalist(flow["datalist"])
    return [load_case(item) for item in data["A_train"]]


def test_reload_is_bit_identical_for_every_kind(flow: dict[str, Path], tmp_path: Path) -> None:
    cases = _cases(flow)
    gen = torch.Generator().manual_seed(0)
    ct, pet = torch.rand(1, 1, 16, 16, 16, generator=gen), torch.randn(1, 1, 16, 16, 16, generator=gen)
    config = {"crop": [16, 16, 16]}

    torch.manual_seed(0)
    base = build_segmenter("unetr", "tiny", img_size=16)
    train_segmenter(base, cases, inputs="ct", steps=2, batch_size=1, seed=0, device="cpu")
    with staged_folder(tmp_path / "ct") as folder:
        runs.save_run(folder, base, "ct", config, destination=tmp_path / "ct")
    reloaded, info = runs.load_run(tmp_path / "ct")
    base.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(ct), base(ct)) and info["modes"] == ["ct"]

    # The reference design (its decoder trains, so the run stores it) and our channels design (frozen decoder).
    channels = {"fusion": "channels", "targets": "extended", "train_decoder": False}
    for method, design in (("lora", {}), ("dora", {}), ("channels", channels)):
        model = PEMMA(copy.deepcopy(base), method="lora" if method == "channels" else method, fingerprint=False,
                      **design)
        train_segmenter(model, cases, inputs="ctpet", steps=3, batch_size=1, lr=1e-2, seed=1, device="cpu",
                        mode_probs={"ctpet": 1, "ct": 1, "pet": 1})
        out = tmp_path / f"pemma_{method}"
        with staged_folder(out) as folder:
            runs.save_run(folder, model, "pemma", config, base_run=tmp_path / "ct", destination=out)
        again, info = runs.load_run(out)
        model.eval()
        with torch.no_grad():
            for inputs in ({"ct": ct, "pet": pet}, {"ct": ct}, {"pet": pet}):
                assert torch.equal(again(**inputs), model(**inputs)), (method, list(inputs))
        assert info["kind"] == "pemma" and info["modes"] == ["ctpet", "ct", "pet"]
        stored = set(load_file(str(out / "pemma.safetensors")))
        assert any(n.startswith("backbone.decoder") for n in stored) == (method != "channels")
        assert again.config["fusion"] == model.config["fusion"]

    torch.manual_seed(1)
    pet_model = build_segmenter("unetr", "tiny", img_size=16)
    with staged_folder(tmp_path / "pet") as folder:
        runs.save_run(folder, pet_model, "pet", config, destination=tmp_path / "pet")
    late = LateFusion(base, pet_model, weight=0.3).eval()
    with staged_folder(tmp_path / "late") as folder:
        runs.save_run(folder, late, "late", config, members={"ct": tmp_path / "ct", "pet": tmp_path / "pet"},
                      destination=tmp_path / "late")
    again, _ = runs.load_run(tmp_path / "late")
    with torch.no_grad():
        assert torch.equal(again(ct=ct, pet=pet), late(ct=ct, pet=pet))

    # a changed base is refused, not silently used
    (tmp_path / "ct" / "model.json").write_text(
        (tmp_path / "ct" / "model.json").read_text().replace(info["base"]["fingerprint"], "0" * 64))
    with pytest.raises(UserError, match="fingerprint"):
        runs.load_run(tmp_path / "pemma_lora")
