"""`petite mm ...`: simulate -> pretrain -> adapt -> evaluate -> continual adaptation, run folders, the demo.

Everything is tiny (32^3 synthetic patients, the ``tiny`` UNETR on 16^3 crops, a few
steps) and runs in-process on one intra-op thread.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from petite.errors import UserError
from petite.multimodal import runs
from petite.multimodal.baselines import LateFusion
from petite.multimodal.datalist import load_case, read_mm_datalist
from petite.multimodal.segmentation import build_segmenter
from petite.multimodal.train import train_segmenter
from petite.multimodal.upgrade import MODALITY_PARTS, PEMMA, trainable_groups
from tests.cli_runner import run_cli

TRAIN = ["--preset", "tiny", "--crop", "16,16,16", "--batch-size", "1", "--device", "cpu", "--quiet"]
FAST = ["--batch-size", "1", "--device", "cpu", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The CLI story once: simulate, CT-only and PET-only runs, PEMMA, continual adaptation to B with PET."""
    root = tmp_path_factory.mktemp("mm")
    sim = root / "sim"
    assert run_cli(["mm", "simulate", "--out", sim, "--centres", "A,B", "--patients", "4", "--size", "tiny",
                    "--seed", "3", "--quiet"]).code == 0
    datalist = sim / "datalist.json"
    paths = {"root": root, "datalist": datalist}
    for name, inputs in (("ct", "ct"), ("pet", "pet")):
        paths[name] = root / name
        assert run_cli(["mm", "pretrain", "--datalist", datalist, "--centre", "A", "--inputs", inputs, "--steps", "2",
                        "--out", paths[name], *TRAIN]).code == 0
    paths["pemma"] = root / "pemma"
    assert run_cli(["mm", "adapt", "--init", paths["ct"], "--datalist", datalist, "--centre", "A", "--steps", "3",
                    "--lr", "0.01", "--out", paths["pemma"], *FAST]).code == 0
    base_sha = _sha(paths["ct"] / "model.safetensors")
    paths["pemma_b"] = root / "pemma_b"
    assert run_cli(["mm", "adapt", "--continue-from", paths["pemma"], "--modality", "pet", "--datalist", datalist,
                    "--centre", "B", "--steps", "2", "--lr", "0.01", "--out", paths["pemma_b"], *FAST]).code == 0
    assert _sha(paths["ct"] / "model.safetensors") == base_sha  # the CT base checkpoint is untouched
    return paths


def test_run_folders_hold_config_log_weights_and_summary(flow: dict[str, Path]) -> None:
    for name in ("ct", "pet"):
        folder = flow[name]
        assert {p.name for p in folder.iterdir()} >= {"config.json", "metrics.jsonl", "final.json", "model.safetensors",
                                                       "model.json"}
        assert runs.run_kind(folder) == name
        assert len((folder / "metrics.jsonl").read_text().splitlines()) == 2
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


def test_continual_adaptation_changes_only_pet_parts(flow: dict[str, Path]) -> None:
    before = load_file(str(flow["pemma"] / "pemma.safetensors"))
    after = load_file(str(flow["pemma_b"] / "pemma.safetensors"))
    assert set(before) == set(after)
    model, _ = runs.load_run(flow["pemma_b"])
    pet = set(trainable_groups(model)["pet"])
    assert MODALITY_PARTS["pet"] == ("pet",) and pet
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and changed <= pet, f"non-PET tensors changed: {sorted(changed - pet)[:3]}"
    assert all(n.startswith(("pet_embedding.", "pet_skip.", "pet_adapter.")) for n in changed)
    config = json.loads((flow["pemma_b"] / "config.json").read_text())
    assert config["trained_groups"] == ["pet"] and config["parent"]["path"] == "../pemma"
    assert config["base"] == json.loads((flow["pemma"] / "config.json").read_text())["base"]


def test_evaluate_every_mode_and_late_fusion(flow: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    datalist = flow["datalist"]
    ct_means = {}
    for run in ("pemma", "pemma_b"):
        for mode in ("ctpet", "ct", "pet"):
            out = flow["root"] / f"eval_{run}"
            result = run_cli(["mm", "evaluate", "--model", flow[run], "--datalist", datalist, "--split", "A_test",
                              "--mode", mode, "--out", out, "--device", "cpu", "--quiet"], capsys)
            assert result.code == 0, result.err
            report = json.loads((out / f"A_test_{mode}.json").read_text())
            assert report["mode"] == mode and report["n"] >= 1 and report["classes"] == {"1": "GTVp", "2": "GTVn"}
            assert set(report["mean"]) >= {"dice_1", "dice_2", "dice_mean", "hd95_1", "hd95_2"}
            assert all(c["hd95_unit"] == "mm" for c in report["cases"])
            header = (out / f"A_test_{mode}.csv").read_text().splitlines()[0]
            assert header.startswith("patient,centre,dice_1,dice_2,dice_mean,hd95_1")
            if mode == "ct":
                ct_means[run] = report["mean"]
    assert ct_means["pemma"] == ct_means["pemma_b"]  # PET-only adaptation cannot change CT-only predictions
    # default mode and folder: the run's own (ct) into RUN/eval
    assert run_cli(["mm", "evaluate", "--model", flow["ct"], "--datalist", datalist, "--split", "A_test",
                    "--device", "cpu", "--quiet"]).code == 0
    assert (flow["ct"] / "eval" / "A_test_ct.csv").is_file()
    # late fusion on the fly and as a run folder give the same numbers
    out = flow["root"] / "eval_late"
    assert run_cli(["mm", "evaluate", "--model", flow["ct"], "--pet-model", flow["pet"], "--datalist", datalist,
                    "--split", "A_test", "--out", out, "--device", "cpu", "--quiet"]).code == 0
    assert run_cli(["mm", "late", "--ct-model", flow["ct"], "--pet-model", flow["pet"],
                    "--out", flow["root"] / "late"]).code == 0
    assert run_cli(["mm", "evaluate", "--model", flow["root"] / "late", "--datalist", datalist, "--split", "A_test",
                    "--out", flow["root"] / "eval_late_run", "--device", "cpu", "--quiet"]).code == 0
    on_the_fly = json.loads((out / "A_test_ctpet.json").read_text())["mean"]
    as_run = json.loads((flow["root"] / "eval_late_run" / "A_test_ctpet.json").read_text())["mean"]
    assert on_the_fly == as_run and runs.run_kind(flow["root"] / "late") == "late"


def test_load_case_gives_spacing_in_mm(flow: dict[str, Path]) -> None:
    data = read_mm_datalist(flow["datalist"])
    case = load_case(data["A_train"][0])
    centre = data["centres"]["A"]
    assert case["spacing"] == pytest.approx(tuple(centre["spacing"]), abs=1e-3)


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
    with runs.staged_folder(tmp_path / "ct") as folder:
        runs.save_run(folder, base, "ct", config, destination=tmp_path / "ct")
    reloaded, info = runs.load_run(tmp_path / "ct")
    base.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(ct), base(ct)) and info["modes"] == ["ct"]

    for method in ("lora", "dora"):
        model = PEMMA(copy.deepcopy(base), method=method, fingerprint=False)
        train_segmenter(model, cases, inputs="ctpet", steps=3, batch_size=1, lr=1e-2, seed=1, device="cpu",
                        mode_probs={"ctpet": 1, "ct": 1, "pet": 1})
        out = tmp_path / f"pemma_{method}"
        with runs.staged_folder(out) as folder:
            runs.save_run(folder, model, "pemma", config, base_run=tmp_path / "ct", destination=out)
        again, info = runs.load_run(out)
        model.eval()
        with torch.no_grad():
            for inputs in ({"ct": ct, "pet": pet}, {"ct": ct}, {"pet": pet}):
                assert torch.equal(again(**inputs), model(**inputs)), (method, list(inputs))
        assert info["kind"] == "pemma" and info["modes"] == ["ctpet", "ct", "pet"]

    torch.manual_seed(1)
    pet_model = build_segmenter("unetr", "tiny", img_size=16)
    with runs.staged_folder(tmp_path / "pet") as folder:
        runs.save_run(folder, pet_model, "pet", config, destination=tmp_path / "pet")
    late = LateFusion(base, pet_model, weight=0.3).eval()
    with runs.staged_folder(tmp_path / "late") as folder:
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


def test_bad_inputs_exit_2_with_one_line(flow: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    datalist, root = flow["datalist"], flow["root"]
    out = root / "bad"
    cases = [
        (["mm", "pretrain", "--datalist", root / "missing.json", "--centre", "A", "--steps", "1", "--out", out, *TRAIN],
         "not found"),
        (["mm", "pretrain", "--datalist", datalist, "--centre", "Z", "--steps", "1", "--out", out, *TRAIN],
         "unknown centre"),
        (["mm", "evaluate", "--model", flow["ct"], "--datalist", datalist, "--split", "A_nope", "--out", out],
         "unknown split"),
        (["mm", "evaluate", "--model", flow["ct"], "--datalist", datalist, "--split", "A_test", "--mode", "pet",
          "--out", out], "input mode"),
        (["mm", "adapt", "--continue-from", flow["pemma"], "--modality", "mri", "--datalist", datalist, "--centre", "B",
          "--out", out, *FAST], "--modality"),
        (["mm", "adapt", "--init", flow["pet"], "--datalist", datalist, "--centre", "A", "--out", out, *FAST],
         "--init"),
        (["mm", "adapt", "--init", flow["pemma"], "--datalist", datalist, "--centre", "A", "--out", out, *FAST],
         "--init"),
        (["mm", "adapt", "--init", root / "nothing", "--datalist", datalist, "--centre", "A", "--out", out, *FAST],
         "not found"),
        (["mm", "adapt", "--continue-from", flow["ct"], "--modality", "pet", "--datalist", datalist, "--centre", "B",
          "--out", out, *FAST], "--continue-from"),
        (["mm", "adapt", "--datalist", datalist, "--centre", "A", "--out", out, *FAST], "exactly one"),
        (["mm", "pretrain", "--datalist", datalist, "--centre", "A", "--steps", "1", "--out", flow["ct"], *TRAIN],
         "--overwrite"),
        (["mm", "late", "--ct-model", flow["pet"], "--pet-model", flow["pet"], "--out", out], "CT model"),
    ]
    for argv, text in cases:
        result = run_cli(argv, capsys)
        assert result.code == 2, (argv, result.err)
        assert result.err.startswith("petite: error:") and len(result.err.strip().splitlines()) == 1, result.err
        assert text in result.err, (text, result.err)
        assert not out.exists(), argv  # nothing half-written
    assert not list(root.glob(".*staging"))


def test_demo_quick_prints_both_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(["mm", "demo", "--out", tmp_path, "--quick"], capsys)
    assert result.code == 0, result.err
    for text in ("Segmentation on A_test", "Early fusion", "Late fusion", "PEMMA", "% trainable", "Dice GTVp",
                 "HD95 GTVn (mm)", "forgetting", "Total time"):
        assert text in result.out, text
    report = tmp_path / "report"
    assert {"table.md", "results.json", "segmentations.png"} <= {p.name for p in report.iterdir()}
    results = json.loads((report / "results.json").read_text())
    assert [(r["run"], r["mode"]) for r in results["rows"]] == [
        ("ct", "ct"), ("pet", "pet"), ("early", "ctpet"), ("late", "ctpet"), ("pemma", "ctpet"), ("pemma", "ct"),
        ("pemma", "pet")]
    ct_forgetting = [r for r in results["continual"] if r["split"] == "A_test" and r["mode"] == "ct"][0]
    assert ct_forgetting["before"] == ct_forgetting["after"]
    assert run_cli(["mm", "demo", "--out", tmp_path, "--quick"], capsys).code == 2  # refuses to overwrite
