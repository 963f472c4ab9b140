"""Experiment tracking (petite.engine.tracking): what a run reports, to an in-memory tracker and to MLflow."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from petite.engine.config import TrainConfig
from petite.engine.tracking import MISSING, Tracker, final_metrics, flat_params
from petite.engine.train import train
from tests.cli_runner import run_cli


class RecordingTracker(Tracker):
    """A tracker that keeps everything it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def start(self, run_folder, params, tags) -> None:
        self.calls.append(("start", (Path(run_folder), dict(params), dict(tags))))

    def log_metrics(self, metrics, step) -> None:
        self.calls.append(("metrics", (dict(metrics), step)))

    def finish(self, run_folder, final, status="FINISHED") -> None:
        self.calls.append(("finish", (Path(run_folder), final, status)))


@pytest.mark.e2e
@pytest.mark.usefixtures("one_thread")
def test_a_run_reports_settings_every_step_validations_and_the_end(tmp_path: Path, datalist: Path) -> None:
    tracker = RecordingTracker()
    out = tmp_path / "pre"
    cfg = TrainConfig(datalist=str(datalist), out=str(out), model="unetr", preset="tiny", max_steps=2, val_every=1,
                      batch_size=2, crop_size=[16, 16, 16], device="cpu")
    final = train(cfg, progress=False, tracker=tracker)
    kinds = [kind for kind, _ in tracker.calls]
    assert kinds[0] == "start" and kinds[-1] == "finish"
    folder, params, tags = tracker.calls[0][1]
    assert folder == out and params["max_steps"] == 2 and params["model"] == "unetr"
    assert tags["petite.kind"] == "pretrain"
    steps = [(set(args[0]), args[1]) for kind, args in tracker.calls if kind == "metrics"]
    # Every step's loss, and each validation's metrics at its step.
    assert [step for keys, step in steps if keys == {"train_loss"}] == [1, 2]
    validations = [(keys, step) for keys, step in steps if "val_psnr_masked" in keys]
    assert [step for _, step in validations] == [1, 2] and {"loss", "lr", "val_ssim"} <= validations[0][0]
    _, ended, status = tracker.calls[-1][1]
    assert status == "FINISHED" and ended == final == json.loads((out / "final.json").read_text())


def test_final_metrics_and_params_are_flat_numbers_and_text() -> None:
    final = {"test": {"psnr": 30.5, "ssim": 0.9, "n": 2}, "percent": 0.5, "steps": 4, "converged": True, "spec": "x"}
    assert final_metrics(final) == {"test_psnr": 30.5, "test_ssim": 0.9, "test_n": 2.0, "percent": 0.5, "steps": 4.0}
    assert flat_params({"a": 1, "b": {"c": [1, 2]}, "d": None}) == {"a": "1", "b.c": "[1, 2]"}


def test_missing_mlflow_is_one_line_before_anything_is_written(tmp_path: Path, datalist: Path, capsys,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` sees when it is not installed
    out = tmp_path / "run"
    result = run_cli(["pretrain", "--datalist", datalist, "--model", "unetr", "--preset", "tiny", "--out", out,
                      "--track", "mlflow"], capsys)
    assert result.code == 2 and result.err == f"petite: error: {MISSING}\n"
    assert not out.exists()
    result = run_cli(["pretrain", "--datalist", datalist, "--out", out, "--track-uri", "file:///tmp/x"], capsys)
    assert result.code == 2 and "--track-uri only applies with --track mlflow" in result.err and not out.exists()


def test_mlflow_run_holds_params_metric_history_final_metrics_and_the_adapter(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from petite.engine.tracking import MlflowTracker

    uri = (tmp_path / "mlruns").as_uri()
    run = tmp_path / "run"
    run.mkdir()
    for name in ("adapter.safetensors", "adapter.json", "config.yaml", "metrics.jsonl"):
        (run / name).write_text(name)
    tracker = MlflowTracker(uri)
    tracker.start(run, {"spec": "encoder=lora:r=4", "max_steps": 3}, {"petite.kind": "finetune"})
    for step in (1, 2, 3):
        tracker.log_metrics({"train_loss": 1.0 / step}, step)
    tracker.log_metrics({"val_psnr_masked": 31.5}, 3)
    # A resumed run continues the same MLflow run (its id is kept in the run folder).
    again = MlflowTracker(uri)
    again.start(run, {"spec": "encoder=lora:r=4", "max_steps": 3}, {})
    assert again.run_id == tracker.run_id
    final = {"test": {"psnr_masked": 32.25}, "percent": 0.5, "steps": 3}
    (run / "final.json").write_text(json.dumps(final))
    again.finish(run, final)

    client = MlflowClient(tracking_uri=uri)
    record = client.get_run(tracker.run_id)
    assert record.info.status == "FINISHED" and record.info.run_name == "run"
    assert record.data.params == {"spec": "encoder=lora:r=4", "max_steps": "3"}
    assert record.data.tags["petite.kind"] == "finetune"
    assert [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, "train_loss")] == [
        (1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert record.data.metrics["test_psnr_masked"] == 32.25 and record.data.metrics["percent"] == 0.5
    artifacts = {a.path for a in client.list_artifacts(tracker.run_id)}
    assert {"adapter.safetensors", "adapter.json", "final.json", "config.yaml", "metrics.jsonl"} <= artifacts


def test_an_unusable_tracking_uri_is_refused_before_the_run(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from petite.errors import UserError
    from petite.engine.tracking import make_tracker

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot track with MLflow at"):
        make_tracker("mlflow", (blocker / "mlruns").as_uri())
