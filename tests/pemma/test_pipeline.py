"""`petite mm ...`: simulate -> pretrain -> adapt -> evaluate -> continual adaptation, through the CLI.

Everything is tiny (32^3 synthetic patients, the ``tiny`` UNETR on 16^3 crops, a few
steps) and runs in-process on one intra-op thread.  The ``flow`` fixture (conftest)
runs the whole story once per module, so every test here is end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from petite.headneck.datalist import load_case, read_mm_datalist
from petite.pemma import runs
from petite.pemma.upgrade import MODALITY_PARTS, trainable_groups
from tests.cli_runner import run_cli
from tests.pemma.tiny import FAST, TRAIN

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.e2e]


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


def test_forgetting_baselines_update_shared_weights_and_reload(flow: dict[str, Path]) -> None:
    """--update adapter trains every group the upgrade trained; --update full every weight, the CT base's too."""
    from petite.pemma.evaluate import predict_case

    pemma, _ = runs.load_run(flow["pemma"])
    groups = trainable_groups(pemma)
    before = pemma.state_dict()
    case = load_case(read_mm_datalist(flow["datalist"])["A_test"][0])
    ct_before = predict_case(pemma, case, "ct", (16, 16, 16), 0.0)
    for update in ("adapter", "full"):
        run = flow[f"pemma_b_{update}"]
        config = json.loads((run / "config.json").read_text())
        assert config["update"] == update and config["pemma"]["full_state"] == (update == "full")
        model, _ = runs.load_run(run)  # the stored tensors rebuild the model (the full state for "full")
        after = model.state_dict()
        changed = {n for n in before if not torch.equal(before[n], after[n])}
        shared = set(groups["lora"]) | set(groups["decoder"])
        assert changed & shared, f"{update}: no shared tensor moved"
        base = {n for n in changed if ".base_layer." in n or n.startswith("backbone.vit.patch_embedding")}
        assert bool(base) == (update == "full"), f"{update}: frozen base tensors changed: {sorted(base)[:2]}"
        if update == "adapter":
            assert config["trained_groups"] == list(pemma.default_groups)
        # a CT-only input now meets other weights: the old centre's CT predictions can change (forgetting)
        assert not torch.equal(predict_case(model, case, "ct", (16, 16, 16), 0.0), ct_before)


def test_update_goes_with_continue_from_only(flow: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(["mm", "adapt", "--init", flow["ct"], "--update", "full", "--datalist", flow["datalist"],
                      "--centre", "A", "--steps", "1", "--out", tmp_path / "x", *FAST], capsys)
    assert result.code == 2 and "--update" in result.err and not (tmp_path / "x").exists()


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


def test_training_length_is_recorded(flow: dict[str, Path]) -> None:
    """To convergence: converged or capped, best step, the learning curve on A_val; a fixed budget: none of it."""
    final = json.loads((flow["ct"] / "final.json").read_text())
    config = json.loads((flow["ct"] / "config.json").read_text())
    assert config["max_steps"] == 4 and config["val_every"] == 2 and config["steps"] is None
    assert config["val_split"] == "A_val" and config["augment"] is True
    assert final["converged"] != final["capped"] and final["stopped"] in ("patience", "max_steps")
    assert [r["step"] for r in final["curve"]] == list(range(2, final["steps"] + 1, 2))
    best = max(final["curve"], key=lambda r: r["val_dice"])
    assert final["best_step"] == best["step"] and final["best_val_dice"] == best["val_dice"]
    assert final["val"]["split"] == "A_val" and final["val"]["mode"] == "ct"
    fixed = json.loads((flow["pet"] / "final.json").read_text())
    assert fixed["stopped"] == "steps" and fixed["steps"] == 2 and not fixed["converged"] and not fixed["capped"]
    assert fixed["curve"] == [] and fixed["max_steps"] is None


def test_multi_centre_pretraining_and_pooled_evaluation(flow: dict[str, Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """--centre A,B pools both centres' training (and validation) patients; a pooled test split is reported
    per centre too, and each centre's means equal that centre's split evaluated alone."""
    datalist, out = flow["datalist"], flow["root"] / "ct_ab"
    data = read_mm_datalist(datalist)
    assert run_cli(["mm", "pretrain", "--datalist", datalist, "--centre", "A,B", "--max-steps", "2", "--val-every",
                    "1", "--out", out, *TRAIN], capsys).code == 0
    config = json.loads((out / "config.json").read_text())
    final = json.loads((out / "final.json").read_text())
    assert config["centres"] == ["A", "B"] and config["train_split"] == "A_train,B_train"
    assert config["val_split"] == "A_val,B_val" and final["val"]["split"] == "A_val,B_val"
    assert final["n_train_by_centre"] == {"A": len(data["A_train"]), "B": len(data["B_train"])}
    result = run_cli(["mm", "evaluate", "--model", out, "--datalist", datalist, "--split", "A_test,B_test",
                      "--device", "cpu", "--quiet"], capsys)
    assert result.code == 0, result.err
    pooled = json.loads((out / "eval" / "A_test+B_test_ct.json").read_text())
    assert pooled["n"] == len(data["A_test"]) + len(data["B_test"]) and set(pooled["per_centre"]) == {"A", "B"}
    assert "per_centre" in json.loads(result.out)
    for centre in ("A", "B"):
        assert run_cli(["mm", "evaluate", "--model", out, "--datalist", datalist, "--split", f"{centre}_test",
                        "--device", "cpu", "--quiet"]).code == 0
        alone = json.loads((out / "eval" / f"{centre}_test_ct.json").read_text())
        assert pooled["per_centre"][centre] == {"n": alone["n"], **alone["mean"]}


def test_bad_inputs_exit_2_with_one_line(flow: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    datalist, root = flow["datalist"], flow["root"]
    out = root / "bad"
    no_val = datalist.parent / "no_val.json"  # beside the datalist: its relative paths still resolve
    no_val.write_text(json.dumps({**json.loads(datalist.read_text()), "A_val": []}))
    cases = [
        (["mm", "pretrain", "--datalist", no_val, "--centre", "A", "--out", out, *TRAIN], "'A_val'"),
        (["mm", "adapt", "--init", flow["ct"], "--datalist", no_val, "--centre", "A", "--max-steps", "2", "--out", out,
          *FAST], "--steps N for a fixed budget"),
        (["mm", "pretrain", "--datalist", datalist, "--centre", "A", "--steps", "1", "--max-steps", "2", "--out", out,
          *TRAIN], "not both"),
        (["mm", "pretrain", "--datalist", datalist, "--centre", "A", "--no-val", "--out", out, *TRAIN], "--no-val"),
        (["mm", "pretrain", "--datalist", datalist, "--centre", "A,A", "--steps", "1", "--out", out, *TRAIN],
         "distinct"),
        (["mm", "evaluate", "--model", flow["ct"], "--datalist", datalist, "--split", "A_test,", "--out", out],
         "--split"),
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
