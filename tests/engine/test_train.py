"""The training engine through the CLI: pretrain -> finetune -> evaluate -> predict, resume, DDP, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from safetensors.numpy import load_file
from scipy.ndimage import gaussian_filter

import petite.engine.train as train_module
from petite.data.datalist import read_datalist
from petite.engine.config import TrainConfig
from petite.engine.train import train
from tests.cli_runner import run_cli
from tests.pet_data import PET_SHAPE

SHAPE = PET_SHAPE
pytestmark = pytest.mark.e2e  # every test here trains through the engine or the CLI


@pytest.mark.parametrize("model, spec", [("unetr", "petite-unetr"), ("cvtgan", "petite-cvtgan")])
def test_pretrain_finetune_evaluate_predict_cycle(tmp_path: Path, datalist: Path, model: str, spec: str) -> None:
    pre, ft = tmp_path / "pre", tmp_path / "ft"
    common = ["--datalist", datalist, "--model", model, "--preset", "tiny", "--batch-size", "2", "--quiet"]
    assert run_cli(["pretrain", *common, "--epochs", "2", "--lr", "1e-3", "--out", pre]).code == 0
    assert (pre / "model.safetensors").is_file() and (pre / "final.json").is_file()
    assert len((pre / "metrics.jsonl").read_text().splitlines()) == 2

    assert run_cli(["finetune", *common, "--init", pre, "--spec", spec, "--epochs", "1", "--out", ft]).code == 0
    final = json.loads((ft / "final.json").read_text())
    assert 0 < final["percent"] < 100 and final["test"]["n"] == 2
    assert np.isfinite(final["test"]["psnr"])
    # The run keeps only the adapter, far smaller than the base weights.
    assert not (ft / "model.safetensors").exists()
    assert (ft / "adapter.safetensors").stat().st_size < (pre / "model.safetensors").stat().st_size / 5

    assert run_cli(["evaluate", "--model", ft, "--datalist", datalist, "--split", "test", "--out", tmp_path / "eval"]).code == 0
    rows = (tmp_path / "eval" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "subject,psnr,ssim,nrmse,psnr_masked,ssim_masked,nrmse_masked,background" and len(rows) == 3
    # Evaluating the run folder reproduces the run's own test metrics.
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())["summary"]
    assert summary["psnr"] == pytest.approx(final["test"]["psnr"], abs=1e-4)

    src = Path(json.loads(datalist.read_text())["test"][0]["short"])
    src = datalist.parent / src
    out = tmp_path / "pred.nii.gz"
    assert run_cli(["predict", src, out, "--model", ft]).code == 0
    pred, ref = nib.load(out), nib.load(src)
    assert pred.shape == ref.shape and np.allclose(pred.affine, ref.affine)
    data = pred.get_fdata()
    assert np.isfinite(data).all() and data.min() >= 0  # in the scan's units: activity is never negative
    # `predict` (its own reading, reorientation and normalisation) gives what the evaluation scored.
    from petite.engine.evaluate import iter_scans
    from petite.metrics import compute_metrics

    scans = next(iter_scans(read_datalist(datalist), "test"))
    row = json.loads((tmp_path / "eval" / "metrics.json").read_text())["subjects"][0]
    assert row["subject"] == scans.subject
    mine = compute_metrics(data.astype(np.float32), scans.long_raw, mask=scans.head)
    assert mine["psnr_masked"] == pytest.approx(row["psnr_masked"], abs=1e-3)


def test_no_ft_evaluates_the_pretrained_model(tmp_path: Path, datalist: Path) -> None:
    pre = tmp_path / "pre"
    assert run_cli(["pretrain", "--datalist", datalist, "--model", "unetr", "--preset", "tiny", "--epochs", "1",
                "--out", pre, "--quiet"]).code == 0
    assert run_cli(["finetune", "--datalist", datalist, "--model", "unetr", "--init", pre, "--spec", "none",
                "--out", tmp_path / "noft", "--quiet"]).code == 0
    final = json.loads((tmp_path / "noft" / "final.json").read_text())
    assert final["steps"] == 0 and final["trainable"] == 0 and final["test"]["n"] == 2
    # Same weights, same test split: equals evaluating the pretrained checkpoint directly.
    assert run_cli(["evaluate", "--model", pre, "--datalist", datalist, "--out", tmp_path / "eval"]).code == 0
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())["summary"]
    assert summary["psnr"] == pytest.approx(final["test"]["psnr"], abs=1e-6)
    # No-FT also scores "No-FT + calibration" (fitted on the training split), per subject like the baselines.
    calibration = final["baselines"]["calibration"]
    assert calibration["n"] == 2 and [r["subject"] for r in calibration["subjects"]] == [
        r["subject"] for r in final["baselines"]["short"]["subjects"]]
    assert calibration["psnr_masked"] == pytest.approx(np.mean([r["psnr_masked"] for r in calibration["subjects"]]))


def test_predict_keeps_orientation_and_header(tmp_path: Path, datalist: Path) -> None:
    pre = tmp_path / "pre"
    assert run_cli(["pretrain", "--datalist", datalist, "--model", "cvtgan", "--preset", "tiny", "--epochs", "1",
                "--out", pre, "--quiet"]).code == 0
    # An LPS volume: prediction must come back in the input's own orientation.
    rng = np.random.default_rng(1)
    volume = gaussian_filter(rng.random(SHAPE), 2.0) * 5
    affine = np.diag([-3.0, -3.0, 3.0, 1.0])
    src = tmp_path / "in" / "lps.nii.gz"
    src.parent.mkdir()
    nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), str(src))
    assert run_cli(["predict", src.parent, tmp_path / "out", "--model", pre, "--no-merge"]).code == 0
    out = nib.load(tmp_path / "out" / "lps.nii.gz")
    assert np.allclose(out.affine, affine)
    # The GAN adds a learned residual to its input: orientation errors would decorrelate them.
    assert np.corrcoef(out.get_fdata().ravel(), volume.ravel())[0, 1] > 0.5


@pytest.mark.parametrize("model", ["unetr", "cvtgan"])
def test_resume_after_interruption_gives_identical_weights(tmp_path: Path, datalist: Path, monkeypatch: pytest.MonkeyPatch, model: str) -> None:
    def config(out: Path) -> TrainConfig:
        return TrainConfig.load(datalist=str(datalist), out=str(out), model=model, preset="tiny", epochs=3,
                                batch_size=2, lr=1e-3, samples_per_volume=2, val_every=2, seed=3)

    train(config(tmp_path / "straight"), progress=False)

    original = train_module.save_state

    def save_then_die(path, model_, optimizers, schedulers, info):  # noqa: ANN001
        original(path, model_, optimizers, schedulers, info)
        if info["step"] == 2:
            raise KeyboardInterrupt  # as if killed right after the first validation's checkpoint

    monkeypatch.setattr(train_module, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "resumed"), progress=False)
    monkeypatch.setattr(train_module, "save_state", original)
    with pytest.raises(Exception, match="interrupted run"):
        train(config(tmp_path / "resumed"), progress=False)  # refuses to silently restart
    train(config(tmp_path / "resumed"), resume=True, progress=False)

    for name in ("checkpoints/last.safetensors", "model.safetensors"):
        a, b = load_file(str(tmp_path / "straight" / name)), load_file(str(tmp_path / "resumed" / name))
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}:{key}")
    straight = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    resumed = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in straight] == [r["loss"] for r in resumed]


def test_ddp_two_processes_match_one_process(tmp_path: Path, datalist: Path) -> None:
    args = ["pretrain", "--datalist", str(datalist), "--model", "unetr", "--preset", "tiny", "--epochs", "2",
            "--batch-size", "2", "--samples-per-volume", "2", "--lr", "1e-3", "--val-every", "2", "--quiet"]
    assert run_cli([*args, "--out", tmp_path / "single"]).code == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "petite", *args, "--out", str(tmp_path / "ddp")]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    single = [json.loads(x)["loss"] for x in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    ddp = [json.loads(x)["loss"] for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert len(single) == len(ddp) == 2
    np.testing.assert_allclose(ddp, single, rtol=1e-4)


def _one_line_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    result = run_cli(list(args), capsys)
    assert result.code == 2
    err = result.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("petite: error:"), err
    return err


def test_bad_input_gives_one_line_and_exit_2(tmp_path: Path, datalist: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("datalist: x.json\nout: run\nlearning_rate: 0.1\n")
    assert "learning_rate" in _one_line_error(capsys, "pretrain", "--config", bad_yaml)
    assert "bad.yaml" in _one_line_error(capsys, "pretrain", "--config", bad_yaml)
    assert "not found" in _one_line_error(capsys, "pretrain", "--datalist", tmp_path / "missing.json", "--out", tmp_path / "r")
    assert not (tmp_path / "r").exists()
    _one_line_error(capsys, "finetune", "--datalist", datalist, "--out", tmp_path / "r2")
    _one_line_error(capsys, "pretrain", "--datalist", datalist, "--out", tmp_path / "r3", "--crop", "64,64")
    _one_line_error(capsys, "pretrain", "--datalist", datalist, "--out", tmp_path / "r4", "--batch-size", "0")
    _one_line_error(capsys, "pretrain", "--datalist", datalist, "--out", tmp_path / "r5", "--resume")
    _one_line_error(capsys, "predict", tmp_path / "nope.nii.gz", tmp_path / "o.nii.gz", "--model", tmp_path)
    _one_line_error(capsys, "finetune", "--datalist", datalist, "--init", tmp_path / "nowhere", "--out", tmp_path / "r6")


def test_finished_run_is_not_overwritten(tmp_path: Path, datalist: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    args = ["pretrain", "--datalist", datalist, "--model", "unetr", "--preset", "tiny", "--epochs", "1", "--out", run, "--quiet"]
    assert run_cli([*args]).code == 0
    before = (run / "model.safetensors").read_bytes()
    assert "--overwrite" in _one_line_error(capsys, *args)
    assert (run / "model.safetensors").read_bytes() == before
    assert run_cli([*args, "--overwrite", "--seed", "5"]).code == 0
    assert (run / "model.safetensors").read_bytes() != before


def test_tensorboard_gets_every_validation_when_installed(tmp_path: Path, datalist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    logged: list[tuple[str, float, int]] = []

    class FakeWriter:  # stands in for torch.utils.tensorboard.SummaryWriter (package not installed here)
        def __init__(self, log_dir: str) -> None:
            assert log_dir.endswith("tensorboard")

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            logged.append((tag, value, step))

        def flush(self) -> None: ...

        def close(self) -> None: ...

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    cfg = TrainConfig.load(datalist=str(datalist), out=str(tmp_path / "run"), model="unetr", preset="tiny",
                           epochs=2, lr=1e-3, val_every=1)
    train(cfg, progress=False)
    history = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(t, v, s) for t, v, s in logged if t == "loss"] == [("loss", h["loss"], h["step"]) for h in history]
    assert {t for t, _, _ in logged} >= {"loss", "lr", "val_psnr", "val_ssim", "val_psnr_masked", "val_ssim_masked"}


def test_optimiser_has_one_group_per_method_at_its_own_rate(tmp_path: Path, datalist: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from petite.peft.paper import method_hparams, recommended_hparams
    from petite.peft import Spec

    built = []
    original = train_module.make_step

    def spy(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(train_module, "make_step", spy)
    pre = tmp_path / "pre"
    common = ["--datalist", datalist, "--model", "unetr", "--preset", "tiny", "--batch-size", "2", "--quiet"]
    assert run_cli(["pretrain", *common, "--epochs", "1", "--out", pre]).code == 0
    spec = "encoder=adapter,decoder=ssf,bitfit"
    for policy in ("per-method", "paper"):
        out = tmp_path / policy
        assert run_cli(["finetune", *common, "--init", pre, "--spec", spec, "--epochs", "1", "--lr-policy", policy,
                        "--out", out]).code == 0
        step = built[-1]
        groups = {g["method"]: g for g in step.optimizers["model"].param_groups}
        assert set(groups) == {"adapter", "ssf", "bitfit"}
        # The optimiser holds exactly the trainable set.
        held = [id(p) for g in groups.values() for p in g["params"]]
        assert sorted(held) == sorted(id(p) for p in step.model.parameters() if p.requires_grad)
        column = recommended_hparams("unetr", Spec.parse(spec))
        for method, group in groups.items():
            want = method_hparams("unetr", method) if policy == "per-method" else column
            assert group["initial_lr"] == want["lr"] and group["weight_decay"] == want["weight_decay"], method
        recorded = json.loads((out / "final.json").read_text())["hparams"]["param_groups"]
        assert {g["method"]: g["weight_decay"] for g in recorded} == {m: g["weight_decay"] for m, g in groups.items()}
    # Per method, SSF trains at its own 1e-2 while BitFit's biases keep 1e-3 (the paper's one column: both 1e-3).
    assert {g["method"]: g["initial_lr"] for g in built[-2].optimizers["model"].param_groups}["ssf"] == 1e-2


# ------------------------------------------------------------------ training to convergence (issue 14)


def _pretrain_cfg(datalist: Path, out: Path, **values) -> TrainConfig:
    base = dict(datalist=str(datalist), out=str(out), model="unetr", preset="tiny", batch_size=2, val_every=1, seed=0)
    return TrainConfig.load(**{**base, **values})


def test_patience_stops_a_run_that_stopped_improving_and_says_converged(tmp_path: Path, datalist: Path) -> None:
    # min_delta 100 dB: no validation after the first can count as an improvement.
    final = train(_pretrain_cfg(datalist, tmp_path / "p", max_steps=20, patience=2, min_delta=100.0), progress=False)
    assert final["stopped"] == "patience" and final["converged"] is True
    assert final["steps"] == 3 and final["best_step"] == 1  # best at the first validation, two more without gain
    history = [json.loads(x) for x in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2, 3] and all("val_psnr_masked" in h for h in history)
    capped = train(_pretrain_cfg(datalist, tmp_path / "c", max_steps=3, patience=0), progress=False)
    assert capped["stopped"] == "max_steps" and capped["converged"] is False and capped["steps"] == 3


def test_validation_uses_its_own_overlap_and_the_test_keeps_overlap(tmp_path: Path, datalist: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str | None, float]] = []
    evaluate_split = train_module.evaluate_split

    def recording(model, data, split, roi, overlap, *args, **kwargs):
        calls.append((split, overlap))
        return evaluate_split(model, data, split, roi, overlap, *args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate_split", recording)
    train(_pretrain_cfg(datalist, tmp_path / "o", max_steps=2, patience=0, overlap=0.5, val_overlap=0.25),
          progress=False)
    assert calls == [("pretrain_val", 0.25), ("pretrain_val", 0.25), ("test", 0.5)]
    with pytest.raises(Exception, match="val_overlap must be in"):
        _pretrain_cfg(datalist, tmp_path / "bad", val_overlap=1.0)


def test_final_json_holds_baselines_and_the_quality_gate(tmp_path: Path, datalist: Path) -> None:
    final = train(_pretrain_cfg(datalist, tmp_path / "g", max_steps=2, patience=0), progress=False)
    base = final["baselines"]
    assert set(base) == {"short", "gaussian"} and base["gaussian"]["fitted_on"] == "pretrain_train"
    # Per-subject values too (the report pairs them with the runs' test subjects).
    for kind in ("short", "gaussian"):
        assert len(base[kind]["subjects"]) == base[kind]["n"] == final["test"]["n"]
        assert base[kind]["psnr_masked"] == pytest.approx(np.mean([r["psnr_masked"] for r in base[kind]["subjects"]]))
    # The fitted filter is at least as good as the raw short scan inside the head (it can be the identity).
    assert base["gaussian"]["psnr_masked"] >= base["short"]["psnr_masked"] - 1e-6
    gate = final["gate"]
    assert gate["margin_db"] == pytest.approx(final["test"]["psnr_masked"] - base["gaussian"]["psnr_masked"])
    assert gate["passed"] is (gate["margin_db"] >= 0.5) and "quality gate" in gate["verdict"]


def test_nan_voxel_is_refused_before_the_run_folder_exists(tmp_path: Path, datalist: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = read_datalist(datalist)
    victim = Path(data["pretrain_train"][0]["short"])
    volume = nib.load(victim)
    array = volume.get_fdata().astype(np.float32)
    array[3, 3, 3] = np.nan
    bad = tmp_path / "bad_short.nii.gz"
    nib.save(nib.Nifti1Image(array, volume.affine), str(bad))
    raw = json.loads(datalist.read_text())
    raw["pretrain_train"][0]["short"] = str(bad)
    broken = tmp_path / "datalist.json"
    broken.write_text(json.dumps(raw))
    # (the datalist's other paths are relative to its folder: point them there)
    for split in ("pretrain_train", "pretrain_val", "finetune_train", "finetune_val", "test"):
        for item in raw.get(split, []):
            for key in ("short", "long"):
                if not Path(item[key]).is_absolute():
                    item[key] = str(datalist.parent / item[key])
    broken.write_text(json.dumps(raw))
    err = _one_line_error(capsys, "pretrain", "--datalist", broken, "--model", "unetr", "--preset", "tiny",
                          "--max-steps", "2", "--out", tmp_path / "run")
    assert "bad_short.nii.gz" in err and "NaN" in err
    assert not (tmp_path / "run").exists()


def test_a_loss_that_turns_non_finite_stops_the_run_and_keeps_the_best(tmp_path: Path, datalist: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from petite.engine import steps as steps_module
    from petite.errors import UserError

    original = steps_module.RegressionStep.__call__
    calls = {"n": 0}

    def diverge(self, short, long):  # noqa: ANN001
        calls["n"] += 1
        logs = original(self, short, long)
        return {**logs, "loss": float("nan")} if calls["n"] == 3 else logs

    monkeypatch.setattr(steps_module.RegressionStep, "__call__", diverge)
    with pytest.raises(UserError, match="diverged.*step 3.*step 2"):
        train(_pretrain_cfg(datalist, tmp_path / "nan", max_steps=6, patience=0), progress=False)
    assert (tmp_path / "nan" / "model.safetensors").is_file() and not (tmp_path / "nan" / "final.json").exists()


def test_lr_auto_keeps_the_multiplier_with_the_best_validation(tmp_path: Path, datalist: Path) -> None:
    from petite.peft.paper import method_hparams

    cfg = _pretrain_cfg(datalist, tmp_path / "auto", max_steps=4, patience=0, lr="auto", lr_grid=[1e-4, 1.0, 10.0],
                        lr_trial_fraction=0.5, lr_grid_extend=0)
    final = train(cfg, progress=False)
    trials = final["lr_search"]["trials"]
    assert [t["multiplier"] for t in trials] == [1e-4, 1.0, 10.0] and all(t["steps"] == 2 for t in trials)
    best = max(trials, key=lambda t: t["best_val_psnr_masked"])["multiplier"]
    assert final["lr_search"]["chosen"] == best == final["hparams"]["lr_multiplier"]
    assert final["hparams"]["param_groups"][0]["lr"] == pytest.approx(best * method_hparams("unetr", "full")["lr"])
    assert (tmp_path / "auto" / "lr-search" / "x0.0001" / "final.json").is_file()
    assert read_yaml_config(tmp_path / "auto")["lr"] == "auto"
    # The trials are compared on validation only: none of them is tested (the chosen run is).
    assert not (tmp_path / "auto" / "lr-search" / "x1" / "test_metrics.json").exists()
    assert (tmp_path / "auto" / "test_metrics.json").is_file()


def test_lr_auto_extends_the_grid_past_an_edge_that_wins() -> None:
    from petite.engine.lr_search import next_lr_multiplier

    def trials(**scores: float) -> list[dict]:
        return [{"multiplier": float(m.lstrip("x").replace("_", ".")), "best_val_psnr_masked": v}
                for m, v in scores.items()]

    grid = [0.25, 1.0, 4.0]
    assert next_lr_multiplier(grid, trials(x0_25=20.0), 2) == 1.0  # the grid comes first, in its order
    assert next_lr_multiplier(grid, trials(x0_25=20.0, x1=21.0, x4=20.5), 2) is None  # best inside: done
    assert next_lr_multiplier(grid, trials(x0_25=20.0, x1=21.0, x4=22.0), 2) == 16.0
    assert next_lr_multiplier(grid, trials(x0_25=20.0, x1=21.0, x4=22.0, x16=23.0), 2) == 64.0
    assert next_lr_multiplier(grid, trials(x0_25=20.0, x1=21.0, x4=22.0, x16=23.0, x64=24.0), 2) is None  # cap
    assert next_lr_multiplier(grid, trials(x0_25=20.0, x1=21.0, x4=22.0, x16=21.5), 2) is None  # x16 lost
    assert next_lr_multiplier(grid, trials(x0_25=23.0, x1=21.0, x4=20.0), 2) == 0.0625  # the low edge too
    assert next_lr_multiplier(grid, trials(x0_25=20.0, x1=21.0, x4=22.0), 0) is None


@pytest.mark.parametrize("extension_wins", [False, True])
def test_a_finished_lr_search_is_completed_and_redone_only_when_its_choice_changes(
        tmp_path: Path, datalist: Path, extension_wins: bool) -> None:
    from petite.engine.lr_search import lr_search_complete

    out = tmp_path / "run"
    narrow = _pretrain_cfg(datalist, out, max_steps=4, patience=0, lr="auto", lr_grid=[1e-4, 1e-3],
                           lr_trial_fraction=0.5, lr_grid_extend=0)
    before = train(narrow, progress=False)
    edge = before["lr_search"]["chosen"]
    wider = _pretrain_cfg(datalist, out, max_steps=4, patience=0, lr="auto", lr_grid=[1e-4, 1e-3],
                          lr_trial_fraction=0.5, lr_grid_extend=1)
    assert lr_search_complete(before, narrow.lr_grid, narrow.lr_grid_extend)
    assert not lr_search_complete(before, wider.lr_grid, wider.lr_grid_extend)
    # The extra trial is one step past the winning edge; its outcome is set here by a finished trial folder
    # (finished trials are reused), so both branches are taken whatever the tiny model learns.
    extra = 1e-2 if edge == 1e-3 else 1e-5
    trial = out / "lr-search" / f"x{extra:g}"
    trial.mkdir(parents=True)
    (trial / "final.json").write_text(json.dumps({"best_val_psnr_masked": 1e3 if extension_wins else -1e3, "steps": 2}))
    weights = (out / "model.safetensors").read_bytes()
    after = train(wider, resume=True, progress=False)
    assert [t["multiplier"] for t in after["lr_search"]["trials"]] == sorted([1e-4, 1e-3, extra])
    assert after["lr_search"]["chosen"] == (extra if extension_wins else edge)
    assert after["hparams"]["lr_multiplier"] == after["lr_search"]["chosen"]
    assert lr_search_complete(after, wider.lr_grid, wider.lr_grid_extend) and json.loads((out / "final.json").read_text()) == after
    # An unchanged choice keeps the trained run; a changed one retrains it and keeps the trials.
    assert ((out / "model.safetensors").read_bytes() == weights) is (not extension_wins)
    assert all((out / "lr-search" / f"x{m:g}" / "final.json").is_file() for m in (1e-4, 1e-3, extra))


def test_fine_tuning_on_fewer_subjects_and_the_source_fitted_filter(tmp_path: Path, datalist: Path) -> None:
    pre = train(_pretrain_cfg(datalist, tmp_path / "pre", max_steps=2, patience=0), progress=False)
    common = dict(init=str(tmp_path / "pre"), train_split="finetune_train", val_split="finetune_val", patience=0)
    one = train(_pretrain_cfg(datalist, tmp_path / "one", max_steps=2, train_subjects=1, **common), progress=False)
    both = train(_pretrain_cfg(datalist, tmp_path / "both", max_steps=2, **common), progress=False)
    assert one["train_subjects"] == 1 and both["train_subjects"] == 2
    # The target's filter is fitted on the subjects the network saw; the source's is the pre-training run's fit.
    for final in (one, both):
        source = final["baselines"]["gaussian_source"]
        assert (source["sigma"], source["gain"]) == (pre["baselines"]["gaussian"]["sigma"],
                                                     pre["baselines"]["gaussian"]["gain"])
        assert len(source["subjects"]) == final["test"]["n"]
    assert one["baselines"]["short"] == both["baselines"]["short"]
    with pytest.raises(Exception, match="train_subjects 3 but split 'finetune_train' holds 2"):
        train(_pretrain_cfg(datalist, tmp_path / "three", max_steps=2, train_subjects=3, **common), progress=False)
    assert not (tmp_path / "three").exists()
    # No-FT trains nothing, so lr auto has nothing to search: one plain run, no trials.
    none = train(_pretrain_cfg(datalist, tmp_path / "none", spec="none", lr="auto", **common), progress=False)
    assert none["lr_search"] is None and not (tmp_path / "none" / "lr-search").exists()
    assert "calibration" in none["baselines"]


@pytest.mark.parametrize("n_items, batch_size, world", [(1, 4, 1), (2, 4, 1), (3, 2, 1), (5, 4, 2), (8, 4, 1)])
def test_every_step_is_a_full_batch_whatever_the_number_of_subjects(n_items: int, batch_size: int, world: int) -> None:
    # One subject with batch 4 once gave one-crop batches: BatchNorm at the CVT-GAN's 1x1x1 bottleneck refused them.
    cfg = TrainConfig(datalist="unused.json", batch_size=batch_size, seed=3)
    shards = [train_module._batches(n_items, cfg, epoch=2, rank=rank, world=world) for rank in range(world)]
    steps = -(-n_items // batch_size)
    assert all(len(shard) == steps for shard in shards)
    for step in range(steps):
        batch = [pair for shard in shards for pair in shard[step]]
        assert len(batch) == batch_size and all(len(shard[step]) == batch_size // world for shard in shards)
    pairs = [pair for shard in shards for batch in shard for pair in batch]
    assert len({pos for pos, _ in pairs}) == len(pairs)  # distinct positions: the wrapped crops are new crops
    assert {index for _, index in pairs} == set(range(n_items))  # every subject is seen each epoch


def read_yaml_config(run: Path) -> dict:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())


def test_early_stopping_without_a_validation_split_is_refused(tmp_path: Path, datalist: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_line_error(capsys, "pretrain", "--datalist", datalist, "--model", "unetr", "--preset", "tiny",
                          "--val-split" if False else "--max-steps", "2", "--config", _config_without_val(tmp_path, datalist))
    assert "validation split" in err and "--patience 0" in err


def _config_without_val(tmp_path: Path, datalist: Path) -> Path:
    path = tmp_path / "noval.yaml"
    path.write_text(f"datalist: {datalist}\nout: {tmp_path / 'noval'}\nval_split: finetune_val_missing\n")
    return path


def test_yaml_values_as_people_write_them(tmp_path: Path, datalist: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(f"datalist: {datalist}\nout: {tmp_path / 'r'}\nlr: 1e-3\nbatch_size: '2'\ncrop_size: [16, 16, 16]\n")
    cfg = TrainConfig.load(good)
    assert cfg.lr == 1e-3 and cfg.batch_size == 2 and cfg.crop_size == [16, 16, 16]
    for bad, key in (("batch_size: two", "batch_size"), ("crop_size: 32", "crop_size"), ("lr: fast", "lr")):
        path = tmp_path / f"{key}.yaml"
        path.write_text(f"datalist: {datalist}\nout: {tmp_path / 'r'}\n{bad}\n")
        err = _one_line_error(capsys, "pretrain", "--config", path)
        assert key in err and path.name in err


def test_a_run_folder_moves_with_its_base(tmp_path: Path, datalist: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    runs = tmp_path / "runs"
    common = ["--datalist", datalist, "--model", "unetr", "--quiet"]
    assert run_cli(["pretrain", *common, "--preset", "tiny", "--max-steps", "1", "--out", runs / "pre"]).code == 0
    monkeypatch.chdir(tmp_path)  # a relative --init, as people type it
    assert run_cli(["finetune", *common, "--init", "runs/pre", "--spec", "bitfit", "--max-steps", "1",
                    "--out", "runs/ft"]).code == 0
    moved = tmp_path / "elsewhere" / "runs"
    shutil.copytree(runs, moved)
    monkeypatch.chdir(tmp_path / "elsewhere" / "runs" / "ft")
    assert run_cli(["evaluate", "--model", moved / "ft", "--datalist", datalist, "--out", tmp_path / "ev"]).code == 0
    shutil.rmtree(moved / "pre")
    err = _one_line_error(capsys, "evaluate", "--model", moved / "ft", "--datalist", datalist, "--out", tmp_path / "e2")
    assert "base model" in err and "pre" in err


def test_a_preset_that_contradicts_the_checkpoint_is_refused(tmp_path: Path, datalist: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["pretrain", "--datalist", datalist, "--model", "unetr", "--preset", "tiny", "--max-steps", "1",
                    "--out", tmp_path / "pre", "--quiet"]).code == 0
    err = _one_line_error(capsys, "finetune", "--datalist", datalist, "--init", tmp_path / "pre", "--preset", "small",
                          "--spec", "bitfit", "--out", tmp_path / "ft")
    assert "preset" in err and not (tmp_path / "ft").exists()
    assert run_cli(["finetune", "--datalist", datalist, "--init", tmp_path / "pre", "--spec", "bitfit",
                    "--max-steps", "1", "--out", tmp_path / "ft", "--quiet"]).code == 0
    assert read_yaml_config(tmp_path / "ft")["preset"] == "tiny"


def test_a_refused_start_leaves_no_run_folder(tmp_path: Path, datalist: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["pretrain", "--datalist", datalist, "--model", "unetr", "--preset", "tiny", "--max-steps", "1",
                    "--out", tmp_path / "pre", "--quiet"]).code == 0
    common = ["finetune", "--datalist", datalist, "--init", tmp_path / "pre", "--max-steps", "1"]
    _one_line_error(capsys, *common, "--spec", "decoder=vpt", "--out", tmp_path / "vpt")  # no prompt site there
    empty = tmp_path / "empty.yaml"
    empty.write_text("train_split: finetune_val_missing\n")
    _one_line_error(capsys, *common, "--spec", "bitfit", "--config", empty, "--out", tmp_path / "empty")
    _one_line_error(capsys, *common, "--spec", "bitfit", "--lr", "-1", "--out", tmp_path / "lr")
    assert not any((tmp_path / name).exists() for name in ("vpt", "empty", "lr"))


@pytest.mark.parametrize("model, spec", [("unetr", "petite-unetr"), ("cvtgan", "petite-cvtgan")])
def test_memory_options_train_the_same_weights(tmp_path: Path, datalist: Path, model: str, spec: str) -> None:
    """Checkpointing every block and the lean backward change what is stored, never what is learned."""
    pre = tmp_path / "pre"
    train(TrainConfig.load(datalist=str(datalist), out=str(pre), model=model, preset="tiny", max_steps=2,
                           batch_size=2, lr=1e-3, patience=0), progress=False)

    def finetune(out: str, **options: object) -> dict:
        settings = {"max_steps": 3, "batch_size": 2, "patience": 0, "seed": 1, **options}
        cfg = TrainConfig.load(datalist=str(datalist), out=str(tmp_path / out), model=model, init=str(pre), spec=spec,
                               **settings)
        return train(cfg, progress=False)

    plain = finetune("plain", checkpoint="none", lean=False)
    saver = finetune("saver", checkpoint="all", lean=True)
    assert plain["memory_options"]["checkpointed_blocks"] == 0 and plain["memory_options"]["lean_layers"] == 0
    assert saver["memory_options"]["checkpointed_blocks"] > 0 and saver["memory_options"]["lean_layers"] > 0
    a, b = load_file(str(tmp_path / "plain" / "adapter.safetensors")), load_file(str(tmp_path / "saver" / "adapter.safetensors"))
    assert a.keys() == b.keys()
    finetune("one-step", max_steps=1)
    one = load_file(str(tmp_path / "one-step" / "adapter.safetensors"))
    for key in a:
        # Adam divides by the gradient's own size, so recomputation's rounding (1e-7 in a gradient) can move a
        # near-zero-gradient entry by up to ~2e-4 (seen on an Intel Xeon): each tensor's disagreement is compared
        # with how far steps 2-3 moved it. A tensor the option failed to train is off by at least that much.
        drift, moved = np.linalg.norm(a[key] - b[key]), np.linalg.norm(a[key] - one[key])
        assert drift <= 0.25 * moved + 1e-5, (key, drift, moved)
    # ...and the steps moved the adapter (the agreement above is not between two untouched copies).
    assert any(not np.allclose(a[key], one[key]) for key in a)

    bf16 = finetune("bf16", precision="bf16")
    assert bf16["memory_options"]["precision"] == "bf16" and np.isfinite(bf16["test"]["psnr"])


def test_fp16_on_the_cpu_is_refused_before_the_run_folder(tmp_path: Path, datalist: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(["pretrain", "--datalist", datalist, "--model", "unetr", "--preset", "tiny", "--max-steps", "1",
                      "--precision", "fp16", "--device", "cpu", "--out", tmp_path / "run", "--quiet"], capsys)
    assert result.code == 2 and "fp16 needs a CUDA device" in result.err
    assert not (tmp_path / "run").exists()
